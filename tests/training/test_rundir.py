"""zoo.training.rundir: the one reader of a run directory, its fallback order and its errors."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import zoo
from zoo.training import rundir
from zoo.training.rundir import read_run

LABELS = ["normal", "pneumonia"]


def _run(tmp_path, *, config=None, dataset=None, metrics=None, labels_txt=None):
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"model": "myositisnet", "model_kwargs": {}, "image_size": 32, **(config or {})}
    if dataset is not None:
        cache = tmp_path / "cache"
        cache.mkdir()
        (cache / "dataset.json").write_text(json.dumps(dataset))
        cfg["cache_dir"] = str(cache)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    if labels_txt is not None:
        (run / "labels.txt").write_text("\n".join(labels_txt) + "\n")
    return run


def test_labels_fallback_order(tmp_path):
    ds = {"labels": ["d1", "d2"], "channels": 1, "image_size": [32, 32]}
    run = _run(tmp_path, config={"labels": ["c1", "c2"]}, dataset=ds,
               metrics={"labels": ["m1", "m2"]}, labels_txt=["t1", "t2"])
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    order = [("labels.txt", ("t1", "t2")), ("metrics.json", ("m1", "m2")),
             ("config", ("c1", "c2")), ("dataset", ("d1", "d2"))]
    info = rundir._dataset_info(run, cfg)
    for what, expected in order:
        assert rundir._labels(run, cfg, info) == expected, what
        if what == "labels.txt":
            (run / "labels.txt").unlink()
        elif what == "metrics.json":
            (run / "metrics.json").unlink()
        elif what == "config":
            cfg.pop("labels")


def test_input_shape_from_dataset_then_config():
    assert rundir._input_shape({"image_size": 32}, {"channels": 1, "image_size": [40, 48]}) == (40, 48, 1)
    assert rundir._input_shape({"image_size": 32}, {"channels": 2}) == (32, 32, 2)
    assert rundir._input_shape({"image_size": 32}, {}) is None


def test_rebuilds_from_best_weights_and_prefers_model_keras(tmp_path):
    run = _run(tmp_path, dataset={"labels": LABELS, "channels": 1, "image_size": [32, 32]})
    model = zoo.get_model("myositisnet", input_shape=(32, 32, 1), num_classes=2)
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in model.get_weights()])
    model.save_weights(run / "best.weights.h5")
    x = rng.random((2, 32, 32, 1), dtype=np.float32)

    got = read_run(run)
    assert got.model_name == "myositisnet" and got.labels == tuple(LABELS)
    assert got.weights == run / "best.weights.h5" and got.keras_path is None
    assert got.dataset_info["channels"] == 1
    np.testing.assert_allclose(got.model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)

    model.save(run / "model.keras")
    got = read_run(run)
    assert got.keras_path == run / "model.keras" and got.weights is None
    # an explicit input shape rebuilds the model (best weights first) instead
    got = read_run(run, input_shape=(32, 32, 1))
    assert got.keras_path is None and got.weights == run / "best.weights.h5"


@pytest.mark.parametrize("setup, error, match", [
    ("no-config", FileNotFoundError, "config.yaml does not exist"),
    ("no-labels", ValueError, "Cannot tell the labels"),
    ("no-weights", FileNotFoundError, "holds neither model.keras nor best.weights.h5"),
    ("no-shape", ValueError, "Cannot tell the input shape"),
])
def test_errors_are_one_sentence_naming_the_fix(tmp_path, setup, error, match):
    if setup == "no-config":
        run = tmp_path
    elif setup == "no-labels":
        run = _run(tmp_path)
    elif setup == "no-weights":
        run = _run(tmp_path, metrics={"labels": LABELS})
    else:
        run = _run(tmp_path, metrics={"labels": LABELS})
        (run / "best.weights.h5").write_bytes(b"")
    with pytest.raises(error, match=match) as info:
        read_run(run)
    message = str(info.value)
    assert message.endswith(".") and message.count(". ") == 0, message


def test_no_tensorflow_at_import_time():
    tree = ast.parse(Path(rundir.__file__).read_text())
    top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
           for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert not top & {"tensorflow", "keras", "zoo", "numpy"}, top
