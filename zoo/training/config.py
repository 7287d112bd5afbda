"""The training configuration: one dataclass, read from YAML or flags, saved with every run.

Everything here is cheap (no TensorFlow): :meth:`TrainConfig.validate` runs before any data is
generated or any model is built, so a bad value costs the user a sentence, not a traceback.

The optimisation options a model's recipe sets (:data:`zoo.recipes.RECIPE_FIELDS`: optimizer,
lr, batch size, warmup, schedule, weight decay, label smoothing, augmentation, epochs, early
stopping) default to None, "from the recipe": a config is resolved when it is made, each unset
option taking the value of ``zoo.model_info(model)["recipe"]``, and ``origins`` records where
every one of them came from ("flag", "config file ...", "given", "recipe <model>"). The config
saved with a run therefore shows the effective values and their sources. A recipe's architecture
settings (``Recipe.model_kwargs``) go under the user's ``model_kwargs`` for a run at the sizes the
recipe was tuned at (``origins["model_kwargs"]`` says so).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.datasets import get_adapter, list_adapters
from pipelines.fs import atomic_write_text
from pipelines.manifest import PATH_ID_PREFIX, data_dir_id, shown_data_dir
from pipelines.yamlfile import YamlFileError, dump_yaml, read_yaml
from zoo.models.common import MIN_SIZE
from zoo.models.medical import MEDICAL
from zoo.recipes import (
    DEFAULT_RECIPE,
    RECIPE_FIELDS,
    RESERVED_MODEL_KWARGS,
    Recipe,
    off_or_positive,
)
from zoo.registry import list_models, model_entry

__all__ = [
    "ConfigError",
    "TrainConfig",
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "STRATEGIES",
    "AUGMENT_ON",
    "SWITCHES",
    "switch",
    "resolve_switch",
    "RESUME_KEYS",
    "recipe_for",
]

LOSSES = ("auto", "bce", "ce", "focal")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
AUGMENT_ON = ("device", "cpu")
SWITCHES = ("auto", "on", "off")  # --jit-compile, --mixed-precision: auto = on for GPUs only

# Fields that must agree between a checkpoint and the command resuming it (a run continued with a
# different model, data or optimisation would silently be a different experiment).
RESUME_KEYS = (
    "dataset", "image_size", "windows", "val_fraction", "test_fraction", "augment",
    "model", "model_kwargs", "weights", "batch_size", "lr", "optimizer", "weight_decay",
    "schedule", "warmup_epochs", "loss", "focal_gamma", "class_weights", "label_smoothing",
    "mixed_precision", "seed", "steps_per_epoch", "bn_calibration_batches",
    "pretrain", "sampling", "freeze_backbone", "backbone_lr_mult", "options", "ema",
    "mixup", "cutmix",
)
SAMPLINGS = ("shuffle", "class", "source")


class ConfigError(ValueError):
    """A value the user gave is wrong; the message is one sentence naming it and the fix."""


def recipe_for(model) -> tuple[Recipe, str]:
    """``(recipe, where it comes from)`` for a model name: the registered model's recipe, or the
    default recipe for a name the registry does not know (a ``model_fn`` passed to ``run``)."""
    if isinstance(model, str) and model in list_models():
        return model_entry(model).recipe, f"recipe {model}"
    return DEFAULT_RECIPE, "default recipe"


@dataclass
class TrainConfig:
    """Every knob of a training run; defaults are the README's main job (``python train.py``).

    Options left None are taken from the model's recipe when the config is made (see the module
    docstring); ``origins`` says where each recipe option came from.
    """

    # data
    dataset: str = "synthetic"
    data_dir: str | None = None
    cache_dir: str | None = None
    image_size: int = 96
    windows: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    eval_split: str = "val"
    augment: bool | str | None = None    # None: from the recipe (True = the default spec)
    augment_on: str = "device"  # "device": inside the train step; "cpu": in the tf.data map
    prepare_workers: int = 1
    options: dict = field(default_factory=dict)  # the adapter's read_manifest options (--option)
    pretrain: str | None = None        # a corpus (pipelines.corpus): pretrain a backbone on it
    sampling: str = "auto"             # shuffle | class | source; auto = source for --pretrain
    # model
    model: str = "ichnet"
    model_kwargs: dict = field(default_factory=dict)
    weights: str | None = None        # None, "medical" (shipped backbone) or a local file
    allow_overlap: bool = False        # fine-tune a backbone on one of its corpus sources
    freeze_backbone: bool = False      # linear probe: only the head trains
    backbone_lr_mult: float = 1.0      # the backbone's learning rate = lr * this
    # optimisation
    # (None = from the model's recipe, zoo.recipes; the default recipe: 20 epochs, batch 32,
    # lr 3e-3, adamw, weight decay 1e-4, cosine, 0.5 warmup epochs, no smoothing, no early stop)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    early_stop: int | None = None        # patience in epochs on the scored split; 0 = off
    ema: float | None = None             # weight-average horizon in epochs; 0 = off
    mixup: float | None = None           # MixUp Beta(alpha, alpha) in the train step; 0 = off
    cutmix: float | None = None          # CutMix Beta parameter in the train step; 0 = off
    loss: str = "auto"
    focal_gamma: float = 2.0
    class_weights: str | list | None = None
    label_smoothing: float | None = None
    mixed_precision: bool | str = "auto"  # auto | on | off (true/false still read as on/off)
    jit_compile: bool | str = "auto"      # auto | on | off: XLA for the train step
    seed: int = 0
    steps_per_epoch: int | None = None
    # 32 batches of >= 32 images: with 8 (256 images) the statistics of a small set's model moved
    # its test accuracy by up to 3 points between draws (BreastMNIST, docs/TRAINING.md)
    bn_calibration_batches: int = 32
    # distribution
    strategy: str = "auto"
    cpu_replicas: int = 0
    # output
    output_dir: str | None = None
    export_dir: str = "saved_models"
    export: bool = True
    checkpoint_steps: int = 50
    keep_checkpoints: int = 2
    fresh: bool = False
    keep_path_ids: bool = False  # record --data-dir itself (else its id) and keep path ids in the cache
    verbose: int = 1
    # where each recipe option came from: "flag", "config file ...", "given", "recipe <model>"
    origins: dict = field(default_factory=dict)

    def __post_init__(self):
        self.origins = dict(self.origins or {})
        self.apply_recipe(*recipe_for(self.model))

    def apply_recipe(self, recipe: Recipe, where: str = "recipe") -> TrainConfig:
        """Fill every recipe option that is None from ``recipe`` (``origins[option] = where``);
        options already set keep their value and their recorded origin ("given" if none). The
        recipe's architecture settings (:meth:`zoo.recipes.Recipe.architecture`: at the sizes it
        was tuned at) go under ``model_kwargs``, the user's keys winning."""
        for key in RECIPE_FIELDS:
            if getattr(self, key) is None:
                setattr(self, key, getattr(recipe, key))
                self.origins[key] = where
            else:
                self.origins.setdefault(key, "given")
        arch = recipe.architecture(self.image_size)
        if arch and isinstance(self.model_kwargs, str):
            self.model_kwargs = parse_model_kwargs(self.model_kwargs)
        if arch and isinstance(self.model_kwargs, dict):
            added = {k: v for k, v in arch.items() if k not in self.model_kwargs}
            if added:
                self.model_kwargs = {**added, **self.model_kwargs}
                self.origins["model_kwargs"] = (f"{where}: {', '.join(sorted(added))} "
                                                f"(at <= {max(recipe.input_sizes)} px)")
        return self

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping; an unknown key is an error that names the close matches."""
        if not isinstance(values, dict):
            raise ConfigError(f"The {source} must be a mapping of option: value, got {type(values).__name__}.")
        known = cls.fields()
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=2, cutoff=0.5)
                hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
                raise ConfigError(f"Unknown option {key!r} in the {source}{hint}; valid options: {', '.join(known)}.")
        if str(values.get("data_dir") or "").startswith(PATH_ID_PREFIX):
            values = {**values, "data_dir": None}  # a saved config.yaml withheld the path
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        return cls.from_dict(load_yaml(path), source=f"config file {os.fspath(path)}")

    @classmethod
    def coerce(cls, config: TrainConfig | dict | None) -> TrainConfig:
        if config is None:
            return cls()
        if isinstance(config, cls):
            return dataclasses.replace(config)
        return cls.from_dict(dict(config))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def shown_data_dir(self) -> str | None:
        """``data_dir`` as files and logs show it: its id (:func:`pipelines.manifest.data_dir_id`),
        since a folder's path often names a patient, unless ``keep_path_ids`` or it is the
        adapter's own default folder (a generated phantom, named by us)."""
        if self.data_dir is None:
            return None
        keep = self.keep_path_ids or self.data_dir == _default_data_dir(self.dataset)
        return shown_data_dir(self.data_dir, keep)

    def shown_weights(self) -> str | None:
        """``weights`` as files and logs show it: None and ``"medical"`` as they are; a file as
        ``sha256:<id of its folder>/<file name>`` (the folder's path may name a patient), unless
        ``keep_path_ids``."""
        if self.weights is None or self.weights == MEDICAL or self.keep_path_ids:
            return self.weights
        path = Path(os.fspath(self.weights))
        if str(path).startswith(PATH_ID_PREFIX):
            return str(path)
        return f"{data_dir_id(path.parent)}/{path.name}"

    def to_record(self) -> dict[str, Any]:
        """:meth:`to_dict` as files record it (config.yaml, the export): ``data_dir`` as
        :meth:`shown_data_dir` and ``weights`` as :meth:`shown_weights` say."""
        return {**self.to_dict(), "data_dir": self.shown_data_dir(), "weights": self.shown_weights()}

    def save_yaml(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, dump_yaml(self.to_record()))

    # ---- checks that need no TensorFlow ----------------------------------------------------
    def validate(self) -> TrainConfig:
        """Check types and ranges; returns self. Registry/dataset names are checked in run()."""
        def need(cond, message):
            if not cond:
                raise ConfigError(message)

        if isinstance(self.model_kwargs, str):
            self.model_kwargs = parse_model_kwargs(self.model_kwargs)
        need(isinstance(self.options, dict), f"options must be a mapping of the dataset adapter's options such as {{'channels': 3}}, got {self.options!r}.")
        need(isinstance(self.model_kwargs, dict), f"model_kwargs must be a JSON object such as '{{\"dropout\": 0.2}}', got {self.model_kwargs!r}.")
        _check_weights(self.weights)
        reserved = RESERVED_MODEL_KWARGS & set(self.model_kwargs)
        need(not reserved, f"model_kwargs may not set {', '.join(sorted(reserved))}: use --image-size, the dataset's labels and --weights instead.")
        for name in ("image_size", "epochs", "batch_size", "checkpoint_steps", "keep_checkpoints", "prepare_workers"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                 f"{_flag(name)} must be a positive integer, got {value!r}.")
        need(self.steps_per_epoch is None or (isinstance(self.steps_per_epoch, int) and self.steps_per_epoch >= 1),
             f"--steps-per-epoch must be a positive integer, got {self.steps_per_epoch!r}.")
        need(isinstance(self.bn_calibration_batches, int) and self.bn_calibration_batches >= 0,
             f"--bn-calibration-batches must be 0 (off) or a positive integer, got {self.bn_calibration_batches!r}.")
        need(isinstance(self.early_stop, int) and not isinstance(self.early_stop, bool) and self.early_stop >= 0,
             f"--early-stop must be 0 (off) or a positive number of epochs, got {self.early_stop!r}.")
        need(isinstance(self.cpu_replicas, int) and self.cpu_replicas >= 0,
             f"--cpu-replicas must be 0 (off) or a positive integer, got {self.cpu_replicas!r}.")
        need(off_or_positive(self.ema),
             f"--ema must be 0 (off) or a positive number of epochs, got {self.ema!r}.")
        for name in ("mixup", "cutmix"):
            value = getattr(self, name)
            need(off_or_positive(value),
                 f"{_flag(name)} must be 0 (off) or a positive Beta parameter, got {value!r}.")
        need(not ((self.mixup or self.cutmix) and self.pretrain),
             "--mixup/--cutmix blend images across a batch, and a --pretrain corpus batch mixes "
             "sources with separate heads; set them to 0 for pretraining.")
        need(float(self.lr) > 0, f"--lr must be positive, got {self.lr!r}.")
        need(float(self.weight_decay) >= 0, f"--weight-decay must be >= 0, got {self.weight_decay!r}.")
        need(float(self.warmup_epochs) >= 0, f"--warmup-epochs must be >= 0, got {self.warmup_epochs!r}.")
        need(0.0 <= float(self.label_smoothing) < 1.0, f"--label-smoothing must be in [0, 1), got {self.label_smoothing!r}.")
        need(float(self.focal_gamma) >= 0, f"--focal-gamma must be >= 0, got {self.focal_gamma!r}.")
        for name in ("val_fraction", "test_fraction"):
            value = float(getattr(self, name))
            need(0.0 <= value < 1.0, f"{_flag(name)} must be in [0, 1), got {value!r}.")
        need(float(self.val_fraction) + float(self.test_fraction) < 1.0,
             "--val-fraction plus --test-fraction must leave some data for training (sum below 1).")
        _choice("loss", self.loss, LOSSES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("sampling", self.sampling, ("auto",) + SAMPLINGS)
        need(float(self.backbone_lr_mult) >= 0,
             f"--backbone-lr-mult must be >= 0 (0 freezes the backbone), got {self.backbone_lr_mult!r}.")
        _choice("augment_on", self.augment_on, AUGMENT_ON)
        self.mixed_precision = switch("mixed_precision", self.mixed_precision)
        self.jit_compile = switch("jit_compile", self.jit_compile)
        self.class_weights = parse_class_weights(self.class_weights)
        need(self.image_size >= MIN_SIZE,
             f"--image-size {self.image_size} is below the models' minimum of {MIN_SIZE} pixels; pass --image-size {MIN_SIZE} or more.")
        if self.data_dir is not None and self.data_dir != _default_data_dir(self.dataset):
            need(os.path.exists(self.data_dir),
                 f"Data directory {self.data_dir!r} does not exist; pass --data-dir pointing at the dataset (or omit it for --dataset synthetic).")
        return self


def _check_weights(weights) -> None:
    """None, "medical" or an existing local file (whether "medical" is shipped for the model
    is checked in ``run``, with the model's name and input size)."""
    if weights is None or weights == MEDICAL:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ConfigError(f"--weights must be 'medical' or the path of a local weights file, got {weights!r}.")
    text = os.fspath(weights)
    if text.startswith(PATH_ID_PREFIX):
        raise ConfigError(f"--weights {text} is a saved config's stand-in for a withheld path; pass "
                          "--weights with the file's path (or 'medical').")
    if text in ("imagenet",):
        raise ConfigError(f"--weights {text} would need a download, and medzoo never downloads; pass "
                          "'medical' (the shipped medical backbones) or the path of a local file.")
    if not os.path.isfile(text):
        raise ConfigError(f"Weights file {text!r} does not exist; pass --weights medical or the path "
                          "of a local .weights.h5 / .keras file.")


def _default_data_dir(dataset: str):
    """The folder the ``dataset`` adapter generates itself (synthetic), else None."""
    return get_adapter(dataset).default_data_dir if dataset in list_adapters() else None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _choice(name, value, choices):
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{_flag(name)} {value!r} is not one of {', '.join(choices)}{hint}.")


def switch(name: str, value) -> str:
    """An auto/on/off option, also from the booleans (and their YAML and flag spellings) that
    ``--mixed-precision`` took before it had an auto setting."""
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        text = "on"
    elif text in ("false", "0", "no", "none"):
        text = "off"
    _choice(name, text, SWITCHES)
    return text


def resolve_switch(value, gpu: bool) -> bool:
    """auto -> on for GPUs and off for CPUs, where XLA and reduced precision slowed training
    down (docs/RESULTS.md, Speed); on/off as given."""
    value = switch("switch", value)
    return gpu if value == "auto" else value == "on"


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {os.fspath(path)!r} does not exist; pass the path of a YAML file.")
    try:
        data = read_yaml(path, "config file") or {}
    except YamlFileError as err:
        raise ConfigError(str(err)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {os.fspath(path)!r} must hold a mapping of option: value.")
    return data


def parse_model_kwargs(text: str) -> dict:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        raise ConfigError(f"--model-kwargs is not valid JSON ({err.msg}); pass an object such as '{{\"dropout\": 0.2}}'.") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--model-kwargs must be a JSON object such as '{{\"dropout\": 0.2}}', got {text!r}.")
    return value


def parse_class_weights(value):
    """``None``, ``"balanced"`` or a list of positive floats (also from ``"1,2.5,3"``)."""
    if value is None or value == "" or value == "none":
        return None
    if value == "balanced":
        return "balanced"
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = None
    try:
        weights = [float(p) for p in parts]
    except (TypeError, ValueError):
        weights = None
    if not weights or any(w <= 0 for w in weights):
        raise ConfigError(f"--class-weights must be 'balanced' or a comma list of positive numbers, one per label, got {value!r}.")
    return weights
