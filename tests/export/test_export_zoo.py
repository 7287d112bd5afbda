"""Every registered model exports and reloads; the `python -m zoo.export` command line.

All models are exported at 32x32x3 by two worker processes, then fresh processes (TensorFlow
only) reload every export and call both signatures; the Keras outputs are the reference (1e-5).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

import zoo
from tests.export.support import RELOAD, finish_child, start_child, write_png
from zoo import export as zx
from zoo.labels import RSNA_ICH

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (32, 32, 3)
EXPORT_WORKER = Path(__file__).with_name("export_worker.py")
MODELS = zoo.list_models()


@pytest.fixture(scope="module")
def zoo_exports(tmp_path_factory):
    """Export every registered model; returns (base, expected, {name: error}, (got, report)).

    Two export processes run side by side (half the models each; tracing is single-threaded
    Python), then two fresh processes reload every export and call both signatures.
    """
    base = tmp_path_factory.mktemp("zoo_saved_models")
    work = tmp_path_factory.mktemp("zoo_inputs")
    rng = np.random.default_rng(0)
    np.save(work / "images.npy", rng.random((2, *SHAPE), dtype=np.float32))
    pixels = rng.integers(0, 256, (2, *SHAPE), dtype=np.uint8)
    pngs = [write_png(work / f"{i}.png", p) for i, p in enumerate(pixels)]

    halves = [MODELS[0::2], MODELS[1::2]]
    children = [
        start_child(EXPORT_WORKER, {"names": names, "shape": SHAPE, "base": str(base),
                                    "images": str(work / "images.npy"), "pngs": pngs},
                    work / f"export{i}")
        for i, names in enumerate(halves)
    ]
    expected, results = {}, {}
    for proc, out in children:
        arrays, result = finish_child(proc, out)
        expected.update(arrays)
        results.update(result)
    errors = {n: r["error"] for n, r in results.items() if "error" in r}

    jobs = [[{"key": n, "path": results[n]["path"],
              "images": {"images": str(work / "images.npy")}, "encoded": {"png": pngs}}
             for n in names if n not in errors] for names in halves]
    reloads = [start_child(RELOAD, {"exports": job}, work / f"reload{i}")
               for i, job in enumerate(jobs)]
    got, report = {}, {"exports": {}}
    for proc, out in reloads:
        arrays, rep = finish_child(proc, out)
        got.update(arrays)
        report["exports"].update(rep["exports"])
        assert rep["zoo_imported"] is False
    return base, expected, errors, (got, report)


@pytest.mark.parametrize("name", MODELS)
def test_every_registered_model_exports_and_reloads(zoo_exports, name):
    base, expected, errors, (got, report) = zoo_exports
    assert name not in errors, errors.get(name)
    card = json.loads((base / name / "1" / "assets.extra" / "model_card.json").read_text())
    assert card["registered"] is True and card["model_name"] == name
    assert report["exports"][name]["signatures"] == ["serving_bytes", "serving_default"]
    for case in ("images", "png"):
        np.testing.assert_allclose(got[f"{name}/{case}"], expected[f"{name}/{case}"], rtol=0, atol=1e-5,
                                   err_msg=f"{name} {case}")
    assert all(w["finite"] and w["output_shape"] == [1, 2] for w in report["exports"][name]["warmup"])


def test_models_config_lists_every_model(zoo_exports):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base, _, errors, _ = zoo_exports
    config = text_format.Parse((base / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    assert sorted(c.name for c in config.model_config_list.config) == sorted(
        set(MODELS) - set(errors))


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "zoo.export", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_registered_model_with_onnx(tmp_path):
    import onnxruntime as ort

    out = tmp_path / "saved_models"
    proc = _cli("--model", "ichnet_small", "--input-shape", "32,32,3", "--export-dir", out,
                "--format", "savedmodel", "onnx")
    assert proc.returncode == 0, proc.stderr[-3000:]
    version = out / "ichnet_small" / "1"
    assert f"Exported ichnet_small to {version}" in proc.stdout
    assert (version / "assets" / "labels.txt").read_text().splitlines() == list(RSNA_ICH)
    card = json.loads((version / "assets.extra" / "model_card.json").read_text())
    info = zoo.model_info("ichnet_small")
    assert card["paper"] == info["paper"] and card["doi"] == info["doi"]
    assert card["input_shape"] == [32, 32, 3] and card["metrics"]["status"] == "not evaluated yet"
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    (onnx_probs,) = session.run(["probabilities"], {"image": x})
    served = zx.load_export(version)
    np.testing.assert_allclose(onnx_probs, served.predict(x), rtol=0, atol=1e-4)


def test_cli_run_dir(tmp_path, capsys):
    """A training run directory (config.yaml, best.weights.h5, the cache's dataset.json)."""
    labels = ["normal", "pneumonia"]
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "dataset.json").write_text(json.dumps({"labels": labels, "channels": 1,
                                                    "image_size": [32, 32]}))
    run = tmp_path / "run"
    run.mkdir()
    config = {"dataset": "medmnist", "cache_dir": str(cache), "image_size": 32,
              "model": "myositisnet", "model_kwargs": {}, "epochs": 1}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    model = zoo.get_model("myositisnet", input_shape=(32, 32, 1), num_classes=2)
    rng = np.random.default_rng(2)
    model.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in model.get_weights()])
    model.save_weights(run / "best.weights.h5")

    out = tmp_path / "saved_models"
    assert zx.main(["--run-dir", str(run), "--export-dir", str(out), "--name", "pneumonia"]) == 0
    assert "Exported pneumonia to" in capsys.readouterr().out
    served = zx.load_export(out / "pneumonia")
    assert served.labels == tuple(labels) and served.config == config
    from pipelines.preprocessing import quantize

    x = rng.random((3, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(served.predict(x), model.predict(quantize(x), verbose=0), rtol=0,
                               atol=1e-5)  # serving rounds to k/255 as the cache does
    assert served.card["model_name"] == "pneumonia" and served.card["training"]["dataset"] == "medmnist"


def test_cli_errors_name_the_fix(tmp_path, capsys):
    assert zx.main(["--model", "ichnett", "--export-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'ichnett'" in err and "ichnet" in err
    with pytest.raises(SystemExit):
        zx.main(["--model", "ichnet", "--weights", str(tmp_path / "nope.weights.h5")])
    assert "--weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        zx.main(["--model", "ichnet", "--input-shape", "32,32"])
    assert "--input-shape must be H,W,C" in capsys.readouterr().err
    assert zx.main(["--run-dir", str(tmp_path)]) == 2
    assert "config.yaml does not exist" in capsys.readouterr().err
    assert tf.io.gfile.listdir(str(tmp_path)) == []
