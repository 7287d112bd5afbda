"""SoftThresholdAttention: the layer checks and the DRSN mathematics against NumPy."""

import keras
import numpy as np
import pytest

from tests.helpers import check_layer
from zoo.layers.soft_threshold_attention import SoftThresholdAttention


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reduction": 4, "channel_shared": False},
        {"reduction": 1, "channel_shared": True},
        {"reduction": 16},  # more reduction than channels: one hidden unit
    ],
)
def test_check_layer(kwargs, tmp_path):
    check_layer(
        SoftThresholdAttention, kwargs, (8, 8, 8), tmp_path, expected_output_shape=(8, 8, 8)
    )


def _reference(x, layer, training):
    """DRSN soft thresholding written out in NumPy with the layer's own weights."""
    w1, b1 = (np.asarray(v) for v in layer.fc1.get_weights())
    gamma, beta, moving_mean, moving_var = (np.asarray(v) for v in layer.bn.get_weights())
    w2, b2 = (np.asarray(v) for v in layer.fc2.get_weights())
    eps = layer.bn.epsilon
    m = np.abs(x).mean(axis=(1, 2))  # [B, C]
    h = m @ w1 + b1
    if training:
        mean, var = h.mean(axis=0), h.var(axis=0)
    else:
        mean, var = moving_mean, moving_var
    h = gamma * (h - mean) / np.sqrt(var + eps) + beta
    h = np.maximum(h, 0.0)
    alpha = 1.0 / (1.0 + np.exp(-(h @ w2 + b2)))
    if layer.channel_shared:
        tau = alpha * m.mean(axis=1, keepdims=True)  # [B, 1]
    else:
        tau = alpha * m  # [B, C]
    tau = tau[:, None, None, :]
    return np.sign(x) * np.maximum(np.abs(x) - tau, 0.0)


def _layer_with_nontrivial_weights(channel_shared, x):
    layer = SoftThresholdAttention(reduction=2, channel_shared=channel_shared)
    layer.build(x.shape)
    rng = np.random.default_rng(1)
    # Random BN statistics and affine so that inference mode really uses them.
    hidden = layer.bn.get_weights()[0].shape[0]
    layer.bn.set_weights(
        [
            rng.uniform(0.5, 1.5, hidden).astype("float32"),
            rng.normal(0.0, 0.3, hidden).astype("float32"),
            rng.normal(0.0, 0.3, hidden).astype("float32"),
            rng.uniform(0.5, 2.0, hidden).astype("float32"),
        ]
    )
    w2, b2 = layer.fc2.get_weights()
    layer.fc2.set_weights([w2, rng.normal(0.0, 0.5, b2.shape).astype("float32")])
    return layer


@pytest.mark.parametrize("channel_shared", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_matches_numpy_reference(channel_shared, training):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 6, 5, 8)) * rng.uniform(0.2, 3.0, size=(1, 1, 1, 8))).astype("float32")
    layer = _layer_with_nontrivial_weights(channel_shared, x)
    expected = _reference(x.astype("float64"), layer, training)
    got = keras.ops.convert_to_numpy(layer(x, training=training))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # The thresholds really shrink: some values become exactly zero, none change sign,
    # and no magnitude grows.
    assert np.any(got == 0.0) and np.any(got != 0.0)
    assert np.all(got * x >= 0.0)
    assert np.all(np.abs(got) <= np.abs(x) + 1e-6)


def test_channel_shared_uses_one_threshold_per_sample():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 4, 6)).astype("float32")
    layer = SoftThresholdAttention(channel_shared=True)
    y = keras.ops.convert_to_numpy(layer(x))
    assert layer.fc2.get_weights()[0].shape == (1, 1)  # 6 // 4 = 1 hidden unit, one output
    # With one threshold per sample, every nonzero output is |x| - tau for the same tau.
    for b in range(2):
        nz = y[b] != 0
        taus = np.abs(x[b][nz]) - np.abs(y[b][nz])
        np.testing.assert_allclose(taus, taus[0], atol=1e-5)


def test_output_shape_for_rank3_input():
    x = np.random.default_rng(3).normal(size=(2, 10, 4)).astype("float32")
    y = SoftThresholdAttention(reduction=2)(x)
    assert tuple(y.shape) == (2, 10, 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reduction": 0}, "reduction must be a positive integer"),
        ({"reduction": 2.5}, "reduction must be a positive integer"),
        ({"channel_shared": "yes"}, "channel_shared must be True or False"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SoftThresholdAttention(**kwargs)


def test_rank2_input_is_refused():
    with pytest.raises(ValueError, match="rank >= 3"):
        SoftThresholdAttention()(np.zeros((2, 4), "float32"))
