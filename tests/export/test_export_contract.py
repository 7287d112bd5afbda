"""Contract tests for zoo.export: every promise an export makes to TF Serving and ONNX runtimes.

TF Serving itself cannot be installed here, so each promise is checked on real files with real
processes: reload in a fresh Python that imports no zoo code, saved_model_cli, the warmup
records, the config protos, a SIGKILL in the middle of an export, onnxruntime.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tests.export.support import (
    integer_versions,
    keras_probs,
    reload_in_fresh_process,
    served_input,
    tiny_model,
    tree_digest,
    write_jpeg,
    write_png,
)
from zoo import export as zx

ROOT = Path(__file__).resolve().parents[2]
RGB_LABELS = ("any", "epidural", "subdural")
GREY_LABELS = ("normal", "abnormal")
CONFIG = {"dataset": "synthetic", "image_size": 32, "windows": "brain,subdural,bone",
          "model": "tiny", "epochs": 1, "seed": 0}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two models in one export root: rgb (exported twice, the first with ONNX) and grey."""
    base = tmp_path_factory.mktemp("saved_models")
    rgb, grey = tiny_model(3, 3, "sigmoid"), tiny_model(1, 2, "softmax", seed=1)
    rgb_v1 = zx.export_saved_model(
        rgb, base, model_name="tiny_rgb", labels=RGB_LABELS, config=CONFIG,
        preprocessing={"windows": [[40, 80], [80, 200], [600, 2800]]},
        formats=("savedmodel", "onnx"),
    )
    rgb_v1_digest = tree_digest(rgb_v1)
    grey_v1 = zx.export_saved_model(grey, base, model_name="tiny_grey", labels=GREY_LABELS)
    rgb_v2 = zx.export_saved_model(rgb, base, model_name="tiny_rgb", labels=RGB_LABELS,
                                   config=CONFIG)
    return {"base": base, "rgb": rgb, "grey": grey, "rgb_v1": rgb_v1, "rgb_v2": rgb_v2,
            "grey_v1": grey_v1, "rgb_v1_digest": rgb_v1_digest}


def test_layout_versions_and_assets(exports):
    base = exports["base"]
    assert exports["rgb_v1"] == base / "tiny_rgb" / "1"
    assert exports["rgb_v2"] == base / "tiny_rgb" / "2"
    assert exports["grey_v1"] == base / "tiny_grey" / "1"
    # A second export took the next version and left the first one byte for byte as it was.
    assert tree_digest(exports["rgb_v1"]) == exports["rgb_v1_digest"]
    assert sorted(p.name for p in (base / "tiny_rgb").iterdir()) == ["1", "2"]  # no .tmp-* left

    v1 = exports["rgb_v1"]
    for rel in ("saved_model.pb", "variables/variables.index", "assets/labels.txt",
                "assets.extra/config.yaml", "assets.extra/preprocessing.json",
                "assets.extra/model_card.md", "assets.extra/model_card.json",
                "assets.extra/tf_serving_warmup_requests", "model.onnx"):
        assert (v1 / rel).is_file(), rel
    assert not (exports["rgb_v2"] / "model.onnx").exists()  # ONNX only when asked for
    assert (v1 / "assets" / "labels.txt").read_text().splitlines() == list(RGB_LABELS)
    assert yaml.safe_load((v1 / "assets.extra" / "config.yaml").read_text()) == CONFIG

    pre = json.loads((v1 / "assets.extra" / "preprocessing.json").read_text())
    assert pre["model_input"] == {"height": 32, "width": 32, "channels": 3, "dtype": "float32",
                                  "range": [0.0, 1.0]}
    assert pre["serving_default"]["input"] == "image"
    assert pre["serving_bytes"]["input"] == "image_bytes"
    assert pre["training_data"]["windows"] == [[40, 80], [80, 200], [600, 2800]]
    assert pre["training_data"]["dataset"] == "synthetic"

    card = json.loads((v1 / "assets.extra" / "model_card.json").read_text())
    assert card["model_name"] == "tiny_rgb" and card["version"] == 1
    assert card["labels"] == list(RGB_LABELS) and card["input_shape"] == [32, 32, 3]
    assert card["parameters"] == exports["rgb"].count_params()
    assert card["metrics"] == {"status": "not evaluated yet"}
    assert card["training"]["dataset"] == "synthetic"
    assert json.loads((exports["rgb_v2"] / "assets.extra/model_card.json").read_text())["version"] == 2
    md = (v1 / "assets.extra" / "model_card.md").read_text()
    assert "# Model card: tiny_rgb (version 1)" in md and "Not evaluated yet." in md
    # Without a training config the export still records what it knows.
    grey_config = yaml.safe_load((exports["grey_v1"] / "assets.extra/config.yaml").read_text())
    assert grey_config == {"model": "tiny_grey", "input_shape": [32, 32, 1],
                           "labels": list(GREY_LABELS)}


def test_fresh_process_reload_matches_keras(exports, tmp_path):
    """Both signatures in a Python that imports no zoo code agree with Keras (1e-5)."""
    rng = np.random.default_rng(0)
    rgb, grey = exports["rgb"], exports["grey"]
    cases = {
        "rgb_native": rng.random((3, 32, 32, 3), dtype=np.float32),
        "rgb_other": rng.random((2, 45, 27, 3), dtype=np.float32),  # resized in the graph
        "grey_native": rng.random((2, 32, 32, 1), dtype=np.float32),
        "grey_other": rng.random((1, 64, 64, 1), dtype=np.float32),
    }
    for name, arr in cases.items():
        np.save(tmp_path / f"{name}.npy", arr)
    rgb_png = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    rgb_png_big = rng.integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    grey_png = rng.integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
    grey_png16 = rng.integers(0, 65536, (2, 32, 32, 1), dtype=np.uint16)
    smooth = (np.add.outer(np.arange(32), np.arange(32)) * 4).astype(np.uint8)
    rgb_jpeg = np.stack([smooth, smooth.T, 255 - smooth], -1)[None]
    enc = {
        "rgb_png": [write_png(tmp_path / f"rgb{i}.png", a) for i, a in enumerate(rgb_png)],
        "rgb_png_big": [write_png(tmp_path / f"rgbb{i}.png", a) for i, a in enumerate(rgb_png_big)],
        # a grey PNG sent to the 3-channel model is repeated over the channels
        "rgb_from_grey": [write_png(tmp_path / "g_for_rgb.png", grey_png[0])],
        "rgb_jpeg": [write_jpeg(tmp_path / "rgb.jpg", rgb_jpeg[0])],
        "grey_png": [write_png(tmp_path / f"grey{i}.png", a) for i, a in enumerate(grey_png)],
        "grey_png16": [write_png(tmp_path / f"grey16_{i}.png", a) for i, a in enumerate(grey_png16)],
    }
    jobs = [
        {"key": "rgb", "path": str(exports["rgb_v1"]),
         "images": {c: str(tmp_path / f"rgb_{c}.npy") for c in ("native", "other")},
         "encoded": {c[4:]: f for c, f in enc.items() if c.startswith("rgb_")}},
        {"key": "grey", "path": str(exports["grey_v1"]),
         "images": {c: str(tmp_path / f"grey_{c}.npy") for c in ("native", "other")},
         "encoded": {c[5:]: f for c, f in enc.items() if c.startswith("grey_")}},
    ]
    got, report = reload_in_fresh_process(jobs, tmp_path / "child")
    assert report["zoo_imported"] is False

    # the spec decodes JPEG with the accurate integer IDCT, as Pillow does in prepare
    decoded_jpeg = tf.io.decode_jpeg((tmp_path / "rgb.jpg").read_bytes(), channels=3,
                                     dct_method="INTEGER_ACCURATE").numpy()
    expected = {
        "rgb/native": keras_probs(rgb, served_input(cases["rgb_native"], (32, 32))),
        "rgb/other": keras_probs(rgb, served_input(cases["rgb_other"], (32, 32))),
        "rgb/png": keras_probs(rgb, rgb_png / 255.0),
        "rgb/png_big": keras_probs(rgb, served_input(rgb_png_big / 255.0, (32, 32))),
        "rgb/from_grey": keras_probs(rgb, np.repeat(grey_png[:1], 3, axis=-1) / 255.0),
        "rgb/jpeg": keras_probs(rgb, decoded_jpeg[None] / 255.0),
        "grey/native": keras_probs(grey, served_input(cases["grey_native"], (32, 32))),
        "grey/other": keras_probs(grey, served_input(cases["grey_other"], (32, 32))),
        "grey/png": keras_probs(grey, grey_png / 255.0),
        "grey/png16": keras_probs(grey, served_input(grey_png16 / 65535.0, (32, 32))),
    }
    assert set(got) == set(expected)
    for key, want in expected.items():
        np.testing.assert_allclose(got[key], want, rtol=0, atol=1e-5, err_msg=key)
    # The images really differ, so agreement is not an accident of a constant model.
    assert np.ptp(expected["rgb/png"], axis=0).max() > 1e-4

    # Warmup: PredictionLog records, one per signature, that run against the signatures they name.
    for key, labels, shape in (("rgb", RGB_LABELS, [1, 32, 32, 3]),
                               ("grey", GREY_LABELS, [1, 32, 32, 1])):
        warm = report["exports"][key]["warmup"]
        assert sorted(w["signature"] for w in warm) == ["serving_bytes", "serving_default"]
        by_sig = {w["signature"]: w for w in warm}
        assert by_sig["serving_default"]["inputs"] == {"image": ["float32", shape]}
        assert by_sig["serving_bytes"]["inputs"] == {"image_bytes": ["string", [1]]}
        for w in warm:
            assert w["model"] == f"tiny_{key}"
            assert w["output_shape"] == [1, len(labels)] and w["finite"]


def _saved_model_cli():
    exe = Path(sys.executable).with_name("saved_model_cli")
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def _signature_blocks(text: str) -> dict:
    """Parse `saved_model_cli show --all` into {signature: {"inputs"|"outputs": {k: (dtype, shape)}}}."""
    blocks = {}
    for block in re.split(r"\nsignature_def\['", text)[1:]:
        name = block.split("'", 1)[0]
        ins, _, outs = block.partition("contains the following output(s):")
        parse = lambda s: {  # noqa: E731
            m[0]: (m[1], m[2])
            for m in re.findall(r"\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\S+(?: \S+)*)", s)
        }
        blocks[name] = {"inputs": parse(ins), "outputs": parse(outs)}
    return blocks


def test_saved_model_cli_lists_both_signatures(exports):
    proc = subprocess.run([*_saved_model_cli(), "show", "--dir", str(exports["rgb_v1"]), "--all"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    blocks = _signature_blocks(proc.stdout)
    assert blocks["serving_default"] == {
        "inputs": {"image": ("DT_FLOAT", "(-1, -1, -1, 3)")},
        "outputs": {"probabilities": ("DT_FLOAT", "(-1, 3)")},
    }
    assert blocks["serving_bytes"] == {
        "inputs": {"image_bytes": ("DT_STRING", "(-1)")},
        "outputs": {"probabilities": ("DT_FLOAT", "(-1, 3)")},
    }
    assert proc.stdout.count("Method name is: tensorflow/serving/predict") == 2


def test_serving_graph_uses_standard_ops_only(exports):
    """No py_func / numpy_function and nothing outside TensorFlow's own op registry."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    sm = saved_model_pb2.SavedModel.FromString((exports["rgb_v1"] / "saved_model.pb").read_bytes())
    ops = set()
    for meta in sm.meta_graphs:
        ops |= {n.op for n in meta.graph_def.node}
        for fn in meta.graph_def.library.function:
            ops |= {n.op for n in fn.node_def}
    # the decode (PNG 8/16-bit, JPEG, BMP/GIF), the antialiased resize and the rounding are in-graph
    assert {"DecodePng", "DecodeJpeg", "DecodeImage", "ScaleAndTranslate", "Floor", "Conv2D"} <= ops
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    assert [op for op in sorted(ops) if op_def_registry.get(op) is None] == []


def test_server_configs_parse_as_tf_serving_protos(exports):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base = exports["base"]
    config = text_format.Parse((base / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    entries = {c.name: c for c in config.model_config_list.config}
    assert sorted(entries) == ["tiny_grey", "tiny_rgb"]
    for name, entry in entries.items():
        assert entry.base_path == f"/models/{name}"
        assert entry.model_platform == "tensorflow"

    params = text_format.Parse((base / "batching.config").read_text(),
                               zx.batching_parameters_class()())
    assert params.max_batch_size.value == 32
    assert params.num_batch_threads.value >= 1 and params.batch_timeout_micros.value > 0
    sizes = list(params.allowed_batch_sizes)
    assert sizes == sorted(sizes) and sizes[-1] == params.max_batch_size.value
    assert params.pad_variable_length_inputs is False
    # The message declared in zoo.export is TF Serving's: same full name and field numbers.
    desc = params.DESCRIPTOR
    assert desc.full_name == "tensorflow.serving.BatchingParameters"
    assert {f.name: f.number for f in desc.fields} == {
        "max_batch_size": 1, "batch_timeout_micros": 2, "max_enqueued_batches": 3,
        "num_batch_threads": 4, "thread_pool_name": 5, "allowed_batch_sizes": 6,
        "pad_variable_length_inputs": 7,
    }


def test_onnx_matches_keras(exports):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exports["rgb_v1"] / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    x = np.random.default_rng(3).random((5, 32, 32, 3), dtype=np.float32)
    (got,) = session.run(["probabilities"], {"image": x})
    np.testing.assert_allclose(got, keras_probs(exports["rgb"], x), rtol=0, atol=1e-4)


def test_onnx_freezes_captured_constants_and_exact_gelu(tmp_path):
    """A Normalization layer's constants stay inside the graph; TF's Erfc (exact GELU) converts."""
    import keras
    import onnxruntime as ort

    inp = keras.Input((32, 32, 1), name="image")
    x = keras.layers.Normalization(mean=0.3, variance=0.04, name="norm")(inp)
    x = keras.layers.Conv2D(4, 3, activation="gelu")(x)  # exact GELU: TF emits Erfc
    x = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, keras.layers.Activation("softmax", name="predictions")(x))
    path = zx.export_saved_model(model, tmp_path, model_name="norm_gelu", labels=("a", "b"),
                                 formats=("onnx",))
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    x = np.random.default_rng(6).random((3, 32, 32, 1), dtype=np.float32)
    (got,) = session.run(["probabilities"], {"image": x})
    np.testing.assert_allclose(got, keras_probs(model, x), rtol=0, atol=1e-4)


def test_load_export(exports):
    served = zx.load_export(exports["base"] / "tiny_rgb")  # a model dir means its latest version
    assert served.path == exports["rgb_v2"] and served.version == 2
    assert served.labels == RGB_LABELS and served.config == CONFIG
    assert served.input_shape == (32, 32, 3)
    assert set(served.signatures) == {"serving_default", "serving_bytes"}
    x = np.random.default_rng(4).random((5, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(served.predict(x, batch_size=2),
                               keras_probs(exports["rgb"], served_input(x, (32, 32))),
                               rtol=0, atol=1e-5)
    pixels = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    want = keras_probs(exports["rgb"], pixels[None] / 255.0)
    np.testing.assert_allclose(served.predict(pixels), want, rtol=0, atol=1e-5)
    png = tf.io.encode_png(pixels).numpy()
    np.testing.assert_allclose(served.predict_bytes([png]), want, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"expects images shaped \[N, H, W, 3\]"):
        served.predict(np.zeros((1, 32, 32, 1), np.float32))


def test_update_model_card(exports, tmp_path):
    import shutil

    copy = tmp_path / "tiny_rgb" / "7"
    shutil.copytree(exports["rgb_v1"] / "assets.extra", copy / "assets.extra")
    card = zx.update_model_card(copy, metrics={"auroc": {"any": 0.91}, "split": "test"})
    assert card["metrics"] == {"auroc": {"any": 0.91}, "split": "test"}
    md = (copy / "assets.extra" / "model_card.md").read_text()
    assert "not evaluated yet" not in md.lower() and "auroc: any: 0.91" in md
    with pytest.raises(FileNotFoundError, match="model_card.json does not exist"):
        zx.update_model_card(tmp_path / "nothing")


_KILL_CHILD = textwrap.dedent(
    """
    import sys, time
    import zoo.export as zx
    import zoo.export.publish as publish
    from tests.export.support import tiny_model

    def stall(tmp, model_dir):  # everything is written; the rename has not happened yet
        print("READY", tmp, flush=True)
        time.sleep(600)

    publish.publish_version = stall
    zx.export_saved_model(tiny_model(3, 3), sys.argv[1], model_name="tiny_rgb",
                          labels=["any", "epidural", "subdural"])
    """
)


def test_sigkill_midway_leaves_no_version(tmp_path):
    base = tmp_path / "saved_models"
    model = tiny_model(3, 3)
    v1 = zx.export_saved_model(model, base, model_name="tiny_rgb", labels=RGB_LABELS)
    before = tree_digest(v1)
    config_before = (base / "models.config").read_text()

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(base)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        line = ""
        while time.monotonic() < deadline and not line.startswith("READY"):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert line.startswith("READY"), proc.stderr.read()[-3000:]
        tmp = Path(line.split(maxsplit=1)[1].strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    # Killed midway: the complete SavedModel sits in a hidden directory that TF Serving ignores.
    assert tmp.parent == base / "tiny_rgb" and tmp.name.startswith(".tmp-")
    assert (tmp / "saved_model.pb").is_file()
    assert integer_versions(base / "tiny_rgb") == [1]
    assert tree_digest(v1) == before
    assert (base / "models.config").read_text() == config_before

    # The next export takes version 2 and removes the dead process's leftovers.
    v2 = zx.export_saved_model(model, base, model_name="tiny_rgb", labels=RGB_LABELS)
    assert v2.name == "2" and not tmp.exists()
    assert integer_versions(base / "tiny_rgb") == [1, 2]
    assert tree_digest(v1) == before


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"labels": ("a", "b")}, ValueError, r"3 outputs but 2 labels"),
        ({"labels": ("a", "a", "b")}, ValueError, r"labels must be unique"),
        ({"labels": "abc"}, ValueError, r"labels must be a list of class names"),
        ({"model_name": "../up"}, ValueError, r"not usable as a TF Serving model directory"),
        ({"model_name": "12"}, ValueError, r"not usable as a TF Serving model directory"),
        ({"formats": ("savedmodel", "tflite")}, ValueError, r"Unknown export format 'tflite'"),
        ({"config": [1, 2]}, ValueError, r"config must be a mapping"),
    ],
)
def test_bad_arguments_are_one_clear_sentence(tmp_path, kwargs, error, match):
    args = {"model_name": "tiny", "labels": RGB_LABELS, **kwargs}
    with pytest.raises(error, match=match):
        zx.export_saved_model(tiny_model(3, 3), tmp_path, **args)
    assert not any(p.name.isdigit() for p in tmp_path.rglob("*"))


def test_model_checks(tmp_path):
    import keras

    inp = keras.Input((None, None, 3), name="image")
    out = keras.layers.Dense(2, name="predictions")(keras.layers.GlobalAveragePooling2D()(inp))
    with pytest.raises(ValueError, match=r"needs a fixed \(height, width, channels\) input"):
        zx.export_saved_model(keras.Model(inp, out), tmp_path, model_name="m", labels="ab")
    with pytest.raises(TypeError, match="needs a keras.Model"):
        zx.export_saved_model(object(), tmp_path, model_name="m", labels=("a",))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zx.load_export(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no saved_model.pb and no integer version"):
        zx.load_export(tmp_path / "empty")
