"""The keras.applications baselines, the CXR EfficientNets and the CPMID ResNet/ViT backbones."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import zoo
from zoo.labels import CXR14
from zoo.models import baselines, cpmid, cxr


def _x(shape, seed=0):
    return np.random.default_rng(seed).random((2, *shape)).astype("float32")


def _call(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


# ----------------------------------------------------------------------------- baselines


def test_application_layers_are_named_deterministically():
    a = zoo.get_model("mobilenetv3_small", input_shape=(32, 32, 1))
    b = zoo.get_model("mobilenetv3_small", input_shape=(32, 32, 1))  # keras' counters moved on
    names = [layer.name for layer in a.layers]
    assert names == [layer.name for layer in b.layers]
    assert "mobilenetv3_small_re_lu_0" in names
    assert not any(n.startswith(("re_lu", "activation", "rescaling")) for n in names)


def test_efficientnet_input_scaling_is_neutralised():
    model = zoo.get_model("efficientnet_b0", input_shape=(32, 32, 1))
    rescale = [layer for layer in model.layers if isinstance(layer, keras.layers.Rescaling)]
    assert rescale and all(float(layer.scale) == 1.0 for layer in rescale)
    norm = model.get_layer("efficientnet_b0_normalization_0")
    stem_in = norm.output  # identity at init: mean 0, variance 1, for one channel
    probe = keras.Model(model.input, stem_in)
    x = _x((32, 32, 1))
    np.testing.assert_allclose(_call(probe, x), x, atol=1e-3)
    assert model.get_layer("stem_conv").kernel.shape[2] == 1  # no grey-to-RGB tiling


def test_local_weights_round_trip_into_a_fresh_build(tmp_path):
    x = _x((32, 32, 1))
    src = zoo.get_model("mobilenetv3_small", input_shape=(32, 32, 1), num_classes=3)
    # move every weight (BN statistics included) off its initial value, so a load that
    # silently skipped a layer would change the outputs
    rng = np.random.default_rng(1)
    for v in src.weights:
        w = keras.ops.convert_to_numpy(v)
        w = w * rng.uniform(0.5, 1.5, w.shape)
        if "variance" not in v.path:
            w = w + 0.01 * rng.normal(size=w.shape)
        v.assign(w.astype("float32"))
    expected = _call(src, x)
    h5 = str(tmp_path / "m.weights.h5")
    src.save_weights(h5)
    got = zoo.get_model("mobilenetv3_small", input_shape=(32, 32, 1), num_classes=3, weights=h5)
    np.testing.assert_allclose(_call(got, x), expected, rtol=1e-5, atol=1e-5)
    # the same file does not fit a different head: one clear sentence
    with pytest.raises(ValueError, match="do not fit"):
        zoo.get_model("mobilenetv3_small", input_shape=(32, 32, 1), num_classes=4, weights=h5)


def test_unknown_application_backbone():
    with pytest.raises(ValueError, match="Unknown backbone 'resnet9000'"):
        baselines.build_application(arch="resnet9000")


# ----------------------------------------------------------------------------- CXR


def test_cxr_head_order_and_labels():
    model = zoo.get_model("cxr_efficientnet_b0", input_shape=(64, 64, 1))
    names = [layer.name for layer in model.layers]
    head = ["features", "cxr_head_gap", "cxr_head_dense", "cxr_head_bn", "cxr_head_relu",
            "cxr_head_dropout", "cxr_head_logits", "predictions"]  # fmt: skip
    assert names[-len(head) :] == head
    assert model.get_layer("cxr_head_logits").units == 14
    assert model.get_layer("predictions").get_config()["activation"] == "sigmoid"
    assert zoo.model_info("cxr_efficientnet_b0")["labels"] == CXR14
    assert model.get_layer("features").output.shape[1:] == (2, 2, 1280)
    y = _call(model, _x((64, 64, 1)))
    assert y.shape == (2, 14) and np.all((y > 0) & (y < 1))


def test_cxr_arguments():
    with pytest.raises(ValueError, match="variant must be one of b0, b1, b2, b3"):
        cxr.build_cxr_efficientnet(variant="b9")
    with pytest.raises(ValueError, match="head_units"):
        cxr.build_cxr_efficientnet(input_shape=(32, 32, 1), head_units=0)
    assert zoo.model_info("cxr_efficientnet_b3")["input_shape"] == (300, 300, 1)


# ----------------------------------------------------------------------------- ResNet


@pytest.mark.parametrize(
    "depth, reference",
    # torchvision resnet18/34/50 trainable parameters with a 1000-way fc (conv kernels without
    # bias, BN gamma/beta, fc weight+bias): an independent count of the same architecture
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032)],
)
def test_resnet_trainable_parameters_match_the_reference_architecture(depth, reference):
    model = cpmid.build_resnet(depth=depth, input_shape=(32, 32, 3), num_classes=1000)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == reference


def test_resnet_v15_strides_and_feature_extraction():
    m = zoo.get_model("resnet50", input_shape=(64, 96, 1))
    # v1.5: the first block of stages 2-4 strides in its 3x3, not in the first 1x1
    assert m.get_layer("stage2_block1_1_conv").strides == (1, 1)
    assert m.get_layer("stage2_block1_2_conv").strides == (2, 2)
    assert m.get_layer("stage2_block1_shortcut_conv").strides == (2, 2)
    extractor = keras.Model(m.input, m.get_layer("features").output)
    pooled = keras.Model(m.input, m.get_layer("head_gap").output)
    x = _x((64, 96, 1))
    assert _call(extractor, x).shape == (2, 2, 3, 2048)
    assert _call(pooled, x).shape == (2, 2048)
    with pytest.raises(ValueError, match="depth must be one of \\[18, 34, 50\\]"):
        cpmid.build_resnet(depth=101)


# ----------------------------------------------------------------------------- ViT


@pytest.mark.parametrize(
    "size, reference",
    # timm vit_{tiny,small}_patch16_224 parameters (1000-way head) minus their CLS token and its
    # position-embedding row (2 x D), which the mean-pooled variant does not have
    [("tiny", 5_717_416 - 2 * 192), ("small", 22_050_664 - 2 * 384)],
)
def test_vit_parameters_match_the_reference_architecture(size, reference):
    model = cpmid.build_vit(size=size, input_shape=(224, 224, 3), num_classes=1000)
    assert model.get_layer("pos_embed").table.shape == (196, {"tiny": 192, "small": 384}[size])
    assert model.count_params() == reference


def test_vit_token_grid_patch_size_and_gradcam():
    from zoo.explain import grad_cam

    m = zoo.get_model("vit_tiny", input_shape=(40, 48, 1), patch_size=8)
    # grid from input_shape: 40 // 8 = 5 rows, 48 // 8 = 6 columns
    assert m.get_layer("features").output.shape[1:] == (5, 6, 192)
    assert m.get_layer("pos_embed").table.shape == (30, 192)
    x = _x((40, 48, 1))
    cams = grad_cam(m, x, class_index=1, upsample=False)
    assert cams.shape == (2, 5, 6) and np.all(np.isfinite(cams))
    # mean-pooled tokens: the head sees the average of the patch tokens
    feats = keras.Model(m.input, [m.get_layer("features").output, m.get_layer("head_gap").output])
    grid, pooled = (keras.ops.convert_to_numpy(t) for t in feats(x, training=False))
    np.testing.assert_allclose(grid.mean(axis=(1, 2)), pooled, rtol=1e-5, atol=1e-5)

    # remainder pixels beyond a whole patch are not seen; smaller than one patch is an error
    assert zoo.get_model("vit_tiny", input_shape=(36, 36, 1)).get_layer("features").output.shape[
        1:3
    ] == (2, 2)
    with pytest.raises(ValueError, match="smaller than one 64x64 patch"):
        cpmid.build_vit(size="tiny", input_shape=(48, 48, 1), patch_size=64)
    with pytest.raises(ValueError, match="size must be one of tiny, small"):
        cpmid.build_vit(size="huge")
