"""The shared classifier head: average vs log-sum-exp pooling of a class evidence map."""

import keras
import numpy as np
import pytest

import zoo
from zoo.explain import grad_cam
from zoo.models.common import check_pooling


@pytest.mark.parametrize("name", ["ichnet", "rensenet_small"])
def test_lse_and_max_heads_have_the_parameters_of_the_dense_head(name):
    avg = zoo.get_model(name, input_shape=(64, 64, 1)).count_params()
    for pooling in ("lse", "max"):
        model = zoo.get_model(name, input_shape=(64, 64, 1), pooling=pooling)
        assert model.count_params() == avg, pooling
        assert model.get_layer("head_class_map").output.shape[1:3] == (
            model.get_layer("features").output.shape[1:3]
        )
        assert model.get_layer("predictions").output.shape[-1] == model.output.shape[-1]


def test_grad_cam_of_an_lse_head_is_the_rectified_class_evidence_map():
    model = zoo.get_model("ichnet_small", input_shape=(64, 64, 3), pooling="lse", lse_r=4.0)
    rng = np.random.default_rng(0)
    conv = model.get_layer("head_class_map")
    kernel, bias = conv.get_weights()  # the kernel starts at zero; give it a real map
    conv.set_weights([rng.uniform(-0.5, 1.0, size=kernel.shape).astype("float32"),
                      rng.normal(size=bias.shape).astype("float32")])
    x = rng.uniform(size=(3, 64, 64, 3)).astype("float32")
    cls = 2
    evidence = keras.Model(model.inputs, model.get_layer("head_class_map").output)(x).numpy()
    expected = np.maximum(evidence[..., cls] - conv.get_weights()[1][cls], 0.0)
    peak = expected.reshape(3, -1).max(axis=1)
    assert (peak > 0).all()  # a real map, not the all-zero case
    expected /= peak[:, None, None]
    heat = grad_cam(model, x, class_index=cls, upsample=False)
    np.testing.assert_allclose(heat, expected, atol=1e-4)
    # and the logit is the log-sum-exp of that map
    logits = keras.Model(model.inputs, model.get_layer("head_logits").output)(x).numpy()
    flat = evidence[..., cls].reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(logits[:, cls], np.log(np.exp(4.0 * flat).mean(axis=1)) / 4.0,
                               rtol=1e-4, atol=1e-4)


def test_lse_head_survives_keras_save_and_load(tmp_path):
    model = zoo.get_model("rensenet_small", input_shape=(48, 48, 1), pooling="lse")
    conv = model.get_layer("head_class_map")
    conv.set_weights([w + 0.1 for w in conv.get_weights()])
    x = np.random.default_rng(1).uniform(size=(2, 48, 48, 1)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pooling": "mean"}, "pooling must be 'avg'"),
        ({"pooling": "lse", "lse_r": 0}, "lse_r must be a positive finite number"),
        ({"pooling": "lse", "lse_r": "big"}, "lse_r must be a positive finite number"),
    ],
)
def test_bad_pooling_arguments_are_one_sentence(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_pooling(kwargs.get("pooling"), kwargs.get("lse_r", 5.0))
    with pytest.raises(ValueError, match=match):
        zoo.get_model("ichnet_small", input_shape=(32, 32, 3), **kwargs)
