"""zoo.registry: duplicates, unknown names, kwargs handling, fnmatch listing, card facts."""

from __future__ import annotations

import pytest

import zoo
from zoo import registry
from zoo.labels import CXR14


@pytest.fixture
def scratch():
    """Register throwaway variants and remove them afterwards (the registry is process-global)."""
    added = []

    def add(fn, **kw):
        registry.register_model(**kw)(fn) if kw else registry.register_model(fn)
        added.append(fn.__name__)
        return fn

    yield add
    for name in added:
        registry._REGISTRY.pop(name, None)
        registry._PARAM_CACHE.pop(name, None)


def _echo(**kwargs):
    """Echo the kwargs it was called with (a stand-in builder)."""
    return kwargs


def test_duplicate_name_raises(scratch):
    def zz_dup_model(**kwargs):
        """First registration."""
        return kwargs

    scratch(zz_dup_model)
    with pytest.raises(ValueError, match="'zz_dup_model' is already registered"):
        registry.register_model(zz_dup_model)
    # a real model name cannot be re-registered either
    with pytest.raises(ValueError, match="already registered"):

        @zoo.register_model
        def resnet18(**kwargs):
            """Would shadow the real resnet18."""
            return kwargs

    assert registry.model_entry("resnet18").module == "zoo.models.cpmid"


def test_unknown_name_gives_close_matches_and_the_list():
    with pytest.raises(KeyError) as err:
        zoo.get_model("resnet5")
    msg = str(err.value)
    assert "Unknown model 'resnet5'" in msg
    assert "Did you mean" in msg and "'resnet50'" in msg
    assert "Available models:" in msg
    for name in zoo.list_models():
        assert name in msg
    with pytest.raises(KeyError, match="Unknown model 'mobilnetv3_smal'.*'mobilenetv3_small'"):
        zoo.model_info("mobilnetv3_smal")
    with pytest.raises(KeyError) as err:
        zoo.get_model("qqqqqqqq")
    assert "Did you mean" not in str(err.value)


def test_none_kwargs_are_dropped_and_caller_overrides_defaults(scratch):
    def zz_echo(**kwargs):
        """Echo."""
        return _echo(**kwargs)

    scratch(zz_echo, info={"task": "binary"}, depth=18, num_classes=2, dropout=0.1)
    # None means "unset": the variant default wins
    assert zoo.get_model("zz_echo", depth=None, dropout=None) == {
        "depth": 18, "num_classes": 2, "dropout": 0.1,
    }  # fmt: skip
    # caller kwargs override variant defaults and add new ones
    got = zoo.get_model("zz_echo", num_classes=5, weights=None, input_shape=(64, 64, 1))
    assert got == {"depth": 18, "num_classes": 5, "dropout": 0.1, "input_shape": (64, 64, 1)}


def test_caller_kwargs_override_defaults_on_real_models():
    model = zoo.get_model("resnet18", num_classes=3, activation="sigmoid", input_shape=(32, 48, 2))
    assert model.output_shape == (None, 3)
    assert model.input_shape == (None, 32, 48, 2)
    assert model.get_layer("predictions").get_config()["activation"] == "sigmoid"
    # None-valued kwargs fall back to the variant defaults (2 softmax outputs)
    model = zoo.get_model("resnet18", num_classes=None, dropout=None, input_shape=(32, 32, 1))
    assert model.output_shape == (None, 2)
    assert model.get_layer("predictions").get_config()["activation"] == "softmax"


def test_list_models_fnmatch():
    all_names = zoo.list_models()
    assert all_names == sorted(all_names) and zoo.list_models("*") == all_names
    assert zoo.list_models("res*") == ["resnet18", "resnet34", "resnet50"]
    assert zoo.list_models("vit_*") == ["vit_small", "vit_tiny"]
    assert zoo.list_models("mobilenetv3_?????") == ["mobilenetv3_large", "mobilenetv3_small"]
    assert zoo.list_models("cxr_efficientnet_b[01]") == [
        "cxr_efficientnet_b0", "cxr_efficientnet_b1",
    ]  # fmt: skip
    assert zoo.list_models("RES*") == []  # case-sensitive, like the names
    assert zoo.list_models("no_such_*") == []


def test_model_info_fields():
    info = zoo.model_info("resnet18")
    assert info["name"] == "resnet18"
    assert info["doi"] == "10.1007/s10278-024-01226-3"
    assert "CPMID" in info["paper"]
    assert info["task"] == "binary" and info["labels"] == ("normal", "abnormal")
    assert info["input_shape"] == (224, 224, 3)
    assert info["feature_layer"] == "features"
    assert info["defaults"]["depth"] == 18
    assert info["summary"].startswith("ResNet-18")
    assert isinstance(info["parameters"], int) and info["parameters"] > 10_000_000
    assert info["from_paper"] and info["our_reading"]

    # parameters come from the model built with its defaults; summary from the docstring
    info = zoo.model_info("mobilenetv3_small")
    assert info["parameters"] == zoo.get_model("mobilenetv3_small").count_params()
    info = zoo.model_info("cxr_efficientnet_b0")
    assert info["labels"] == CXR14 and len(info["labels"]) == 14
    assert info["task"] == "multi-label" and info["input_shape"] == (224, 224, 1)


def test_logits_reach_a_model_through_the_registry():
    # None is dropped by get_model, so "logits" is the spelling that asks for raw scores
    model = zoo.get_model("ichnet_small", activation="logits", input_shape=(32, 32, 1))
    assert model.get_layer("predictions").get_config()["activation"] == "linear"
    info = zoo.model_info("vit_small", count_params=False)
    assert info["paper"] and "parameters" not in info or isinstance(info["parameters"], int)


FAMILIES = {
    "ichnet": "ichnet",
    "ichnet_small": "ichnet",
    "rensenet": "rensenet",
    "rensenet_small": "rensenet",
    "myositisnet": "myositisnet",
    "cxr_efficientnet_b0": "cxr",
    "resnet18": "cpmid",
    "vit_small": "cpmid",
    "mobilenetv3_small": "baselines",
    "densenet121": "baselines",
}


@pytest.mark.parametrize("name, family", sorted(FAMILIES.items()))
def test_every_entry_records_its_family_and_module(name, family):
    entry = zoo.model_entry(name)
    assert isinstance(entry, registry.ModelEntry) and entry.name == name
    assert entry.family == family == zoo.model_family(name)
    assert entry.module == f"zoo.models.{family}" == entry.fn.__module__
    info = zoo.model_info(name, count_params=False)
    assert info["family"] == family and info["module"] == entry.module


def test_family_lookups():
    families = zoo.list_families()
    assert families == sorted(families)
    assert set(FAMILIES.values()) <= set(families)
    assert zoo.list_models(family="ichnet") == ["ichnet", "ichnet_small"]
    assert zoo.list_models("res*", family="cpmid") == ["resnet18", "resnet34", "resnet50"]
    assert zoo.list_models(family="no_such_family") == []
    assert {zoo.model_family(n) for n in zoo.list_models()} == set(families)
    assert sorted(n for f in families for n in zoo.list_models(family=f)) == zoo.list_models()


def test_family_defaults_to_the_module_and_a_card_can_name_it(scratch):
    def zz_plain(**kwargs):
        """No card family: the module's last name."""
        return kwargs

    def zz_carded(**kwargs):
        """The card names the family."""
        return kwargs

    scratch(zz_plain)
    scratch(zz_carded, info={"family": "zz_family"})
    assert zoo.model_family("zz_plain") == __name__.rsplit(".", 1)[-1]
    assert zoo.model_entry("zz_plain").module == __name__
    assert zoo.model_family("zz_carded") == "zz_family"
    assert "zz_family" in zoo.list_families()
    assert zoo.list_models(family="zz_family") == ["zz_carded"]


def test_unknown_name_in_public_lookups():
    for lookup in (zoo.model_entry, zoo.model_family):
        with pytest.raises(KeyError, match="Unknown model 'resnet5'.*'resnet50'"):
            lookup("resnet5")


def test_nothing_outside_the_registry_reads_its_private_tables():
    """Callers use model_entry / model_family / list_families, never registry._entry."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(path.relative_to(root))
        for path in [root / "train.py", *sorted((root / "zoo").rglob("*.py"))]
        if path.name != "registry.py" and "registry._entry" in path.read_text()
    ]
    assert offenders == []
