"""GlobalLogSumExpPooling2D: NumPy reference, the mean..max bounds, stability, bad arguments."""

import keras
import numpy as np
import pytest

from tests.helpers import check_layer
from zoo.layers.log_sum_exp_pooling import GlobalLogSumExpPooling2D


def test_check_layer(tmp_path):
    check_layer(GlobalLogSumExpPooling2D, {"r": 3.0}, (6, 5, 4), tmp_path, expected_output_shape=(4,))


def _reference(x, r):
    b, h, w, c = x.shape
    flat = x.reshape(b, h * w, c).astype(np.float64)
    return np.log(np.mean(np.exp(r * flat), axis=1)) / r


@pytest.mark.parametrize("r", [0.5, 5.0, 20.0])
def test_matches_numpy_and_lies_between_mean_and_max(r):
    x = np.random.default_rng(0).normal(size=(3, 7, 5, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(GlobalLogSumExpPooling2D(r)(x))
    np.testing.assert_allclose(y, _reference(x, r), rtol=1e-5, atol=1e-5)
    mean, peak = x.mean(axis=(1, 2)), x.max(axis=(1, 2))
    assert np.all(y >= mean - 1e-5) and np.all(y <= peak + 1e-5)
    assert np.all(peak - y <= np.log(7 * 5) / r + 1e-5)


def test_sharpness_moves_from_mean_to_max():
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    soft = keras.ops.convert_to_numpy(GlobalLogSumExpPooling2D(1e-3)(x))
    hard = keras.ops.convert_to_numpy(GlobalLogSumExpPooling2D(1e3)(x))
    np.testing.assert_allclose(soft, x.mean(axis=(1, 2)), atol=1e-2)
    np.testing.assert_allclose(hard, x.max(axis=(1, 2)), atol=1e-2)


def test_stable_for_large_values_and_gradient_follows_the_peak():
    import tensorflow as tf

    x = np.zeros((1, 4, 4, 1), "float32")
    x[0, 1, 2, 0] = 500.0  # exp(5 * 500) overflows float32 without the max shift
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = GlobalLogSumExpPooling2D(5.0)(x)
    assert np.isfinite(y.numpy()).all()
    np.testing.assert_allclose(y.numpy()[0, 0], 500.0 + np.log(1 / 16) / 5, rtol=1e-6)
    g = tape.gradient(y, x).numpy()[0, ..., 0]
    assert np.unravel_index(np.argmax(g), g.shape) == (1, 2)
    np.testing.assert_allclose(g.sum(), 1.0, rtol=1e-5)  # softmax weights over positions


@pytest.mark.parametrize("r", [0, -1.0, float("inf"), float("nan"), True, "5"])
def test_bad_r_is_one_sentence(r):
    with pytest.raises(ValueError, match="r must be a positive finite number"):
        GlobalLogSumExpPooling2D(r)


def test_rejects_non_image_input():
    with pytest.raises(ValueError, match=r"expects \[batch, height, width, channels\]"):
        GlobalLogSumExpPooling2D()(keras.Input((8, 3)))
