"""Every CLI refuses an output folder it cannot write before any heavy work (one sentence,
exit 2); a dataset whose every file is broken says so; TensorFlow's start-up lines stay hidden
unless MEDZOO_DEBUG=1. Running as root ignores permission bits, so the unwritable folder is a
path under a file."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT


@pytest.fixture()
def blocked(tmp_path):
    """A folder that cannot be created: its parent is a file."""
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path / "a-file" / "sub"


def _train_main():
    spec = importlib.util.spec_from_file_location("medzoo_train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _one_sentence(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("flag", ["--output-dir", "--export-dir"])
def test_train_refuses_an_unwritable_output_before_preparing(flag, blocked, tmp_path, capsys):
    cache, data = tmp_path / "cache", tmp_path / "data"
    data.mkdir()  # empty: preparing would fail, so reaching it would show in the message
    outputs = {"--output-dir": str(tmp_path / "run"), "--export-dir": str(tmp_path / "exports")}
    outputs[flag] = str(blocked)
    args = ["--dataset", "synthetic", "--data-dir", str(data), "--cache-dir", str(cache),
            "--epochs", "1", "--quiet", *[x for item in outputs.items() for x in item]]
    assert _train_main()(args) == 2
    _one_sentence(capsys, "train.py: error:", flag, "is a file")
    assert not cache.exists() and not (tmp_path / "run").exists()


def test_prepare_evaluate_explain_export_refuse_an_unwritable_output(blocked, tmp_path, capsys):
    from pipelines.prepare import main as prepare_main
    from zoo.evaluate import main as evaluate_main
    from zoo.explain import main as explain_main
    from zoo.export.cli import main as export_main

    assert prepare_main(["--dataset", "synthetic", "--data-dir", str(tmp_path), "--out",
                         str(blocked), "--quiet"]) == 2
    _one_sentence(capsys, "--out", "is a file")
    assert evaluate_main(["--model", str(tmp_path / "m"), "--cache", str(tmp_path),
                          "--out", str(blocked)]) == 2
    _one_sentence(capsys, "--out", "is a file")
    (tmp_path / "x.png").write_bytes(b"")
    assert explain_main(["--model", str(tmp_path / "m"), "--image", str(tmp_path / "x.png"),
                         "--out", str(blocked)]) == 2
    _one_sentence(capsys, "--out", "is a file")
    assert export_main(["--model", "ichnet_small", "--export-dir", str(blocked)]) == 2
    _one_sentence(capsys, "--export-dir", "is a file")


def test_a_dataset_with_no_readable_file_says_all_were_quarantined(tmp_path, capsys):
    from pipelines.prepare import main as prepare_main

    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / cls / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert prepare_main(["--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--out",
                         str(tmp_path / "c"), "--image-size", "16", "--quiet"]) == 2
    err = _one_sentence(capsys, "All 6 files were quarantined, see", "quarantine.csv")
    assert str(tmp_path / "c" / "quarantine.csv") in err
    assert len((tmp_path / "c" / "quarantine.csv").read_text().splitlines()) == 7
    assert not (tmp_path / "c" / "dataset.json").exists()
    assert not (tmp_path / "c" / ".progress").exists()


def test_csv_option_outside_the_data_dir_is_refused(tmp_path):
    from pipelines.datasets import get_adapter
    from pipelines.manifest import DataError

    (tmp_path / "data").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "data" / "x.png")
    (tmp_path / "outside.csv").write_text("path,y\nx.png,1\n")
    with pytest.raises(DataError, match="inside the data directory"):
        get_adapter("csv").read_manifest(tmp_path / "data", csv=str(tmp_path / "outside.csv"),
                                         label_columns="y")
    with pytest.raises(DataError, match="inside the data directory"):
        get_adapter("csv").read_manifest(tmp_path / "data", csv="../outside.csv",
                                         label_columns="y")
    (tmp_path / "data" / "in.csv").write_text("path,y\nx.png,1\n")
    inside = get_adapter("csv").read_manifest(tmp_path / "data", csv=str(tmp_path / "data" / "in.csv"),
                                              label_columns="y")
    assert len(inside) == 1


def test_prepare_prints_no_numpy_runtime_warnings(tmp_path):
    from pipelines.cache import prepare
    from pipelines.datasets.synthetic import write_head_ct

    data = write_head_ct(tmp_path / "rsna", patients=3, slices=2, size=32, seed=1)
    broken = sorted((data / "stage_2_train").glob("*.dcm"))[0]
    broken.write_bytes(broken.read_bytes()[:-100])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare("synthetic", data, tmp_path / "c", image_size=16, progress=False)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], caught


def _stderr_of(env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL", "MEDZOO_DEBUG")}
    env.update(env_extra)
    code = "import sys; sys.argv = ['train.py', '--list-models']; import runpy; " \
           "runpy.run_path('train.py', run_name='__main__')"
    # a tiny CLI run that touches a device, so cuInit is attempted as in a real run
    proc = subprocess.run([sys.executable, "-c", code + "\n"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc


def test_tensorflow_start_up_lines_are_hidden_unless_medzoo_debug():
    quiet = _stderr_of({})
    assert quiet.returncode == 0 and "ichnet" in quiet.stdout
    for noise in ("cuInit", "oneDNN", "absl", "cuda drivers", "I0000", "E0000"):
        assert noise not in quiet.stderr, quiet.stderr
    loud = _stderr_of({"MEDZOO_DEBUG": "1"})
    assert loud.returncode == 0
    assert "oneDNN" in loud.stderr or "absl" in loud.stderr, loud.stderr
