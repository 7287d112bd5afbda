"""Ablation twins (zoo.ablations): each builds, trains a step, saves, reloads and exports, and
differs from its paper form only in the switched part. Parametrised over ``twins()``."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

import zoo
from zoo.ablations import CLAIMS, SWITCHES, twins

SIZE = 32
TWINS = twins()
IDS = [f"{m}-{k}={v}" for m, kw in TWINS for k, v in kw.items()]
# every family's twins go through save / reload / export, once per (switch, value)
EXPORTED = [t for t in TWINS if t[0] in ("rensenet_small", "myositisnet", "ichnet_small")]


def _x(seed=0):
    return np.random.default_rng(seed).random((2, SIZE, SIZE, 1)).astype("float32")


def _build(name, **kwargs):
    keras.utils.set_random_seed(0)
    return zoo.get_model(name, input_shape=(SIZE, SIZE, 1), **kwargs)


def _outline(model, switched):
    """name -> output shape of every layer outside the switched part (a functional model's
    layer order may change when a branch disappears, so the comparison is by name)."""
    return {
        layer.name: tuple(layer.output.shape)
        for layer in model.layers
        if not re.search(switched, layer.name)
    }


def test_every_claim_has_twins_for_every_variant():
    assert {m for m, _ in TWINS} == {"rensenet", "rensenet_small", "myositisnet", "ichnet",
                                     "ichnet_small"}  # fmt: skip
    assert len(TWINS) == sum(len(c.models) * len(c.twin_values) for c in CLAIMS)


@pytest.mark.parametrize("name, kwargs", TWINS, ids=IDS)
def test_twin_differs_only_in_the_switched_part(name, kwargs):
    (switch, value), = kwargs.items()
    switched = SWITCHES[switch].switched
    paper, twin = _build(name), _build(name, **kwargs)
    assert _outline(twin, switched) == _outline(paper, switched)
    # the head and the widths are the same; the switched part exists in both and differs
    assert twin.get_layer("features").output.shape == paper.get_layer("features").output.shape
    ours = [la for la in paper.layers if re.search(switched, la.name)]
    theirs = [la for la in twin.layers if re.search(switched, la.name)]
    assert ours and (theirs or value == "none")
    assert [(la.name, type(la), la.count_params()) for la in ours] != [
        (la.name, type(la), la.count_params()) for la in theirs
    ]


@pytest.mark.parametrize("name, switch", [(c.models[-1], c.switch) for c in CLAIMS])
def test_the_default_is_the_paper_form(name, switch):
    paper = SWITCHES[switch].paper_value
    assert _build(name).count_params() == _build(name, **{switch: paper}).count_params()


@pytest.mark.parametrize("name, kwargs", TWINS, ids=IDS)
def test_twin_trains_one_step(name, kwargs):
    model = _build(name, **kwargs)
    k = model.output_shape[-1]
    # eager: one step does not pay for tracing a graph
    loss = "categorical_crossentropy"
    y = keras.utils.to_categorical([0, 1], k).astype("float32")
    if model.get_layer("predictions").activation is keras.activations.sigmoid:
        loss, y = "binary_crossentropy", np.zeros((2, k), "float32")
    model.compile(optimizer="adam", loss=loss, run_eagerly=True)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(_x(), y, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("name, kwargs", EXPORTED,
                         ids=[f"{m}-{k}={v}" for m, kw in EXPORTED for k, v in kw.items()])
def test_twin_saves_reloads_and_exports(name, kwargs, tmp_path):
    import tensorflow as tf

    from zoo.export import export_saved_model

    model = _build(name, **kwargs)
    x = np.round(_x(1) * 255) / 255  # 8-bit pixels: what the serving preprocessing keeps
    y = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "twin.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x, training=False)), y,
                               atol=1e-5)
    labels = zoo.model_info(name, count_params=False)["labels"]
    out = export_saved_model(model, tmp_path / "saved", model_name="twin", labels=labels)
    served = tf.saved_model.load(str(out)).signatures["serving_default"]
    got = next(iter(served(tf.constant(x)).values())).numpy()
    np.testing.assert_allclose(got, y, atol=1e-4)


@pytest.mark.parametrize("name, switch", [(m, c.switch) for c in CLAIMS for m in c.models])
def test_unknown_switch_value_lists_the_valid_values(name, switch):
    valid = SWITCHES[switch]
    with pytest.raises(ValueError) as err:
        zoo.get_model(name, input_shape=(SIZE, SIZE, 1), **{switch: "nonsense"})
    msg = str(err.value)
    assert "'nonsense'" in msg and all(v in msg for v in valid.values)
    assert msg.count(".") <= 2  # one sentence (the prefix "build_x:" has no full stop)


@pytest.mark.parametrize("name, kwargs", [
    ("ichnet", {"downsample": "avg"}),  # ichnet has no transitions to switch
    ("myositisnet", {"block": "dense"}),
    ("rensenet", {"attention": "se"}),
    ("rensenet_small", {"receptive_field": "single"}),
    ("resnet18", {"downsample": "avg"}),
])  # fmt: skip
def test_a_switch_of_another_family_is_refused(name, kwargs):
    with pytest.raises(TypeError, match=next(iter(kwargs))):
        zoo.get_model(name, input_shape=(SIZE, SIZE, 1), **kwargs)


@pytest.mark.parametrize("name, kwargs, match", [
    ("myositisnet", {"attention": "se", "channel_shared": True}, "channel_shared"),
    ("myositisnet", {"attention": "none", "channel_shared": True}, "channel_shared"),
    ("ichnet", {"receptive_field": "single", "merge": "sum"}, "merge"),
    ("ichnet_small", {"receptive_field": "single", "dilations": (1, 2)}, "dilations"),
])  # fmt: skip
def test_a_switch_that_makes_no_sense_with_other_arguments_is_refused(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.get_model(name, input_shape=(SIZE, SIZE, 1), **kwargs)


def test_attention_none_builds_without_attention():
    from zoo.models.myositisnet import build_myositisnet

    model = build_myositisnet(input_shape=(SIZE, SIZE, 1), attention=None)
    names = [la.name for la in model.layers]
    assert not [n for n in names if n.endswith(("_shrink", "_se"))]
    assert model.count_params() == _build("myositisnet", attention="none").count_params()
