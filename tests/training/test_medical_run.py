"""train.py --weights medical / a backbone file: the run says what it started from, in its
opening lines, metrics.json, config.yaml and the export's card, with file names only."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.medical_files import write_shipped
from tests.tiny_cache import head_ct_cache
from zoo.models import medical
from zoo.models.backbone import save_backbone


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A 32 px cache of a tiny synthetic head-CT dataset (8 patients)."""
    return head_ct_cache(tmp_path_factory.mktemp("ct"))


def _argv(cache, tmp_path, weights, *extra):
    return ["--cache-dir", str(cache), "--dataset", "synthetic", "--model", "ichnet_small",
            "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2",
            "--bn-calibration-batches", "1", "--no-augment", "--output-dir", str(tmp_path / "run"),
            "--quiet", "--weights", str(weights), *extra]


def test_train_weights_medical_names_the_file_and_sha256_everywhere(cache, tmp_path, monkeypatch,
                                                                   capsys):
    import train

    monkeypatch.setenv(medical.ENV_VAR, str(tmp_path / "weights"))
    _, path, _ = write_shipped(tmp_path / "weights", "ichnet_small", size=32, channels=1)
    sha = medical.sha256_of(path)
    argv = _argv(cache, tmp_path, "medical", "--export-dir", str(tmp_path / "exports"))
    assert train.main(argv) == 0, capsys.readouterr().err[-2000:]
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("Weights:"))
    assert line == (f"Weights: medical ichnet_small-medical-32.weights.h5 (sha256 {sha}, corpus "
                    "mednist, pneumoniamnist).")
    run = tmp_path / "run"
    record = json.loads((run / "metrics.json").read_text())["weights"]
    assert record["weights"] == "medical" and record["sha256"] == sha
    assert record["file"] == path.name and record["corpus"]["sources"] == ["mednist", "pneumoniamnist"]
    assert yaml.safe_load((run / "config.yaml").read_text())["weights"] == "medical"
    extra = next((tmp_path / "exports" / "ichnet_small").glob("*/assets.extra"))
    card = json.loads((extra / "model_card.json").read_text())
    assert card["initial_weights"]["sha256"] == sha
    assert f"started from: medical ({path.name}, sha256 {sha}" in (extra / "model_card.md").read_text()
    assert yaml.safe_load((extra / "config.yaml").read_text())["weights"] == "medical"


def test_train_with_a_backbone_file_records_its_name_never_its_folder(cache, tmp_path, capsys):
    import train

    source, _, _ = write_shipped(tmp_path / "made", "ichnet_small", size=32, channels=1)
    folder = tmp_path / "Jane Doe 0123"  # a folder that names a patient
    path = save_backbone(source, folder / "backbone.weights.h5",
                         {"model": "ichnet_small", "corpus": {"sources": ["mednist"]}})
    sha = medical.sha256_of(path)
    assert train.main(_argv(cache, tmp_path, path, "--no-export")) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"Weights: backbone.weights.h5 (sha256 {sha}, corpus mednist)." in out.splitlines()
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["weights"]["sha256"] == sha and metrics["weights"]["kind"] == "backbone"
    assert metrics["backbone"]["corpus_sources"] == ["mednist"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["weights"].startswith("sha256:") and config["weights"].endswith("/backbone.weights.h5")
    for name in ("metrics.json", "config.yaml"):
        assert "Jane Doe" not in (run / name).read_text(), name


def test_train_weights_medical_runs_the_leak_check_before_any_work(tmp_path, monkeypatch, capsys):
    import train

    npz = tmp_path / "data" / "breastmnist.npz"
    npz.parent.mkdir()
    npz.write_bytes(b"x")  # never read: the leak check comes first
    corpus = {"name": "c", "sources": ["breastmnist"], "held_out": [], "card": {}, "datasets": [
        {"name": "breastmnist", "dataset": "medmnist", "data_dir": str(npz), "options": {}}]}
    monkeypatch.setenv(medical.ENV_VAR, str(tmp_path / "weights"))
    write_shipped(tmp_path / "weights", "ichnet_small", size=32, channels=1, corpus=corpus)
    argv = ["--dataset", "medmnist", "--data-dir", str(npz), "--model", "ichnet_small",
            "--image-size", "32", "--weights", "medical", "--output-dir", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache")]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights medical (ichnet_small-medical-32.weights.h5)" in err[0]
    assert "contains breastmnist" in err[0]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
    argv[argv.index("ichnet_small")] = "rensenet_small"
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No medical weights are shipped for 'rensenet_small'" in err[0]
