"""ImageNet initialisation from a local keras.applications file: legacy .h5, fresh head, no download."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

import zoo
from zoo.models.backbone import backbone_layers, head_layers
from zoo.models.imagenet import ImageNetError, is_applications_file


def _write_applications_file(model, path):
    """The legacy Keras HDF5 weights layout keras.applications downloads: root attribute
    ``layer_names``; one group per layer with ``weight_names`` and one dataset per weight."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        names = [layer.name for layer in model.layers]
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.x"
        values = {}
        for layer in model.layers:
            group = f.create_group(layer.name)
            weight_names = [f"{layer.name}/{w.name}_{i}:0".encode() for i, w in enumerate(layer.weights)]
            group.attrs["weight_names"] = np.array(weight_names)
            values[layer.name] = []
            for name, w in zip(weight_names, layer.weights):
                v = rng.normal(0.0, 0.1, w.shape).astype("float32")
                if "variance" in w.path:
                    v = np.abs(v) + 0.5
                group.create_dataset(name.decode(), data=v)
                values[layer.name].append(v)
    return path, values


@pytest.fixture(scope="module")
def mobilenet_file(tmp_path_factory):
    ref = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                              include_preprocessing=False, minimalistic=False)
    return _write_applications_file(ref, tmp_path_factory.mktemp("imagenet") / "mobilenetv3_small_notop.h5")


def test_a_keras_applications_file_loads_under_a_fresh_head(mobilenet_file):
    path, values = mobilenet_file
    assert is_applications_file(path)
    model = zoo.get_model("mobilenetv3_small", input_shape=(32, 32, 1), num_classes=3, weights=str(path))
    loaded = [v for vs in values.values() for v in vs]
    got = [w for layer in backbone_layers(model) for w in layer.get_weights()]
    assert len(got) == len(loaded)
    # the first convolution is adapted to 1 channel (summed), every other weight is the file's
    np.testing.assert_allclose(got[0], loaded[0].sum(axis=2, keepdims=True), rtol=1e-6)
    for g, v in zip(got[1:], loaded[1:]):
        np.testing.assert_array_equal(g, v)
    assert model.output.shape[-1] == 3 and head_layers(model)
    # three channels: the kernel as stored
    rgb = zoo.get_model("mobilenetv3_small", input_shape=(32, 32, 3), num_classes=2, weights=str(path))
    first = next(layer for layer in backbone_layers(rgb) if layer.weights)
    np.testing.assert_array_equal(first.get_weights()[0], loaded[0])


def test_wrong_architecture_and_models_without_one_are_one_sentence(mobilenet_file):
    path, _ = mobilenet_file
    with pytest.raises(ImageNetError, match=r"does not load into keras.applications' efficientnet_b0 .*'_notop'"):
        zoo.get_model("efficientnet_b0", input_shape=(32, 32, 3), weights=str(path))
    with pytest.raises(ImageNetError, match=r"ichnet has no keras.applications counterpart"):
        zoo.get_model("ichnet", input_shape=(32, 32, 3), weights=str(path))


def test_resnet50_maps_keras_names_and_folds_conv_biases_into_batchnorm(tmp_path):
    ref = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path, values = _write_applications_file(ref, tmp_path / "resnet50_notop.h5")
    model = zoo.get_model("resnet50", input_shape=(32, 32, 3), num_classes=2, weights=str(path))
    checked = 0
    for layer in backbone_layers(model):
        if not layer.weights:
            continue
        name = layer.name.replace("stem_", "conv1_")
        if layer.name.startswith("stage"):
            stage, block, part, kind = layer.name.split("_")
            part = "0" if part == "shortcut" else part
            name = f"conv{int(stage[5:]) + 1}_{block}_{part}_{kind}"
        got = layer.get_weights()
        if name.endswith("_conv"):
            np.testing.assert_array_equal(got[0], values[name][0])       # kernel; keras' bias moves
        else:
            gamma, beta, mean, var = values[name]
            bias = values[name[:-3] + "_conv"][1]
            np.testing.assert_allclose(got[2], mean - bias, rtol=1e-6)   # folded into the mean
            np.testing.assert_array_equal(got[0], gamma)
            np.testing.assert_array_equal(got[3], var)
        checked += 1
    assert checked == sum(1 for layer in ref.layers if layer.weights)


def test_our_own_weight_files_are_not_taken_for_imagenet_ones(tmp_path):
    model = zoo.get_model("mobilenetv3_small", input_shape=(32, 32, 3))
    model.save_weights(tmp_path / "own.weights.h5")
    assert not is_applications_file(tmp_path / "own.weights.h5")
    again = zoo.get_model("mobilenetv3_small", input_shape=(32, 32, 3), weights=str(tmp_path / "own.weights.h5"))
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def _copy_into(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def test_hostile_imagenet_files_are_one_sentence(mobilenet_file, tmp_path):
    """Truncated, declaring a huge dataset, or NaN: refused in one sentence before (or instead
    of) loading; the huge dataset is never read."""
    path, _ = mobilenet_file
    truncated = tmp_path / "mobilenetv3_small_notop.h5"
    truncated.write_bytes(path.read_bytes()[:4096])
    huge = _copy_into(path, tmp_path / "huge_notop.h5")
    nan = _copy_into(path, tmp_path / "nan_notop.h5")
    with h5py.File(huge, "a") as f:
        f.create_dataset("extra/huge", shape=(2**32,), dtype="float64", chunks=True)
    with h5py.File(nan, "a") as f:
        found = []
        f.visititems(lambda name, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
        found[0][...] = np.nan
    model = zoo.get_model("mobilenetv3_small", input_shape=(32, 32, 1), num_classes=3)
    from zoo.models.imagenet import load_imagenet

    for bad, words in ((huge, "declares"), (nan, "NaN")):
        with pytest.raises(ImageNetError, match=words) as info:
            load_imagenet(model, "mobilenetv3_small", bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="truncated|not an HDF5|does not load"):
        load_imagenet(model, "mobilenetv3_small", truncated)
