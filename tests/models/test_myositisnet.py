"""myositisnet: the 40 MFLOPs budget, alternating stages with soft thresholding, arguments."""

import keras
import numpy as np
import pytest

import zoo
from benchmarks.flops import count_flops
from zoo.labels import MYOSITIS
from zoo.layers.soft_threshold_attention import SoftThresholdAttention
from zoo.models.myositisnet import build_myositisnet


def test_flops_budget_at_224x224x1():
    model = zoo.get_model("myositisnet")
    assert tuple(model.input_shape[1:]) == (224, 224, 1)
    flops = count_flops(model, (224, 224, 1))
    assert 10e6 < flops <= 40e6, flops


def test_defaults_and_card():
    info = zoo.model_info("myositisnet")
    assert info["labels"] == MYOSITIS and info["task"] == "binary"
    assert tuple(info["input_shape"]) == (224, 224, 1)
    assert info["from_paper"] and info["our_reading"]
    model = zoo.get_model("myositisnet")
    assert model.input.name == "image"
    assert model.get_layer("predictions").get_config()["activation"] == "softmax"
    assert tuple(model.output.shape) == (None, 2)
    assert tuple(model.get_layer("features").output.shape) == (None, 7, 7, 128)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # flat


def test_stages_alternate_ordinary_and_separable_with_soft_thresholding():
    model = zoo.get_model("myositisnet", input_shape=(64, 64, 1))
    names = [layer.name for layer in model.layers]
    kinds = []
    for s in range(1, 5):
        separable = f"stage{s}_sep1_sep1_dw" in names
        ordinary = f"stage{s}_conv1_conv1" in names
        assert separable != ordinary, s
        kinds.append("separable" if separable else "conv")
    assert kinds == ["separable", "conv", "separable", "conv"]
    shrink = [layer for layer in model.layers if isinstance(layer, SoftThresholdAttention)]
    assert len(shrink) == 4 and not any(layer.channel_shared for layer in shrink)
    ordinary = [layer for layer in model.layers if type(layer) is keras.layers.Conv2D]
    depthwise = [layer for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert any(layer.kernel_size == (3, 3) for layer in ordinary) and len(depthwise) == 4


def test_outputs_are_probabilities_and_options_reach_the_layers():
    x = np.random.default_rng(0).uniform(size=(2, 48, 40, 1)).astype("float32")
    model = zoo.get_model("myositisnet", input_shape=(48, 40, 1))
    p = model.predict(x, verbose=0)
    assert p.shape == (2, 2) and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    one = zoo.get_model(
        "myositisnet",
        input_shape=(32, 32, 3),
        num_classes=1,
        activation="sigmoid",
        channel_shared=True,
        reduction=2,
    )
    shrink = [layer for layer in one.layers if isinstance(layer, SoftThresholdAttention)]
    assert all(layer.channel_shared and layer.reduction == 2 for layer in shrink)
    q = one.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0)
    assert q.shape == (1, 1) and 0.0 < q[0, 0] < 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stages": (("dense", 8, 1),)}, "kind 'conv' or 'separable'"),
        ({"stages": (("conv", 8, 0),)}, "\\(kind, filters, units\\)"),
        ({"stages": (("conv", 8, 1),) * 5}, "at most 4 stages"),
        ({"reduction": 0}, "reduction must be positive"),
        ({"channel_shared": 1}, "channel_shared must be True or False"),
        ({"input_shape": (224, 224)}, "input_shape must be"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_myositisnet(**kwargs)


def test_learns_a_small_binary_task():
    """Speckle with or without a bright band (a crude inflamed-muscle echo) on 32x32."""
    rng = np.random.default_rng(0)
    n = 64
    x = rng.gamma(2.0, 0.1, size=(n, 32, 32, 1)).astype("float32")
    y = np.zeros((n, 2), "float32")
    labels = rng.integers(0, 2, size=n)
    y[np.arange(n), labels] = 1.0
    for i in np.nonzero(labels)[0]:
        r = rng.integers(4, 24)
        x[i, r : r + 5] += 0.5
    x = np.clip(x, 0.0, 1.0)
    keras.utils.set_random_seed(0)
    model = zoo.get_model("myositisnet", input_shape=(32, 32, 1), dropout=0.0)
    model.compile(keras.optimizers.Adam(3e-3), "categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=16, epochs=6, verbose=0).history
    # Training-mode figures: 24 steps are too few for BN's moving statistics to settle.
    assert hist["loss"][-1] < 0.3 * hist["loss"][0], hist["loss"]
    assert hist["accuracy"][-1] >= 0.9, hist["accuracy"]
