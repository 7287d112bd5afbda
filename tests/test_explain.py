import keras
import numpy as np
from keras import ops

from zoo.explain import energy_in_mask, grad_cam, pointing_game


class _Gate(keras.layers.Layer):
    """Multiplies its input by a fixed spatial mask: the score only reads inside the mask."""

    def __init__(self, mask, **kwargs):
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, "float32")[None, :, :, None]

    def call(self, x):
        return x * ops.convert_to_tensor(self.mask)


class _SplitByRegion(_Gate):
    """Channel 0 = image inside a fixed region, channel 1 = image outside it."""

    def call(self, x):
        inside = super().call(x)
        return ops.concatenate([inside, x - inside], axis=-1)


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


def _gated_model(mask, channels=3):
    """image -> features (the image, repeated) -> gate(mask) -> GAP -> Dense(1) with weight 4."""
    inp = keras.Input((32, 32, 1), name="image")
    f = keras.layers.Concatenate(name="features")([inp] * channels)
    pooled = keras.layers.GlobalAveragePooling2D()(_Gate(mask)(f))
    dense = keras.layers.Dense(1, name="head_logits")
    out = keras.layers.Activation("sigmoid", name="predictions")(dense(pooled))
    model = keras.Model(inp, out)
    dense.set_weights([np.full((channels, 1), 4.0, "float32"), np.zeros(1, "float32")])
    return model


def test_layercam_keeps_the_position_that_gradcam_averages_away():
    # The score depends on the features only inside the mask. Grad-CAM averages the gradient
    # over the map, so its weight is the same everywhere and its map is the features themselves
    # (brightest outside); LayerCAM weights each position by its own gradient.
    from zoo.explain import class_activation_map

    mask = np.zeros((32, 32), bool)
    mask[18:26, 4:12] = True
    model = _gated_model(mask)
    rng = np.random.default_rng(1)
    x = rng.uniform(0.1, 0.5, size=(2, 32, 32, 1)).astype("float32")
    x[:, 2:5, 25:28] = 1.0
    masks = np.repeat(mask[None], 2, 0)
    assert np.all(pointing_game(grad_cam(model, x), masks) == 0.0)
    heat = class_activation_map(model, x, 0, method="layercam")
    assert np.all(pointing_game(heat, masks) == 1.0)
    # NumPy reference: d score / d A = 4 * mask / (h * w) per channel, so the LayerCAM map is
    # relu(sum_c relu(grad) * A) = 3 * 4 / 1024 * mask * image, scaled to a maximum of 1
    ref = mask[None] * x[..., 0]
    ref = ref / ref.reshape(2, -1).max(axis=1)[:, None, None]
    np.testing.assert_allclose(heat, ref, atol=1e-5)


def _two_scale_model():
    """features at 32x32 and an average-pooled 16x16 layer ``coarse`` that the score reads."""
    inp = keras.Input((32, 32, 1), name="image")
    f = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inp)
    c = keras.layers.AveragePooling2D(2, name="coarse")(f)
    c = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="coarse_conv")(c)
    logits = keras.layers.Dense(2, name="head_logits")(keras.layers.GlobalAveragePooling2D()(c))
    return keras.Model(inp, keras.layers.Activation("sigmoid", name="predictions")(logits))


def test_multi_layer_fusion_is_the_geometric_mean_or_the_maximum_of_the_scaled_maps():
    from zoo.explain import class_activation_map

    keras.utils.set_random_seed(3)
    model = _two_scale_model()
    x = np.random.default_rng(2).random((3, 32, 32, 1)).astype("float32")
    one = {name: class_activation_map(model, x, 1, method="layercam", feature_layer=name)
           for name in ("features", "coarse")}
    both = ["features", "coarse"]
    prod = class_activation_map(model, x, 1, method="layercam", feature_layer=both)
    ref = np.sqrt(one["features"] * one["coarse"])
    ref = ref / ref.reshape(3, -1).max(axis=1)[:, None, None]
    np.testing.assert_allclose(prod, ref, atol=1e-4)
    top = class_activation_map(model, x, 1, method="layercam", feature_layer=both, fusion="max")
    ref = np.maximum(one["features"], one["coarse"])
    np.testing.assert_allclose(top, ref / ref.reshape(3, -1).max(axis=1)[:, None, None], atol=1e-5)
    # without upsampling, several layers meet on the finest grid
    small = class_activation_map(model, x, 1, method="gradcam", feature_layer=both, upsample=False)
    assert small.shape == (3, 32, 32) and np.isfinite(small).all()


def test_scale_layers_are_the_stage_outputs():
    import zoo
    from zoo.explain import scale_layers

    assert scale_layers(zoo.get_model("ichnet", input_shape=(64, 64, 3))) == [
        "stage1_mrf1", "stage2_mrf1", "stage3_mrf2", "features"]
    assert scale_layers(zoo.get_model("rensenet_small", input_shape=(64, 64, 1))) == [
        "stage1_rense", "stage2_rense", "stage3_rense", "features"]  # not the full-size stem
    # a head's class evidence map after `features` is not a scale; odd sizes still work
    lse = zoo.get_model("ichnet_small", input_shape=(70, 90, 3), pooling="lse")
    assert scale_layers(lse)[-1] == "features" and len(scale_layers(lse)) == 4


def test_bad_method_layer_and_fusion_are_one_sentence():
    import pytest

    from zoo.explain import class_activation_map

    model = _two_scale_model()
    x = np.zeros((1, 32, 32, 1), "float32")
    with pytest.raises(ValueError, match="method 'cam' is unknown"):
        class_activation_map(model, x, method="cam")
    with pytest.raises(ValueError, match="fusion 'mean' is unknown"):
        class_activation_map(model, x, feature_layer=["features", "coarse"], fusion="mean")
    with pytest.raises(ValueError, match="has no layer 'stage9'"):
        class_activation_map(model, x, feature_layer=["features", "stage9"])
