"""The model being evaluated or explained, wherever it was saved: an export or a training run.

    source = load_model_source("saved_models/ichnet/1")   # or runs/<run>
    source.predict(images); source.keras_model(); source.spec; source.windows

:class:`ModelSource` is what :mod:`zoo.evaluation`, :mod:`zoo.explain` and :mod:`zoo.card` read:
names, labels, input shape, task, the preprocessing spec, and the model itself (the export's
signatures for predictions, the Keras model for Grad-CAM and parameter counts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from zoo.export import load_export
from zoo.export.signatures import resolve_spec
from zoo.training.rundir import read_run

__all__ = ["EvaluationError", "ModelSource", "load_model_source"]


class EvaluationError(ValueError):
    """Bad input to the evaluation; the message is one sentence naming the thing and the fix."""


@dataclass
class ModelSource:
    """What evaluation and explanation need from a trained model, wherever it was saved.

    ``predict_fn(images, batch_size)`` is the export's own prediction (its signatures); without
    one, :meth:`predict` runs the Keras model. ``model`` is the Keras model when it is already in
    memory (a run's), else None until :meth:`keras_model` loads it from ``keras_path``.
    """

    kind: str  # "export" or "run"
    path: Path
    model_name: str
    labels: tuple
    input_shape: tuple
    task: str
    config: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)
    card: dict | None = None
    spec: object = None  # pipelines.preprocessing.Preprocessing: how a file becomes its input
    served: object = None  # zoo.export.ExportedModel, for exports
    predict_fn: Callable | None = None
    model: object = None
    keras_path: Path | None = None

    def __post_init__(self):
        if self.spec is None:  # derived from the facts: CT windows -> a CT spec, else pictures
            facts = (self.preprocessing or {}).get("training_data") or self.preprocessing
            self.spec = resolve_spec(tuple(self.input_shape), facts or None, self.config)

    def predict(self, images, batch_size: int = 32) -> np.ndarray:
        if self.predict_fn is not None:
            return np.asarray(self.predict_fn(images, batch_size), dtype=np.float64)
        model = self.keras_model()
        out = model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
        return np.asarray(out, dtype=np.float64)

    def keras_model(self):
        """The Keras model (needed for Grad-CAM): a run's model.keras / best weights, or the
        ``assets.extra/model.keras`` that exports carry."""
        if self.model is None:
            if self.keras_path is None:
                raise EvaluationError(
                    f"{self.path} holds no Keras model (assets.extra/model.keras); re-export it "
                    "with the current zoo.export, or pass the training run directory instead."
                )
            self.model = keras.saving.load_model(str(self.keras_path), compile=False)
        return self.model

    @property
    def windows(self):
        """CT windows the model was trained with ("brain,subdural,bone"), or None."""
        if self.spec is not None:
            return self.spec.windows
        for source in (self.preprocessing.get("training_data", {}), self.preprocessing,
                       self.config):
            if isinstance(source, dict) and source.get("windows"):
                return source["windows"]
        return None

    @property
    def version_dir(self) -> Path | None:
        return self.path if self.kind == "export" else None


def _task_from(labels, activation, declared=None) -> str:
    if declared in ("multi-label", "multi-class", "binary"):
        return declared
    if activation == "softmax":
        return "binary" if len(labels) == 2 else "multi-class"
    return "binary" if len(labels) == 1 else "multi-label"


def _activation_of(model) -> str | None:
    try:
        act = model.get_layer("predictions").activation
    except (ValueError, AttributeError):
        return None
    return getattr(act, "__name__", None)


def load_model_source(path) -> ModelSource:
    """An export (``saved_models/<m>/<v>`` or ``saved_models/<m>``) or a training run dir."""
    path = Path(path)
    if not path.exists():
        raise EvaluationError(
            f"--model {path} does not exist; pass an export (saved_models/<model>/<version>) or a "
            "training run directory."
        )
    is_export = (path / "saved_model.pb").is_file() or any(
        p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()
        for p in (path.iterdir() if path.is_dir() else [])
    )
    if is_export:
        return _load_export_source(path)
    if (path / "config.yaml").is_file():
        return _load_run_source(path)
    raise EvaluationError(
        f"--model {path} is neither an export (no saved_model.pb) nor a training run directory "
        "(no config.yaml); pass saved_models/<model>/<version> or runs/<run>."
    )


def _load_export_source(path: Path) -> ModelSource:
    served = load_export(path)
    extra = served.path / "assets.extra"
    training = served.preprocessing.get("training_data", {}) or {}
    declared = (served.card or {}).get("task") if not training.get("activation") else None
    task = _task_from(served.labels, training.get("activation"), declared)
    keras_path = extra / "model.keras"
    return ModelSource(
        kind="export",
        path=served.path,
        model_name=served.model_name,
        labels=tuple(served.labels),
        input_shape=tuple(served.input_shape),
        task=task,
        config=served.config or {},
        preprocessing=served.preprocessing,
        card=served.card,
        spec=served.spec,
        served=served,
        predict_fn=served.predict,
        keras_path=keras_path if keras_path.is_file() else None,
    )


def _load_run_source(path: Path) -> ModelSource:
    try:
        run = read_run(path)
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(str(err)) from None
    info = run.dataset_info
    prep = {"training_data": {k: info[k] for k in ("dataset", "windows", "image_size", "channels")
                              if k in info}}
    if not prep["training_data"].get("windows") and run.config.get("windows"):
        prep["training_data"]["windows"] = run.config["windows"]
    model = run.model
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    spec = resolve_spec(input_shape, info.get("preprocessing") or prep["training_data"], run.config)
    return ModelSource(
        kind="run", path=path, model_name=run.model_name, labels=tuple(run.labels),
        input_shape=input_shape, spec=spec,
        task=_task_from(run.labels, _activation_of(model), info.get("task")), config=run.config,
        preprocessing=prep, card=None, model=model, keras_path=run.keras_path,
    )
