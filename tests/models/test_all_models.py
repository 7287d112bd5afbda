"""Every registered model, parametrised over zoo.list_models(): a new model is tested on registration.

Builds are small (32x32 inputs, batch 2) because building the large baselines is the cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import zoo

NAMES = zoo.list_models()
GOLDEN = Path(__file__).with_name("golden_params.json")
REGENERATE = "python scripts/model_table.py --update-golden"
SIZE = 32

# name -> (1-channel model, input batch, its outputs); filled by test_build_and_call and reused
# by the save/load test so each model is built as few times as possible.
_BUILT: dict[str, tuple] = {}


def _inputs(channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((2, SIZE, SIZE, channels)).astype("float32")


def _call(model, x) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def _built(name: str):
    if name not in _BUILT:
        model = zoo.get_model(name, input_shape=(SIZE, SIZE, 1))
        x = _inputs(1)
        _BUILT[name] = (model, x, _call(model, x))
    return _BUILT[name]


def test_registry_is_populated():
    expected = {
        "ichnet", "rensenet", "myositisnet", "cxr_efficientnet_b0", "resnet18", "resnet34",
        "resnet50", "vit_tiny", "vit_small", "mobilenetv3_small", "mobilenetv3_large",
        "efficientnet_b0", "densenet121",
    }  # fmt: skip
    missing = expected - set(NAMES)
    assert not missing, f"public model names missing from the registry: {sorted(missing)}"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_build_and_call(name, channels):
    info = zoo.model_info(name)
    if channels == 1:
        model, x, y = _built(name)
    else:
        model = zoo.get_model(name, input_shape=(SIZE, SIZE, channels))
        x = _inputs(channels)
        y = _call(model, x)
    num_classes = len(info["labels"])
    assert y.shape == (2, num_classes), f"{name}: output {y.shape}, labels {info['labels']}"
    assert np.all(np.isfinite(y)), f"{name}: non-finite outputs"
    assert y.dtype == np.float32
    if info["task"] == "multi-label":
        assert np.all((y >= 0) & (y <= 1))

    # conventions every model keeps
    assert isinstance(model.get_layer("image"), keras.layers.InputLayer)
    assert len(model.inputs) == 1 and model.inputs[0] is model.get_layer("image").output
    assert tuple(model.input_shape[1:]) == (SIZE, SIZE, channels)
    feats = model.get_layer("features").output
    assert len(feats.shape) == 4, f"{name}: features layer is {feats.shape}, not [B, h, w, c]"
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    assert not nested, f"{name} is not flat: nested models {nested}"


@pytest.mark.parametrize("name", NAMES)
def test_model_info_and_golden_parameters(name):
    info = zoo.model_info(name)
    for key in ("paper", "doi", "task", "labels", "input_shape", "feature_layer", "from_paper",
                "our_reading", "parameters", "summary"):  # fmt: skip
        assert key in info, f"{name}: model_info lacks {key!r}"
    assert info["task"] in ("multi-label", "multi-class", "binary")
    assert info["feature_layer"] == "features"
    assert info["from_paper"] and info["our_reading"], f"{name}: empty card lists"
    assert len(info["input_shape"]) == 3 and min(info["input_shape"][:2]) >= 32

    golden = json.loads(GOLDEN.read_text())
    assert name in golden, (
        f"{name} has no golden parameter count in {GOLDEN.name}; after checking the model, "
        f"regenerate it with `{REGENERATE}`."
    )
    assert info["parameters"] == golden[name], (
        f"{name}: {info['parameters']:,} parameters at its default config, golden says "
        f"{golden[name]:,}; if the change is intended, run `{REGENERATE}`."
    )


def test_golden_has_no_stale_names():
    stale = sorted(set(json.loads(GOLDEN.read_text())) - set(NAMES))
    assert not stale, f"golden_params.json names unregistered models {stale}; run `{REGENERATE}`."


@pytest.mark.parametrize("name", NAMES)
def test_common_argument_errors(name):
    with pytest.raises(ValueError, match="too small"):
        zoo.get_model(name, input_shape=(16, 64, 1))
    with pytest.raises(ValueError, match="activation"):
        zoo.get_model(name, input_shape=(SIZE, SIZE, 1), activation="relu")
    with pytest.raises(ValueError, match="num_classes"):
        zoo.get_model(name, input_shape=(SIZE, SIZE, 1), num_classes=0)
    with pytest.raises(TypeError):
        zoo.get_model(name, input_shape=(SIZE, SIZE, 1), not_an_argument=1)


def _family(name: str) -> str:
    """The zoo.models module that registers ``name`` (one builder per family)."""
    for modname, module in sorted(sys.modules.items()):
        if modname.startswith("zoo.models.") and callable(getattr(module, name, None)):
            return modname
    raise AssertionError(f"{name} is registered by no zoo.models module")


# one model per family module: the missing-file check exercises zoo.models.weights.load_weights through
# each family's builder; "imagenet" is checked for every model (it proves the builder passes
# ``weights`` on at all, and costs one build).
FAMILY_REPRESENTATIVES = sorted({_family(n): n for n in reversed(NAMES)}.values())


@pytest.mark.parametrize("name", NAMES)
def test_weights_imagenet_is_refused(name):
    with pytest.raises(ValueError, match="never downloads"):
        zoo.get_model(name, input_shape=(SIZE, SIZE, 1), weights="imagenet")


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_weights_missing_file(name, tmp_path):
    missing = tmp_path / "nothing.weights.h5"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.get_model(name, input_shape=(SIZE, SIZE, 1), weights=str(missing))


_LOADER = r"""
import json, sys
import keras
import numpy as np
import zoo  # the only zoo import: it must register every custom layer

report = {}
for name, path in json.loads(sys.argv[1]).items():
    data = np.load(path + ".npz")
    model = keras.saving.load_model(path)
    got = keras.ops.convert_to_numpy(model(data["x"], training=False))
    report[name] = {
        "max_abs_diff": float(np.max(np.abs(got - data["y"]))),
        "layers": len(model.layers),
        "flat": not any(isinstance(l, keras.Model) for l in model.layers),
    }
print("REPORT" + json.dumps(report))
"""


def test_keras_save_and_load_every_model_in_a_fresh_process(tmp_path):
    paths, layer_counts = {}, {}
    for name in NAMES:
        model, x, y = _built(name)
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        np.savez(path + ".npz", x=x, y=y)
        paths[name] = path
        layer_counts[name] = len(model.layers)
        del model
        _BUILT.pop(name, None)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", _LOADER, json.dumps(paths)],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT"))
    report = json.loads(line[len("REPORT") :])
    assert set(report) == set(NAMES)
    for name, r in report.items():
        assert r["flat"], f"{name} reloaded with nested models"
        assert r["layers"] == layer_counts[name], f"{name}: layer count changed on reload"
        assert r["max_abs_diff"] < 1e-5, f"{name}: reloaded outputs differ by {r['max_abs_diff']}"


@pytest.mark.parametrize("name", NAMES)
def test_layercam_over_every_scale(name):
    from zoo.explain import class_activation_map, scale_layers

    model, x, _ = _built(name)
    layers = scale_layers(model)
    assert layers[-1] == "features" and len(set(layers)) == len(layers)
    grids = [model.get_layer(n).output.shape[1] for n in layers]
    assert grids == sorted(grids, reverse=True) and len(set(grids)) == len(grids)
    heat = class_activation_map(model, x, 0, method="layercam", feature_layer="scales")
    assert heat.shape == (2, SIZE, SIZE) and np.isfinite(heat).all()
    assert heat.min() >= 0 and heat.max() <= 1 + 1e-6
