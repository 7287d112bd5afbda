"""Pretrained backbones under a new head: round trip, in_chans, refusals, the leak check."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from zoo.models.backbone import BackboneError, backbone_layers, head_layers, save_backbone
from zoo.training.transfer import LeakError, check_leak


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) * 0.1 for w in model.get_weights()])
    return model


@pytest.mark.parametrize("name", ["resnet18", "ichnet_small"])
def test_backbone_round_trip_every_non_head_weight_equal(tmp_path, name):
    source = _randomise(zoo.get_model(name, input_shape=(32, 32, 1), num_classes=7))
    path = save_backbone(source, tmp_path / "backbone.weights.h5", {"model": name})
    fresh = zoo.get_model(name, input_shape=(32, 32, 1), num_classes=3)
    target = zoo.get_model(name, input_shape=(32, 32, 1), num_classes=3, weights=path)
    checked = 0
    for layer in backbone_layers(target):
        for got, want in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(got, want, err_msg=layer.name)
            checked += 1
    assert checked == sum(len(layer.get_weights()) for layer in backbone_layers(source))
    for layer in head_layers(target):  # the head: fresh (same init as an unloaded model's)
        for got, init in zip(layer.get_weights(), fresh.get_layer(layer.name).get_weights()):
            assert got.shape == init.shape
    assert target.output.shape[-1] == 3


def test_in_chans_sum_for_one_channel_repeat_and_rescale_for_more(tmp_path):
    rgb = _randomise(zoo.get_model("resnet18", input_shape=(32, 32, 3), num_classes=2), seed=1)
    path = save_backbone(rgb, tmp_path / "rgb.weights.h5", {"model": "resnet18"})
    grey = zoo.get_model("resnet18", input_shape=(32, 32, 1), num_classes=2, weights=path)
    kernel = rgb.get_layer("stem_conv").get_weights()[0]
    np.testing.assert_allclose(grey.get_layer("stem_conv").get_weights()[0], kernel.sum(2, keepdims=True), rtol=1e-6)
    # a grey image through the summed kernel = the grey image repeated through the RGB kernel
    import keras

    x = np.random.default_rng(2).random((2, 32, 32, 1)).astype("float32")
    f_rgb = keras.Model(rgb.input, rgb.get_layer("features").output)(np.repeat(x, 3, -1))
    f_grey = keras.Model(grey.input, grey.get_layer("features").output)(x)
    np.testing.assert_allclose(np.asarray(f_grey), np.asarray(f_rgb), rtol=1e-3, atol=1e-4)

    one = save_backbone(grey, tmp_path / "grey.weights.h5", {"model": "resnet18"})
    four = zoo.get_model("resnet18", input_shape=(32, 32, 4), num_classes=2, weights=one)
    want = np.repeat(grey.get_layer("stem_conv").get_weights()[0], 4, axis=2) / 4
    np.testing.assert_allclose(four.get_layer("stem_conv").get_weights()[0], want, rtol=1e-6)


def test_another_architecture_a_shape_mismatch_and_a_truncated_file_are_one_sentence(tmp_path):
    r18 = zoo.get_model("resnet18", input_shape=(32, 32, 1), num_classes=2)
    path = save_backbone(r18, tmp_path / "backbone.weights.h5", {"model": "resnet18"})
    with pytest.raises(BackboneError, match=r"has no weights for layer 'stage1_block3_1_conv' of resnet34"):
        zoo.get_model("resnet34", input_shape=(32, 32, 1), num_classes=2, weights=path)
    vit = zoo.get_model("vit_tiny", input_shape=(32, 32, 1), num_classes=2)
    vpath = save_backbone(vit, tmp_path / "vit.weights.h5", {"model": "vit_tiny"})
    with pytest.raises(BackboneError, match=r"Layer 'pos_embed' weight 0 has shape \(16, 192\) in vit_tiny but \(4, 192\)"):
        zoo.get_model("vit_tiny", input_shape=(64, 64, 1), num_classes=2, weights=vpath)
    data = (tmp_path / "backbone.weights.h5").read_bytes()
    cut = tmp_path / "cut" / "backbone.weights.h5"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(BackboneError, match="truncated"):
        zoo.get_model("resnet18", input_shape=(32, 32, 1), num_classes=2, weights=cut)


def test_the_leak_check(tmp_path):
    npz = tmp_path / "breastmnist.npz"
    npz.write_bytes(b"x")
    meta = {"model": "resnet18", "corpus": {"datasets": [
        {"name": "breastmnist", "dataset": "medmnist", "data_dir": str(npz), "options": {}}]}}
    with pytest.raises(LeakError, match="contains breastmnist .*--exclude breastmnist.*--allow-overlap"):
        check_leak(meta, "medmnist", npz)
    with pytest.raises(LeakError):
        check_leak(meta, "medmnist", tmp_path)  # the folder holding the file
    check_leak(meta, "medmnist", npz, allow_overlap=True)
    other = tmp_path / "other" / "pneumoniamnist.npz"
    other.parent.mkdir()
    other.write_bytes(b"x")
    check_leak(meta, "medmnist", other)


def test_train_cli_refuses_a_leak_before_any_work(tmp_path, capsys, shared_data):
    import train

    npz = shared_data / "medmnist-extra" / "breastmnist.npz"
    model = zoo.get_model("ichnet_small", input_shape=(32, 32, 1), num_classes=2)
    meta = {"model": "ichnet_small", "corpus": {"sources": ["breastmnist"], "datasets": [
        {"name": "breastmnist", "dataset": "medmnist", "data_dir": str(npz), "options": {}}]}}
    path = save_backbone(model, tmp_path / "backbone.weights.h5", meta)
    argv = ["--dataset", "medmnist", "--data-dir", str(npz), "--model", "ichnet_small", "--image-size", "32",
            "--weights", str(path), "--output-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "contains breastmnist" in err[0]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_freeze_backbone_and_backbone_lr_multiplier_in_the_trainer(tmp_path):
    from zoo.training import run
    from zoo.training.data import ArraySource

    rng = np.random.default_rng(0)
    x = rng.random((48, 32, 32, 1)).astype("float32")
    y = np.eye(2)[np.arange(48) % 2].astype("float32")
    source = ArraySource({"train": (x, y), "val": (x[:16], y[:16])}, labels=("a", "b"), task="binary")
    start = zoo.get_model("ichnet_small", input_shape=(32, 32, 1), num_classes=2)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in start.layers}
    built = {}

    def model_fn(shape, k, act):
        m = zoo.get_model("ichnet_small", input_shape=shape, num_classes=k, activation=act)
        m.set_weights(start.get_weights())
        built["model"] = m
        return m

    base = {"model": "ichnet_small", "epochs": 1, "batch_size": 16, "export": False, "verbose": 0,
            "bn_calibration_batches": 0, "augment": False}
    run({**base, "freeze_backbone": True, "output_dir": str(tmp_path / "probe")}, source=source, model_fn=model_fn)
    probe = built["model"]
    for layer in backbone_layers(probe):
        for got, want in zip(layer.get_weights(), before[layer.name]):
            np.testing.assert_array_equal(got, want, err_msg=layer.name)
    changed = [layer.name for layer in head_layers(probe)
               if any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), before[layer.name]))]
    assert changed
    run({**base, "backbone_lr_mult": 0.1, "output_dir": str(tmp_path / "mult")}, source=source, model_fn=model_fn)
    tuned = built["model"]
    moved = [layer.name for layer in backbone_layers(tuned)
             if any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), before[layer.name]))]
    assert moved
