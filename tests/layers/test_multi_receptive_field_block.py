"""MultiReceptiveFieldBlock: layer checks over its configurations, residual rule, receptive fields."""

import keras
import numpy as np
import pytest

from tests.helpers import check_layer
from zoo.layers.multi_receptive_field_block import MultiReceptiveFieldBlock


@pytest.mark.parametrize(
    "kwargs, input_shape, output_shape",
    [
        ({"filters": 8}, (16, 16, 8), (16, 16, 8)),  # dilations 1, 2, 3; residual
        ({"filters": 12, "kernel_sizes": (3, 5, 7), "dilations": 1}, (16, 16, 8), (16, 16, 12)),
        ({"filters": 16, "strides": 2, "dilations": (1, 2)}, (15, 16, 8), (8, 8, 16)),
        ({"filters": 8, "merge": "sum", "activation": "relu6"}, (12, 12, 8), (12, 12, 8)),
        ({"filters": 4, "kernel_sizes": (3, 5), "dilations": (2, 1)}, (12, 12, 4), (12, 12, 4)),
    ],
)
def test_check_layer(kwargs, input_shape, output_shape, tmp_path):
    check_layer(MultiReceptiveFieldBlock, kwargs, input_shape, tmp_path, output_shape)


def test_branches_pair_kernel_sizes_and_dilations():
    assert MultiReceptiveFieldBlock(4).branches == ((3, 1), (3, 2), (3, 3))
    assert MultiReceptiveFieldBlock(4, kernel_sizes=(3, 5), dilations=1).branches == (
        (3, 1),
        (5, 1),
    )
    assert MultiReceptiveFieldBlock(4, kernel_sizes=(3, 5), dilations=(2, 1)).branches == (
        (3, 2),
        (5, 1),
    )


def _count_params(block, cin):
    block.build((None, 8, 8, cin))
    return block.count_params()


def test_parameter_count_of_concat_and_sum():
    cin, filters = 6, 10
    # 3 depthwise 3x3 kernels + 3 BNs (4 each per channel) + pointwise + fusion BN
    concat = 3 * 9 * cin + 3 * 4 * cin + 3 * cin * filters + 4 * filters
    summed = 3 * 9 * cin + 3 * 4 * cin + cin * filters + 4 * filters
    assert _count_params(MultiReceptiveFieldBlock(filters), cin) == concat
    assert _count_params(MultiReceptiveFieldBlock(filters, merge="sum"), cin) == summed


def test_residual_only_when_shapes_allow():
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")

    def zeroed(block):
        block.build(x.shape)
        # Zero the fusion BN's scale and shift: the computed branch contributes nothing.
        gamma, beta, mean, var = block.fuse_norm.get_weights()
        block.fuse_norm.set_weights([0 * gamma, 0 * beta, mean, var])
        return keras.ops.convert_to_numpy(block(x, training=False))

    np.testing.assert_allclose(zeroed(MultiReceptiveFieldBlock(4)), x, atol=1e-6)
    assert np.all(zeroed(MultiReceptiveFieldBlock(4, residual=False)) == 0)
    assert np.all(zeroed(MultiReceptiveFieldBlock(6)) == 0)  # channels change
    assert np.all(zeroed(MultiReceptiveFieldBlock(4, strides=2)) == 0)  # stride 2


@pytest.mark.parametrize(
    "kwargs, reach",
    [
        ({"dilations": 1}, 1),  # one 3x3 branch: reaches 1 pixel away
        ({"dilations": (1, 2, 3)}, 3),  # 3x3 dilated 3: reaches 3 pixels away
        ({"kernel_sizes": (3, 5, 7), "dilations": 1}, 3),
        ({"kernel_sizes": 5, "dilations": (1, 2)}, 4),
    ],
)
def test_receptive_field(kwargs, reach):
    """An impulse spreads exactly as far as the widest branch sees, no farther."""
    block = MultiReceptiveFieldBlock(2, residual=False, **kwargs)
    x = np.zeros((1, 15, 15, 2), "float32")
    block.build(x.shape)
    base = keras.ops.convert_to_numpy(block(x, training=False))
    x[0, 7, 7, :] = 5.0
    delta = np.abs(keras.ops.convert_to_numpy(block(x, training=False)) - base).sum(axis=(0, 3))
    rows, cols = np.nonzero(delta > 1e-6)
    assert max(np.abs(rows - 7).max(), np.abs(cols - 7).max()) == reach


def test_stride_subsamples_the_stride1_output():
    x = np.random.default_rng(1).normal(size=(2, 9, 10, 3)).astype("float32")
    one = MultiReceptiveFieldBlock(5, residual=False)
    two = MultiReceptiveFieldBlock(5, strides=2)
    one.build(x.shape)
    two.build(x.shape)
    two.set_weights(one.get_weights())
    full = keras.ops.convert_to_numpy(one(x, training=False))
    half = keras.ops.convert_to_numpy(two(x, training=False))
    assert half.shape == (2, 5, 5, 5)
    np.testing.assert_allclose(half, full[:, ::2, ::2, :], atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filters": 0}, "filters must be a positive integer"),
        ({"filters": 4, "dilations": ()}, "dilations must be a positive integer"),
        ({"filters": 4, "dilations": (1, 0)}, "dilations must be a positive integer"),
        ({"filters": 4, "kernel_sizes": "3"}, "kernel_sizes must be a positive integer"),
        ({"filters": 4, "kernel_sizes": (3, 5), "dilations": (1, 2, 3)}, "same length"),
        ({"filters": 4, "strides": 0}, "strides must be a positive integer"),
        ({"filters": 4, "merge": "add"}, "merge must be 'concat' or 'sum'"),
        ({"filters": 4, "activation": "relux"}, "not a Keras activation"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiReceptiveFieldBlock(**kwargs)
