"""The config: YAML defaults, flag overrides, and one-sentence errors for bad values."""

import importlib.util

import pytest
import yaml

from tests.conftest import ROOT
from zoo.training.config import ConfigError, TrainConfig, parse_class_weights


def _train_module():
    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_yaml_gives_defaults_and_flags_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"epochs": 2, "lr": 0.01, "model": "rensenet",
                                    "model_kwargs": {"dropout": 0.3}}))
    cli = _train_module()
    cfg, _ = cli.config_from_args(["--config", str(path), "--epochs", "5", "--class-weights", "1,2"])
    assert cfg.epochs == 5            # flag wins
    assert cfg.lr == 0.01             # from the file
    assert cfg.model == "rensenet"
    assert cfg.model_kwargs == {"dropout": 0.3}
    assert cfg.batch_size == TrainConfig().batch_size   # built-in default
    cfg.validate()
    assert cfg.class_weights == [1.0, 2.0]
    # the saved config round-trips into the same config
    cfg.save_yaml(tmp_path / "saved.yaml")
    assert TrainConfig.from_yaml(tmp_path / "saved.yaml") == cfg


def test_unknown_option_in_yaml_names_the_close_match(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match=r"Unknown option 'epoch'.*did you mean 'epochs'"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize("values, needle", [
    ({"image_size": 16}, "--image-size 16 is below the models' minimum of 32"),
    ({"lr": 0}, "--lr must be positive"),
    ({"loss": "focall"}, "did you mean 'focal'"),
    ({"strategy": "mirror"}, "did you mean 'mirrored'"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, "leave some data for training"),
    ({"model_kwargs": "{dropout: 1}"}, "--model-kwargs is not valid JSON"),
    ({"model_kwargs": {"num_classes": 3}}, "may not set num_classes"),
    ({"data_dir": "/nonexistent/medzoo-data"}, "Data directory '/nonexistent/medzoo-data' does not exist"),
    ({"class_weights": "1,-2"}, "--class-weights must be 'balanced'"),
    ({"weights": "imagenet"}, "--weights imagenet would need a download"),
    ({"weights": "/nonexistent/b.weights.h5"}, "Weights file '/nonexistent/b.weights.h5' does not exist"),
    ({"weights": "sha256:0123456789abcdef/b.weights.h5"}, "stand-in for a withheld path"),
])
def test_bad_values_are_one_clear_sentence(values, needle):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**values).validate()
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_weights_medical_is_accepted_and_a_file_is_recorded_without_its_folder(tmp_path):
    assert TrainConfig(weights="medical").validate().to_record()["weights"] == "medical"
    path = tmp_path / "Jane Doe" / "backbone.weights.h5"
    path.parent.mkdir()
    path.write_bytes(b"x")
    shown = TrainConfig(weights=str(path)).validate().to_record()["weights"]
    assert shown.startswith("sha256:") and shown.endswith("/backbone.weights.h5")
    assert "Jane" not in shown
    kept = TrainConfig(weights=str(path), keep_path_ids=True).to_record()["weights"]
    assert kept == str(path)


def test_class_weights_forms():
    assert parse_class_weights(None) is None
    assert parse_class_weights("balanced") == "balanced"
    assert parse_class_weights([1, 2]) == [1.0, 2.0]


@pytest.mark.parametrize("argv, needle", [
    (["--model", "ichnett"], "Unknown model 'ichnett'. Did you mean 'ichnet'"),
    (["--dataset", "rsnaa", "--data-dir", "."], "Unknown dataset 'rsnaa' (did you mean 'rsna'"),
    (["--dataset", "rsna"], "--dataset rsna needs --data-dir"),
    (["--dataset", "rsna", "--data-dir", "/nonexistent/rsna"], "Data directory '/nonexistent/rsna' does not exist"),
    (["--image-size", "24"], "--image-size 24 is below the models' minimum of 32"),
    (["--config", "/nonexistent/x.yaml"], "Config file '/nonexistent/x.yaml' does not exist"),
])
def test_bad_flags_exit_2_with_one_sentence_before_any_work(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # nothing may be written here
    cli = _train_module()
    assert cli.main(argv + ["--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train.py: error: ") and needle in err, err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_example_configs_load_and_validate():
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        if "sources" in (yaml.safe_load(path.read_text()) or {}):
            continue  # a corpus spec for python -m pipelines.corpus, not a training config
        cfg = TrainConfig.from_yaml(path)
        cfg.data_dir = None          # the examples point at data this machine may not have
        cfg.validate()
    main_job = TrainConfig.from_yaml(ROOT / "configs" / "ichnet-synthetic.yaml")
    defaults = TrainConfig()
    for key, value in yaml.safe_load((ROOT / "configs" / "ichnet-synthetic.yaml").read_text()).items():
        assert getattr(defaults, key) == getattr(main_job, key) == value, key
    # and nothing the recipe resolves differs between the spelled-out file and no flags at all
    for key in defaults.origins:
        assert getattr(defaults, key) == getattr(main_job, key), key


def test_list_models_prints_the_registry(capsys):
    import zoo

    assert _train_module().main(["--list-models"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert names == zoo.list_models()
    assert "multi-label" in out


@pytest.mark.parametrize("given, expected", [
    (True, "on"), (False, "off"), ("true", "on"), ("false", "off"), ("auto", "auto"),
    ("on", "on"), ("OFF", "off"),
])
def test_mixed_precision_and_jit_compile_take_auto_on_off_and_the_old_booleans(given, expected):
    cfg = TrainConfig(mixed_precision=given, jit_compile=given).validate()
    assert cfg.mixed_precision == expected and cfg.jit_compile == expected


def test_auto_is_on_for_gpus_and_off_for_cpus():
    from zoo.training.config import resolve_switch

    assert resolve_switch("auto", True) and not resolve_switch("auto", False)
    assert resolve_switch("on", False) and not resolve_switch("off", True)
    with pytest.raises(ConfigError, match="--jit-compile 'fast' is not one of auto, on, off"):
        TrainConfig(jit_compile="fast").validate()


def test_the_flags_reach_the_config():
    cli = _train_module()
    cfg, _ = cli.config_from_args(["--jit-compile", "on", "--mixed-precision", "--augment-on", "cpu"])
    assert (cfg.jit_compile, cfg.mixed_precision, cfg.augment_on) == ("on", "on", "cpu")
    help_text = cli.build_parser().format_help()
    assert "--jit-compile" in help_text and "--augment-on" in help_text
    cfg, _ = cli.config_from_args([])
    assert (cfg.jit_compile, cfg.mixed_precision, cfg.augment_on) == ("auto", "auto", "device")
