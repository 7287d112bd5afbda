"""ichnet: the parameter budget against MobileNetV3-Large, layout, arguments, and that it learns."""

import keras
import numpy as np
import pytest

import zoo
from zoo.labels import RSNA_ICH
from zoo.layers.multi_receptive_field_block import MultiReceptiveFieldBlock
from zoo.models.ichnet import build_ichnet


def test_parameter_budget_is_three_percent_of_mobilenetv3_large():
    reference = keras.applications.MobileNetV3Large(weights=None, classes=1000)
    budget = int(0.03 * reference.count_params())
    assert reference.count_params() == 5_507_432
    assert budget == 165_222
    for name in zoo.list_models("ichnet*"):
        params = zoo.get_model(name).count_params()
        assert params <= budget, (name, params, budget)
    # The default is not trivially small either: it uses most of the budget.
    assert zoo.get_model("ichnet").count_params() >= 100_000


def test_defaults_and_card():
    info = zoo.model_info("ichnet")
    assert info["labels"] == RSNA_ICH
    assert info["task"] == "multi-label"
    assert tuple(info["input_shape"]) == (256, 256, 3)
    assert info["from_paper"] and info["our_reading"]
    model = zoo.get_model("ichnet")
    assert model.input.name == "image"
    assert tuple(model.output.shape) == (None, len(RSNA_ICH))
    assert model.get_layer("predictions").get_config()["activation"] == "sigmoid"
    assert tuple(model.get_layer("features").output.shape) == (None, 16, 16, 192)
    blocks = [layer for layer in model.layers if isinstance(layer, MultiReceptiveFieldBlock)]
    assert len(blocks) == 8
    # stages 1-4 at the paper's dilations; stage 5 runs at stride 16 with them doubled
    assert all(b.branches == ((3, 1), (3, 2), (3, 3)) for b in blocks[:-2])
    assert all(b.branches == ((3, 2), (3, 4), (3, 6)) for b in blocks[-2:])
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # flat


@pytest.mark.parametrize("shape", [(32, 32, 1), (40, 57, 3), (64, 64, 5)])
def test_any_input_of_32_or_more(shape):
    model = build_ichnet(input_shape=shape, num_classes=3, activation=None, stages=((8, 1), (8, 1)))
    x = np.random.default_rng(0).uniform(size=(2, *shape)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 3) and np.all(np.isfinite(y))


def test_output_stride_sets_the_feature_grid_without_changing_parameters():
    m16 = zoo.get_model("ichnet", input_shape=(64, 64, 1))
    m32 = zoo.get_model("ichnet", input_shape=(64, 64, 1), output_stride=32)
    assert tuple(m16.get_layer("features").output.shape) == (None, 4, 4, 192)
    assert tuple(m32.get_layer("features").output.shape) == (None, 2, 2, 192)
    assert m16.count_params() == m32.count_params()
    # past the output stride the last stage dilates instead (DeepLab-style)
    assert m16.get_layer("stage5_mrf1").dilations == (2, 4, 6)
    assert m32.get_layer("stage5_mrf1").dilations == (1, 2, 3)
    small = zoo.get_model("ichnet", input_shape=(32, 32, 1), output_stride=32)
    assert tuple(small.get_layer("features").output.shape) == (None, 1, 1, 192)
    m8 = zoo.get_model("ichnet", input_shape=(64, 64, 1), output_stride=8)
    assert tuple(m8.get_layer("features").output.shape) == (None, 8, 8, 192)
    assert m8.count_params() == m16.count_params()
    assert m8.get_layer("stage4_mrf1").dilations == (2, 4, 6)
    assert m8.get_layer("stage5_mrf1").dilations == (4, 8, 12)
    plain = zoo.get_model("ichnet", input_shape=(64, 64, 1), output_stride=8,
                          dilate_past_stride=False)
    assert plain.get_layer("stage5_mrf1").dilations == (1, 2, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stages": ()}, "non-empty list of \\(filters, blocks\\)"),
        ({"stages": ((8, 0),)}, "non-empty list of \\(filters, blocks\\)"),
        ({"stem": 0}, "stem and head must be positive"),
        ({"stages": ((8, 1),) * 6}, "at most 5 stages"),
        ({"output_stride": 4}, "output_stride must be 8, 16 or 32"),
        ({"input_shape": (16, 16, 3)}, "at least 32"),
        ({"activation": "relu"}, "activation must be"),
        ({"merge": "mean"}, "merge must be 'concat' or 'sum'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_ichnet(**kwargs)


def test_typo_in_a_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        zoo.get_model("ichnet", num_clases=2)


def test_learns_a_small_multi_label_task():
    """Two labels (a bright blob; a dark stripe) on 32x32 noise: the loss must fall a lot."""
    rng = np.random.default_rng(0)
    n = 64
    x = rng.uniform(0.3, 0.5, size=(n, 32, 32, 1)).astype("float32")
    y = rng.integers(0, 2, size=(n, 2)).astype("float32")
    for i in range(n):
        r, c = rng.integers(4, 24, size=2)
        if y[i, 0]:
            x[i, r : r + 6, c : c + 6] = 1.0
        if y[i, 1]:
            x[i, :, c : c + 2] = 0.0
    keras.utils.set_random_seed(0)
    model = zoo.get_model("ichnet_small", input_shape=(32, 32, 1), num_classes=2, dropout=0.0)
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy", metrics=["binary_accuracy"])
    hist = model.fit(x, y, batch_size=16, epochs=6, verbose=0).history
    # Training-mode figures: 24 steps are too few for BN's moving statistics to settle.
    assert hist["loss"][-1] < 0.3 * hist["loss"][0], hist["loss"]
    assert hist["binary_accuracy"][-1] >= 0.9, hist["binary_accuracy"]
