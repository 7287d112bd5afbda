"""Training recipes: a typed record for every registered model, resolved into the config (flags
and config files win, the saved config says where each value came from), shown by
``zoo.model_info`` and the model card."""

import dataclasses
import importlib.util

import pytest
import yaml

import zoo
from tests.conftest import ROOT
from zoo import card as card_mod
from zoo.recipes import COMPACT_RECIPE, DEFAULT_RECIPE, ICHNET_RECIPE, RECIPE_FIELDS, Recipe
from zoo.training import config as config_mod
from zoo.training.config import TrainConfig


def _train_module():
    spec = importlib.util.spec_from_file_location("train_cli_recipes", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_recipe_is_a_frozen_typed_record_that_checks_its_values():
    recipe = Recipe()
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.lr = 1.0
    assert {f.name for f in dataclasses.fields(Recipe)} == set(RECIPE_FIELDS) | {"input_sizes", "model_kwargs"}
    assert recipe.replace(lr=0.1, early_stop=4) == Recipe(lr=0.1, early_stop=4) != recipe
    with pytest.raises(ValueError, match="early_stop must be 0"):
        Recipe(early_stop=-1)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        Recipe(epochs=0)
    with pytest.raises(TypeError, match="recipe must be a zoo.recipes.Recipe"):
        zoo.register_model(recipe={"lr": 0.1})(lambda: None)


def test_the_default_recipe_is_what_train_py_always_did():
    assert DEFAULT_RECIPE == Recipe(optimizer="adamw", lr=3e-3, batch_size=32, warmup_epochs=0.5,
                                    schedule="cosine", weight_decay=1e-4, label_smoothing=0.0,
                                    augment=True, epochs=20, early_stop=0, input_sizes=(96,))
    # a family without a tuned recipe trains as train.py always did
    assert zoo.model_entry("resnet18").recipe == DEFAULT_RECIPE
    cfg = TrainConfig(model="resnet18")
    assert {k: getattr(cfg, k) for k in RECIPE_FIELDS} == {
        k: getattr(DEFAULT_RECIPE, k) for k in RECIPE_FIELDS}
    assert cfg.origins == {k: "recipe resnet18" for k in RECIPE_FIELDS}


def test_the_compact_paper_families_train_with_their_tuned_recipe():
    for name in ("ichnet_small", "rensenet", "rensenet_small", "myositisnet"):
        assert zoo.model_entry(name).recipe == COMPACT_RECIPE, name
    # ichnet's own: the compact recipe with output stride 8 at its sizes
    assert zoo.model_entry("ichnet").recipe == ICHNET_RECIPE == COMPACT_RECIPE.replace(
        model_kwargs={"output_stride": 8})
    cfg = TrainConfig()  # the main job: ichnet
    assert (cfg.epochs, cfg.early_stop, cfg.weight_decay, cfg.label_smoothing) == (60, 15, 0.05, 0.1)
    assert cfg.origins == {k: "recipe ichnet" for k in RECIPE_FIELDS}
    assert COMPACT_RECIPE.input_sizes == (32, 64)


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_registered_model_has_a_recipe_and_model_info_shows_it(name):
    recipe = zoo.model_entry(name).recipe
    assert isinstance(recipe, Recipe)
    info = zoo.model_info(name, count_params=False)
    assert info["recipe"] == recipe.to_dict()
    assert set(info["recipe"]) == set(RECIPE_FIELDS) | {"input_sizes", "model_kwargs"}


def test_flags_override_the_recipe_and_the_saved_config_names_each_origin(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"batch_size": 16}))
    cfg, _ = _train_module().config_from_args(
        ["--config", str(path), "--model", "rensenet", "--lr", "0.01", "--early-stop", "3"])
    recipe = zoo.model_entry("rensenet").recipe
    assert (cfg.lr, cfg.origins["lr"]) == (0.01, "flag")
    assert (cfg.early_stop, cfg.origins["early_stop"]) == (3, "flag")
    assert (cfg.batch_size, cfg.origins["batch_size"]) == (16, f"config file {path}")
    assert (cfg.epochs, cfg.origins["epochs"]) == (recipe.epochs, "recipe rensenet")
    assert (cfg.augment, cfg.origins["augment"]) == (recipe.augment, "recipe rensenet")
    cfg.validate()
    cfg.save_yaml(tmp_path / "saved.yaml")
    saved = yaml.safe_load((tmp_path / "saved.yaml").read_text())
    assert saved["lr"] == 0.01 and saved["epochs"] == recipe.epochs
    assert saved["origins"]["epochs"] == "recipe rensenet" and saved["origins"]["lr"] == "flag"
    assert TrainConfig.from_yaml(tmp_path / "saved.yaml") == cfg


def test_a_declared_recipe_fills_only_the_unset_options(monkeypatch):
    declared = Recipe(lr=0.02, epochs=7, early_stop=2, augment="flip", optimizer="sgd")
    monkeypatch.setattr(config_mod, "recipe_for", lambda model: (declared, f"recipe {model}"))
    cfg = TrainConfig(model="ichnet", epochs=3).validate()
    assert (cfg.lr, cfg.early_stop, cfg.augment, cfg.optimizer) == (0.02, 2, "flip", "sgd")
    assert cfg.epochs == 3 and cfg.origins["epochs"] == "given"
    assert cfg.origins["lr"] == "recipe ichnet"


def test_bad_early_stop_is_one_sentence():
    with pytest.raises(config_mod.ConfigError, match="--early-stop must be 0 .off. or a positive"):
        TrainConfig(early_stop=-2).validate()


def test_the_model_card_shows_the_recipe_as_a_table():
    recipe = zoo.model_info("ichnet", count_params=False)["recipe"]
    text = card_mod.render_card({"model_name": "ichnet", "version": 1, "recipe": recipe})
    assert "### Training recipe" in text
    assert "| lr | 0.003 |" in text and "| early_stop | 15 |" in text
    assert "| weight_decay | 0.05 |" in text and "| input_sizes | 32, 64 |" in text
    assert "| model_kwargs | output_stride: 8 (inputs up to 64 px) |" in text
    plain = card_mod.render_card({"model_name": "resnet18", "version": 1,
                                  "recipe": zoo.model_info("resnet18", count_params=False)["recipe"]})
    assert "| model_kwargs | none (the model's defaults) |" in plain


def test_an_export_card_of_a_registered_model_carries_its_recipe():
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    card = card_mod.build_export_card(model, model_name="ichnet", version=1, labels=["a", "b"],
                                      config={}, input_shape=(8, 8, 1), signatures={})
    assert card["recipe"] == zoo.model_info("ichnet", count_params=False)["recipe"]
    assert "### Training recipe" in card_mod.render_card(card)


def test_a_recipe_architecture_holds_at_the_sizes_it_was_tuned_at(tmp_path):
    def kwargs(**values):
        cfg = TrainConfig(model="ichnet", **values)
        return cfg.model_kwargs, cfg.origins.get("model_kwargs")

    tuned = "recipe ichnet: output_stride (at <= 64 px)"
    assert kwargs(image_size=64) == ({"output_stride": 8}, tuned)
    assert kwargs(image_size=32) == ({"output_stride": 8}, tuned)
    # a fine-tune and a pretraining run too: the shipped 64 px backbone was pretrained in that form
    assert kwargs(image_size=64, weights="medical") == ({"output_stride": 8}, tuned)
    assert kwargs(image_size=64, pretrain=str(tmp_path)) == ({"output_stride": 8}, tuned)
    # above the tuned sizes, the model's own defaults
    assert kwargs(image_size=96) == ({}, None)
    assert kwargs(image_size=128, weights="medical") == ({}, None)
    # the user's keys win and merge with the recipe's (a flag's JSON text too)
    assert kwargs(image_size=64, model_kwargs={"output_stride": 16}) == ({"output_stride": 16}, None)
    assert kwargs(image_size=64, model_kwargs='{"dropout": 0.1}') == ({"output_stride": 8, "dropout": 0.1}, tuned)
    assert TrainConfig(model="ichnet_small", image_size=64).model_kwargs == {}
    # the saved config reloads to the same config (a resume sees the same architecture)
    cfg = TrainConfig(model="ichnet", image_size=64, output_dir=str(tmp_path)).validate()
    cfg.save_yaml(tmp_path / "config.yaml")
    assert TrainConfig.from_yaml(tmp_path / "config.yaml") == cfg
    # and the model train.py builds from it is the stride-8 form: 8x8 features at 64 px
    from zoo.training import _registry_model_fn

    model = _registry_model_fn(cfg)((64, 64, 1), 2, "softmax")
    assert tuple(model.get_layer("features").output.shape[1:3]) == (8, 8)
    assert zoo.get_model("ichnet", input_shape=(64, 64, 1), num_classes=2).get_layer(
        "features").output.shape[1:3] == (4, 4)  # get_model itself keeps the paper's stride 16


def test_recipe_model_kwargs_are_checked():
    with pytest.raises(ValueError, match="model_kwargs must be a mapping"):
        Recipe(model_kwargs=["output_stride", 8])
    with pytest.raises(ValueError, match="model_kwargs may not set num_classes"):
        Recipe(model_kwargs={"num_classes": 3})
    assert Recipe(model_kwargs={"dropout": 0.3}).architecture(128) == {}
    assert Recipe(model_kwargs={"dropout": 0.3}).architecture(96) == {"dropout": 0.3}


def test_train_py_builds_and_announces_the_architecture_the_recipe_adds(tmp_path, capsys):
    import keras

    import train
    from tests.tiny_cache import head_ct_cache

    cache = head_ct_cache(tmp_path / "ct")
    run = tmp_path / "run"
    argv = ["--cache-dir", str(cache), "--dataset", "synthetic", "--model", "ichnet", "--image-size", "32",
            "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2", "--bn-calibration-batches", "1",
            "--no-augment", "--output-dir", str(run), "--quiet", "--no-export"]
    assert train.main(argv) == 0, capsys.readouterr().err[-2000:]
    out = capsys.readouterr().out
    assert ("Architecture output_stride=8 (recipe ichnet: output_stride (at <= 64 px); "
            "--model-kwargs overrides).") in out.splitlines()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model_kwargs"] == {"output_stride": 8}
    assert config["origins"]["model_kwargs"].startswith("recipe ichnet: output_stride")
    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert tuple(model.get_layer("features").output.shape[1:3]) == (4, 4)  # 32 px / 8
