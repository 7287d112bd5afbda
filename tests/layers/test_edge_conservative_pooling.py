import keras
import numpy as np
import pytest

from tests.helpers import check_layer
from zoo.layers import EdgeConservativePooling


def np_decompose(x, p):
    """Independent NumPy reference: edge-pad to a multiple of p, window means, the residual."""
    b, h, w, c = x.shape
    ph, pw = (-h) % p, (-w) % p
    xp = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    hh, ww = xp.shape[1] // p, xp.shape[2] // p
    pooled = xp.reshape(b, hh, p, ww, p, c).mean(axis=(2, 4))
    up = np.repeat(np.repeat(pooled, p, axis=1), p, axis=2)
    return xp, pooled, xp - up


@pytest.mark.parametrize(
    "kwargs, input_shape, expected",
    [
        ({}, (8, 8, 3), (4, 4, 3)),
        ({"filters": 6}, (9, 7, 2), (5, 4, 6)),
        ({"filters": 4, "pool_size": 3, "activation": None}, (9, 10, 2), (3, 4, 4)),
        ({"filters": 5, "padding": "valid", "momentum": 0.9}, (6, 4, 1), (3, 2, 5)),
    ],
)
def test_check_layer(kwargs, input_shape, expected, tmp_path):
    check_layer(EdgeConservativePooling, kwargs, input_shape, tmp_path, expected)


@pytest.mark.parametrize("pool_size, size", [(2, (6, 8)), (2, (7, 10)), (3, (7, 9)), (4, (5, 6))])
def test_residual_matches_numpy_reference(pool_size, size):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, *size, 3)).astype("float32")
    layer = EdgeConservativePooling(pool_size=pool_size)
    pooled, residual = (keras.ops.convert_to_numpy(t) for t in layer.decompose(x))
    xp, ref_pooled, ref_residual = np_decompose(x.astype("float64"), pool_size)
    np.testing.assert_allclose(pooled, ref_pooled, atol=1e-5)
    np.testing.assert_allclose(residual, ref_residual, atol=1e-5)
    # nothing is lost: x (padded) = nearest_upsample(pooled) + residual
    up = np.repeat(np.repeat(pooled, pool_size, 1), pool_size, 2)
    np.testing.assert_allclose(up + residual, xp, atol=1e-5)
    # the residual is pure detail: zero mean inside every window
    h, w = residual.shape[1] // pool_size, residual.shape[2] // pool_size
    win = residual.reshape(2, h, pool_size, w, pool_size, 3).sum(axis=(2, 4))
    np.testing.assert_allclose(win, 0.0, atol=1e-5)


def test_forward_matches_numpy_reference():
    """The whole module with its own weights: act(BN(concat(pooled, s2d(r)) @ W)), inference."""
    p, c, filters = 2, 3, 5
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 6, c)).astype("float32")
    layer = EdgeConservativePooling(filters=filters, pool_size=p)
    layer.build(x.shape)
    bn = layer.merge_bn
    # non-trivial BN statistics so the reference checks them too
    bn.moving_mean.assign(rng.normal(size=filters).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=filters).astype("float32"))
    bn.gamma.assign(rng.uniform(0.5, 1.5, size=filters).astype("float32"))
    bn.beta.assign(rng.normal(size=filters).astype("float32"))
    got = keras.ops.convert_to_numpy(layer(x, training=False))

    _, pooled, residual = np_decompose(x.astype("float64"), p)
    s2d = np.concatenate([residual[:, i::p, j::p] for i in range(p) for j in range(p)], axis=-1)
    merged = np.concatenate([pooled, s2d], axis=-1)
    kernel = keras.ops.convert_to_numpy(layer.merge_conv.kernel)[0, 0]  # [c * (p*p + 1), filters]
    y = merged @ kernel
    mean, var, gamma, beta = (
        keras.ops.convert_to_numpy(v)
        for v in (bn.moving_mean, bn.moving_variance, bn.gamma, bn.beta)
    )
    y = gamma * (y - mean) / np.sqrt(var + bn.epsilon) + beta
    np.testing.assert_allclose(got, np.maximum(y, 0.0), rtol=1e-4, atol=1e-4)


def test_keeps_detail_that_average_pooling_discards():
    """Same 2x2 window means, different detail: plain pooling is blind, the module is not."""
    rng = np.random.default_rng(3)
    x1 = rng.uniform(size=(1, 8, 8, 2)).astype("float32")
    # zero-mean detail (an edge pattern) inside the single window at output position (1, 2)
    detail = np.zeros_like(x1)
    detail[0, 2:4, 4:6, :] = np.array([[0.5, -0.5], [-0.5, 0.5]], "float32")[..., None]
    x2 = x1 + detail

    plain = keras.layers.AveragePooling2D(2)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(plain(x1)), keras.ops.convert_to_numpy(plain(x2)), atol=1e-6
    )

    layer = EdgeConservativePooling(filters=4, activation=None)
    y1 = keras.ops.convert_to_numpy(layer(x1, training=False))
    y2 = keras.ops.convert_to_numpy(layer(x2, training=False))
    diff = np.abs(y1 - y2).max(axis=-1)[0]  # [4, 4]
    assert diff[1, 2] > 1e-2, diff
    # the detail stays where it was: every other output position is unchanged
    diff[1, 2] = 0.0
    np.testing.assert_allclose(diff, 0.0, atol=1e-5)

    # with the default ReLU too (some channel reacts to the edge)
    relu_layer = EdgeConservativePooling(filters=8)
    d = keras.ops.convert_to_numpy(relu_layer(x2) - relu_layer(x1))
    assert np.abs(d).max() > 1e-3


def test_unknown_spatial_size_gives_ceil_output():
    inp = keras.Input((None, None, 2))
    model = keras.Model(inp, EdgeConservativePooling(filters=3, pool_size=3)(inp))
    out = model(np.zeros((1, 7, 9, 2), "float32"))
    assert tuple(out.shape) == (1, 3, 3, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pool_size": 1}, "pool_size must be an integer >= 2"),
        ({"pool_size": 2.0}, "pool_size must be an integer >= 2"),
        ({"filters": 0}, "filters must be a positive integer or None"),
        ({"padding": "full"}, "padding must be 'same' or 'valid'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EdgeConservativePooling(**kwargs)


def test_bad_activation():
    with pytest.raises(ValueError, match="activation must be a Keras activation name"):
        EdgeConservativePooling(activation="no_such_activation")


def test_valid_padding_rejects_indivisible_size():
    layer = EdgeConservativePooling(padding="valid")
    with pytest.raises(ValueError, match="divisible by pool_size=2"):
        layer(keras.Input((7, 8, 1)))


def test_zero_detail_init_starts_as_a_conv_of_the_pooled_input_and_can_learn_the_detail(tmp_path):
    """detail_init="zeros": at initialisation the detail changes nothing (two inputs with the
    same window means give the same output) and the pooled rows keep their initialiser; the
    detail rows get a gradient, so training can switch the path on."""
    rng = np.random.default_rng(5)
    x1 = rng.uniform(size=(2, 8, 8, 2)).astype("float32")
    detail = np.zeros_like(x1)
    detail[:, 2:4, 4:6, :] = np.array([[0.5, -0.5], [-0.5, 0.5]], "float32")[..., None]
    x2 = x1 + detail
    layer = EdgeConservativePooling(filters=4, activation=None, detail_init="zeros")
    y1, y2 = (keras.ops.convert_to_numpy(layer(x, training=False)) for x in (x1, x2))
    np.testing.assert_allclose(y1, y2, atol=1e-6)
    kernel = keras.ops.convert_to_numpy(layer.merge_conv.kernel)
    assert np.all(kernel[:, :, 2:] == 0.0) and np.abs(kernel[:, :, :2]).min() > 0.0

    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x2, training=True) ** 2)
    grad = tape.gradient(loss, layer.merge_conv.kernel).numpy()
    assert np.abs(grad[:, :, 2:]).max() > 0.0
    check_layer(EdgeConservativePooling, {"filters": 3, "detail_init": "zeros"}, (8, 8, 2), tmp_path,
                (4, 4, 3))
    with pytest.raises(ValueError, match="detail_init must be None or 'zeros'"):
        EdgeConservativePooling(detail_init="ones")
