"""``train.py --option KEY=VALUE``: the dataset adapter's options, from flags or the config file,
checked against the adapter before any work, and part of the default cache's key only when
given."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os

import pytest
import yaml

from tests.conftest import ROOT
from zoo.training import ConfigError, TrainConfig, default_cache_dir, run


def _train_module():
    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_option_flags_add_to_and_override_the_config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"dataset": "folder", "options": {"channels": 1, "labels": "a,b"}}))
    cfg, _ = _train_module().config_from_args(["--config", str(path), "--option", "channels=3",
                                               "--option", "patient_pattern=^(P\\d+)"])
    assert cfg.options == {"channels": "3", "labels": "a,b", "patient_pattern": "^(P\\d+)"}
    assert _train_module().config_from_args([])[0].options == {}
    with pytest.raises(SystemExit):
        _train_module().config_from_args(["--option", "channels"])  # not KEY=VALUE


def test_the_default_cache_key_changes_only_when_options_are_given():
    cfg = TrainConfig(dataset="folder", data_dir="/data/pbc", image_size=64)
    old = json.dumps([os.path.abspath(cfg.data_dir), cfg.image_size, cfg.windows,
                      cfg.val_fraction, cfg.test_fraction, cfg.seed])  # the key before options
    assert default_cache_dir(cfg).endswith(f"folder-64px-{hashlib.sha256(old.encode()).hexdigest()[:8]}")
    colour = TrainConfig(dataset="folder", data_dir="/data/pbc", image_size=64, options={"channels": "3"})
    assert default_cache_dir(colour) != default_cache_dir(cfg)


def test_an_unknown_option_stops_the_run_with_one_sentence(tmp_path, capsys):
    (tmp_path / "data" / "a").mkdir(parents=True)
    config = {"dataset": "folder", "data_dir": str(tmp_path / "data"), "options": {"bogus": "3"},
              "output_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(ConfigError) as err:
        run(config)
    assert str(err.value) == ("--option: The folder dataset has no option 'bogus'; its options are "
                              "labels, classes, patient_pattern, channels.")
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    code = _train_module().main(["--dataset", "folder", "--data-dir", str(tmp_path / "data"),
                                 "--option", "chanels=3", "--output-dir", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "train.py: error: --option: The folder dataset has no option 'chanels' (did you mean "
        "'channels'?); its options are labels, classes, patient_pattern, channels.")
