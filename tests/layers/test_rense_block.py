import keras
import numpy as np
import pytest

from tests.helpers import check_layer
from zoo.layers import RenseBlock


@pytest.mark.parametrize(
    "kwargs, input_shape, expected",
    [
        ({"units": 1, "growth_rate": 4}, (8, 8, 3), (8, 8, 7)),
        ({"units": 3, "growth_rate": 2}, (6, 5, 1), (6, 5, 7)),
        ({"units": 2, "growth_rate": 3, "kernel_size": 5, "momentum": 0.9}, (7, 7, 2), (7, 7, 8)),
    ],
)
def test_check_layer(kwargs, input_shape, expected, tmp_path):
    check_layer(RenseBlock, kwargs, input_shape, tmp_path, expected)


def test_parameter_count_matches_the_unit_layout():
    """Per unit: kxk conv c_in->g, kxk conv g->g, 1x1 projection c_in->g (no biases), 3 BNs."""
    c, g, n, k = 5, 4, 3, 3
    block = RenseBlock(n, g, kernel_size=k)
    block.build((None, 8, 8, c))
    expected = 0
    for unit in range(n):
        c_in = c + unit * g
        expected += k * k * c_in * g + k * k * g * g + c_in * g + 3 * 4 * g
    assert block.count_params() == expected
    assert len(block.trainable_weights) == n * (3 + 3 * 2)  # 3 kernels + 3 (gamma, beta)


def test_dense_growth_keeps_every_earlier_feature():
    """The output starts with the input unchanged, then each unit's non-negative features."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    block = RenseBlock(units=2, growth_rate=4)
    y = keras.ops.convert_to_numpy(block(x, training=False))
    assert y.shape == (2, 6, 6, 3 + 2 * 4)
    np.testing.assert_array_equal(y[..., :3], x)
    assert np.all(y[..., 3:] >= 0.0)  # ReLU after each residual sum
    assert np.abs(y[..., 3:]).max() > 0.0


def test_forward_matches_numpy_reference():
    """kernel_size=1 makes every convolution a matmul, so the unit wiring (residual path,
    projection shortcut, sum, ReLUs, concatenation) can be checked in NumPy with the layer's
    own weights and non-trivial BatchNorm statistics, in inference mode."""
    rng = np.random.default_rng(4)
    c, g, n = 3, 4, 2
    x = rng.normal(size=(2, 5, 4, c)).astype("float32")
    block = RenseBlock(units=n, growth_rate=g, kernel_size=1)
    block.build(x.shape)
    for bns in (block.bn1, block.bn2, block.proj_bn):
        for bn in bns:
            bn.moving_mean.assign(rng.normal(size=g).astype("float32"))
            bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=g).astype("float32"))
            bn.gamma.assign(rng.uniform(0.5, 1.5, size=g).astype("float32"))
            bn.beta.assign(rng.normal(size=g).astype("float32"))
    got = keras.ops.convert_to_numpy(block(x, training=False))

    def conv(layer, v):
        return v @ keras.ops.convert_to_numpy(layer.kernel)[0, 0]

    def bn(layer, v):
        m, var, gamma, beta = (
            keras.ops.convert_to_numpy(w)
            for w in (layer.moving_mean, layer.moving_variance, layer.gamma, layer.beta)
        )
        return gamma * (v - m) / np.sqrt(var + layer.epsilon) + beta

    ref = x.astype("float64")
    for k in range(n):
        f = np.maximum(bn(block.bn1[k], conv(block.conv1[k], ref)), 0.0)
        f = bn(block.bn2[k], conv(block.conv2[k], f))
        f = np.maximum(f + bn(block.proj_bn[k], conv(block.proj[k], ref)), 0.0)
        ref = np.concatenate([ref, f], axis=-1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_unknown_spatial_size():
    inp = keras.Input((None, None, 2))
    model = keras.Model(inp, RenseBlock(2, 3)(inp))
    assert tuple(model.output.shape) == (None, None, None, 8)
    assert model(np.zeros((1, 5, 9, 2), "float32")).shape == (1, 5, 9, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"units": 0, "growth_rate": 4}, "units must be a positive integer"),
        ({"units": 2.5, "growth_rate": 4}, "units must be a positive integer"),
        ({"units": 2, "growth_rate": -1}, "growth_rate must be a positive integer"),
        ({"units": 2, "growth_rate": 4, "kernel_size": 4}, "kernel_size must be a positive odd"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RenseBlock(**kwargs)


@pytest.mark.parametrize("connection", ["dense", "residual"])
def test_ablation_connections_keep_the_output_width(connection, tmp_path):
    check_layer(RenseBlock, {"units": 2, "growth_rate": 3, "connection": connection},
                (6, 6, 2), tmp_path, (6, 6, 8))


def test_ablation_connection_parameter_counts():
    """dense: the Rense unit without its projection; residual: unit k widens to c + k*g."""
    c, g, n, k = 5, 4, 3, 3
    dense, residual = RenseBlock(n, g, connection="dense"), RenseBlock(n, g, connection="residual")
    dense.build((None, 8, 8, c))
    residual.build((None, 8, 8, c))
    want_dense = want_residual = 0
    for unit in range(n):
        c_in, c_out = c + unit * g, c + (unit + 1) * g
        want_dense += k * k * c_in * g + k * k * g * g + 2 * 4 * g
        want_residual += (k * k * c_in * g + k * k * g * c_out + c_in * c_out
                          + 4 * g + 2 * 4 * c_out)
    assert dense.count_params() == want_dense
    assert residual.count_params() == want_residual
    with pytest.raises(ValueError, match="rense, dense, residual"):
        RenseBlock(1, 2, connection="both")
