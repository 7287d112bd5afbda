"""Every YAML the project reads goes through pipelines.yamlfile: no aliases, bounded size and depth."""

import pytest

from pipelines import yamlfile
from pipelines.corpus import CorpusError, load_spec
from pipelines.yamlfile import YamlFileError, dump_yaml, read_yaml

BOMB = "\n".join(
    ["a: &a ['lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol']"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
)


def _write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_alias_bomb_in_a_corpus_spec_is_one_sentence(tmp_path):
    spec = _write(tmp_path, "citation:\n  " + BOMB.replace("\n", "\n  ")
                  + "\nsources:\n  - {name: a, dataset: medmnist, data_dir: a.npz}\n")
    with pytest.raises(CorpusError, match="anchor") as info:
        load_spec(spec)
    text = str(info.value)
    assert str(spec) in text and text.count(". ") == 0 and "\n" not in text


@pytest.mark.parametrize("text, words", [
    ("a: &x 1\nb: *x\n", "anchor"),
    ("a: [1]\nb: *x\n", "alias"),
    ("a: " + "[" * 200 + "]" * 200 + "\n", "deeper than"),
])
def test_aliases_anchors_and_deep_nesting_are_refused(tmp_path, text, words):
    path = _write(tmp_path, text)
    with pytest.raises(YamlFileError, match=words) as info:
        read_yaml(path, "corpus spec")
    assert str(path) in str(info.value)


def test_huge_yaml_file_is_refused_before_parsing(tmp_path, monkeypatch):
    path = _write(tmp_path, "a: " + "x" * (yamlfile.MAX_YAML_BYTES + 1) + "\n")
    with pytest.raises(YamlFileError, match="byte limit"):
        read_yaml(path)


def test_plain_yaml_reads_and_a_shared_value_is_dumped_in_full(tmp_path):
    labels = ["a", "b"]
    text = dump_yaml({"labels": labels, "again": labels, "nested": {"x": [1, 2]}})
    assert "&" not in text and "*" not in text
    assert read_yaml(_write(tmp_path, text)) == {"labels": labels, "again": labels,
                                                 "nested": {"x": [1, 2]}}
    assert read_yaml(_write(tmp_path, "", "empty.yaml")) is None


def test_train_config_and_run_config_use_the_bounded_reader(tmp_path):
    from zoo.training.config import ConfigError, load_yaml
    from zoo.training.rundir import read_config

    path = _write(tmp_path, "epochs: &e 3\nlr: *e\n", "config.yaml")
    with pytest.raises(ConfigError, match="anchor"):
        load_yaml(path)
    with pytest.raises(YamlFileError, match="anchor"):
        read_config(tmp_path)
