import keras
import numpy as np
import pytest

import zoo
from zoo.labels import BINARY
from zoo.layers import EdgeConservativePooling, RenseBlock
from zoo.models.rensenet import RENSENET_SPECS, build_rensenet


def test_default_is_binary_softmax_with_a_card():
    model = zoo.get_model("rensenet", input_shape=(32, 32, 1))
    assert model.layers[0].name == "image"
    assert model.output_shape == (None, 2)
    assert model.get_layer("predictions").activation is keras.activations.softmax
    assert model.get_layer("features").output.shape == (None, 2, 2, 161)  # stride 16
    info = zoo.model_info("rensenet")
    assert info["task"] == "binary" and tuple(info["labels"]) == BINARY
    assert info["doi"] == "10.3390/cancers16030570"
    assert info["from_paper"] and info["our_reading"] and info["feature_layer"] == "features"
    assert info["input_shape"] == (256, 256, 1)
    assert 100_000 < info["parameters"] < 1_000_000


def test_odd_sizes_and_three_channels():
    model = zoo.get_model("rensenet_small", input_shape=(33, 47, 3), num_classes=3)
    assert model.get_layer("features").output.shape == (None, 3, 3, 80)  # ceil(33/16), ceil(47/16)
    x = np.random.default_rng(0).uniform(size=(2, 33, 47, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 3) and np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_every_downsampling_is_edge_conservative():
    spec = RENSENET_SPECS["rensenet_small"]
    model = build_rensenet(input_shape=(64, 64, 1), **spec)
    for layer in model.layers:
        assert not isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D))
        if isinstance(layer, keras.layers.Conv2D):
            assert tuple(layer.strides) == (1, 1), layer.name
    pools = [la.name for la in model.layers if isinstance(la, EdgeConservativePooling)]
    blocks = [la.name for la in model.layers if isinstance(la, RenseBlock)]
    assert pools == ["stem_pool", "stage1_pool", "stage2_pool", "stage3_pool"]
    assert blocks == [f"stage{s}_rense" for s in range(1, 5)]
    assert [model.get_layer(b).units for b in blocks] == list(spec["units"])


def test_one_pixel_lesion_reaches_its_feature_cell():
    """A single bright pixel changes the last feature map most in the cell that contains it."""
    keras.utils.set_random_seed(0)
    model = build_rensenet(input_shape=(64, 64, 1), **RENSENET_SPECS["rensenet_small"])
    feats = keras.Model(model.input, model.get_layer("features").output)
    x = np.full((1, 64, 64, 1), 0.3, "float32")
    lesion = x.copy()
    lesion[0, 40, 8, 0] = 1.0  # centre of cell (40 // 16, 8 // 16) = (2, 0) of the 4x4 grid
    change = np.abs(
        keras.ops.convert_to_numpy(feats(lesion, training=False))
        - keras.ops.convert_to_numpy(feats(x, training=False))
    ).sum(axis=-1)[0]
    assert change[2, 0] > 0.0
    assert np.unravel_index(change.argmax(), change.shape) == (2, 0), change


def test_growth_rate_int_and_fewer_stages():
    model = build_rensenet(input_shape=(32, 40, 1), growth_rate=4, units=(1, 2), stem=8)
    # stem 8 -> stage1 +4 = 12 -> pool 6 -> stage2 +8 = 14, stride 4
    assert model.get_layer("features").output.shape == (None, 8, 10, 14)


def test_local_weights_round_trip(tmp_path):
    kw = dict(input_shape=(32, 32, 1), **RENSENET_SPECS["rensenet_small"])
    model = build_rensenet(**kw)
    path = tmp_path / "rensenet_small.weights.h5"
    model.save_weights(path)
    again = build_rensenet(weights=str(path), **kw)
    x = np.random.default_rng(1).uniform(size=(2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), again.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"units": ()}, "units must be a non-empty sequence"),
        ({"units": (2, 0), "growth_rate": 8}, "units must be a non-empty sequence"),
        ({"units": 3}, "units must be a non-empty sequence"),
        ({"units": (1,) * 6, "growth_rate": 4}, "at most 5 stages"),
        ({"units": (2, 2)}, "one positive integer per stage"),
        ({"growth_rate": 0}, "growth_rate must be a positive integer"),
        ({"stem": 0}, "stem must be a positive integer"),
        ({"compression": 0.0}, r"compression must be a number in \(0, 1\]"),
        ({"compression": 1.5}, r"compression must be a number in \(0, 1\]"),
        ({"bn_momentum": 1.0}, r"bn_momentum must be in \[0, 1\)"),
        ({"input_shape": (16, 64, 1)}, "too small"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"activation": "relu"}, "activation must be"),
        ({"dropout": 1.0}, "dropout must be in"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_rensenet(**{"input_shape": (32, 32, 1), **kwargs})


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        zoo.get_model("rensenet", growthrate=8)


def test_edge_detail_init_reaches_every_edge_step_and_only_with_edge():
    model = zoo.get_model("rensenet_small", input_shape=(32, 32, 1), edge_detail_init="zeros")
    edges = [layer for layer in model.layers if layer.__class__.__name__ == "EdgeConservativePooling"]
    assert edges and all(layer.detail_init == "zeros" for layer in edges)
    plain = zoo.get_model("rensenet_small", input_shape=(32, 32, 1))
    assert all(layer.detail_init is None for layer in plain.layers
               if layer.__class__.__name__ == "EdgeConservativePooling")
    with pytest.raises(ValueError, match="edge_detail_init applies to downsample='edge' only"):
        zoo.get_model("rensenet_small", input_shape=(32, 32, 1), downsample="avg", edge_detail_init="zeros")
