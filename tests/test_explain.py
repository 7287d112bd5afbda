import keras
import numpy as np
from keras import ops

from zoo.explain import energy_in_mask, grad_cam, pointing_game


class _SplitByRegion(keras.layers.Layer):
    """Channel 0 = image inside a fixed region, channel 1 = image outside it."""

    def __init__(self, mask, **kwargs):
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, "float32")[None, :, :, None]

    def call(self, x):
        m = ops.convert_to_tensor(self.mask)
        return ops.concatenate([x * m, x * (1.0 - m)], axis=-1)


def _region_model(mask):
    inp = keras.Input((32, 32, 1), name="image")
    f = keras.layers.Identity(name="features")(_SplitByRegion(mask)(inp))
    g = keras.layers.GlobalAveragePooling2D()(f)
    dense = keras.layers.Dense(2, name="head_logits")
    logits = dense(g)
    out = keras.layers.Activation("sigmoid", name="predictions")(logits)
    model = keras.Model(inp, out)
    # class 0 reads only the region, class 1 only the outside
    dense.set_weights([np.array([[5.0, 0.0], [0.0, 5.0]], "float32"), np.zeros(2, "float32")])
    return model


def test_grad_cam_points_at_the_region_the_answer_depends_on():
    mask = np.zeros((32, 32), bool)
    mask[4:12, 20:28] = True
    model = _region_model(mask)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.6, size=(3, 32, 32, 1)).astype("float32")
    x[:, 28:31, 2:5] = 1.0  # the brightest pixels lie OUTSIDE the region
    for plus in (False, True):
        heat = grad_cam(model, x, class_index=0, plus=plus)
        assert heat.shape == (3, 32, 32)
        assert np.all(pointing_game(heat, np.repeat(mask[None], 3, 0)) == 1.0)
        assert np.all(energy_in_mask(heat, np.repeat(mask[None], 3, 0)) > 0.95)
        assert heat.max() == 1.0 and heat.min() >= 0.0
    other = grad_cam(model, x, class_index=1)
    assert np.all(pointing_game(other, np.repeat(mask[None], 3, 0)) == 0.0)


def test_pointing_game_with_empty_mask_is_undefined():
    heat = np.random.default_rng(0).random((2, 8, 8))
    masks = np.zeros((2, 8, 8))
    masks[0, 0, 0] = 1
    out = pointing_game(heat, masks)
    assert np.isnan(out[1]) and out[0] in (0.0, 1.0)
