"""Reading a training run directory: the one reader, beside its writer (``zoo.training``).

    from zoo.training.rundir import read_run
    run = read_run("runs/ichnet-synthetic")        # RunContents
    run.model, run.model_name, run.labels, run.config, run.dataset_info

What the writer (``zoo.training.run`` and its training loop) leaves in a run directory, and what is
read here: ``config.yaml`` (the resolved TrainConfig: model, model_kwargs, image_size,
cache_dir, windows), ``metrics.json`` (with ``labels`` in output order), ``best.weights.h5``
(during training), ``model.keras`` (the best weights, when training finished), and through
``cache_dir`` the cache's ``dataset.json`` (labels, image_size, channels, windows, task).

One fallback order, for every caller (``python -m zoo.export --run-dir``, ``zoo.evaluate``,
``zoo.explain``):

* labels: ``labels=``; ``labels.txt``; ``metrics.json`` "labels"; ``config.yaml`` "labels";
  ``dataset.json`` "labels" (the run directory's, then the cache's);
* model: ``model.keras`` as saved, unless ``weights=`` or ``input_shape=`` is given; otherwise
  the registered model ``config.yaml`` names, built with its ``model_kwargs``, the labels'
  count and the input shape, loaded with ``weights=``, else ``best.weights.h5``, else
  ``model.keras``;
* input shape (only when the model is rebuilt): ``input_shape=``; ``dataset.json`` image_size
  and channels; ``config.yaml`` image_size (square) with ``dataset.json`` channels.

TensorFlow and Keras are imported only when a model is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import cells
from pipelines.yamlfile import read_yaml

__all__ = ["read_run", "read_config", "RunContents"]

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
LABELS_FILE = "labels.txt"
KERAS_FILE = "model.keras"
BEST_WEIGHTS_FILE = "best.weights.h5"
DATASET_FILE = "dataset.json"


@dataclass(frozen=True)
class RunContents:
    """What a run directory holds, read once.

    ``keras_path`` is the ``model.keras`` the model was loaded from (None when it was rebuilt);
    ``weights`` is the file loaded into a rebuilt model (None when loaded from ``model.keras``).
    """

    path: Path
    model: object
    model_name: str
    labels: tuple
    config: dict = field(default_factory=dict)
    dataset_info: dict = field(default_factory=dict)
    keras_path: Path | None = None
    weights: Path | None = None


def read_config(run_dir) -> dict:
    """``run_dir/config.yaml`` as a dict; FileNotFoundError naming the file when it is absent."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; pass a training run directory written by train.py "
            f"(holding {CONFIG_FILE} and {KERAS_FILE} or {BEST_WEIGHTS_FILE})."
        )
    return read_yaml(path, "run config") or {}


def read_run(run_dir, *, weights=None, input_shape=None, labels=None) -> RunContents:
    """The model, its name, labels, config and dataset facts of a training run directory.

    Args:
        run_dir: the run directory (``train.py --output-dir``).
        weights: a ``.weights.h5`` / ``.keras`` file to load instead of the run's own.
        input_shape: (H, W, C) to rebuild the model at, instead of the run's.
        labels: class names in output order, instead of the run's.

    Raises FileNotFoundError (no config.yaml, no weights) or ValueError (labels or input shape
    not found), each one sentence naming what is missing and how to supply it.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    info = _dataset_info(run_dir, config)
    name = _model_name(config)
    labels = tuple(labels) if labels else _labels(run_dir, config, info)
    if not labels:
        raise ValueError(
            f"Cannot tell the labels of the run in {run_dir} (no {LABELS_FILE}, {METRICS_FILE}, "
            f"config labels or {DATASET_FILE}); pass them with --labels a,b,c."
        )

    keras_path = run_dir / KERAS_FILE
    if weights is None and input_shape is None and keras_path.is_file():
        import keras

        import zoo  # noqa: F401  (registers the zoo's layers for deserialisation)

        model = keras.saving.load_model(str(keras_path), compile=False)
        return RunContents(path=run_dir, model=model, model_name=name or model.name,
                           labels=labels, config=config, dataset_info=info,
                           keras_path=keras_path)

    weights = Path(weights) if weights is not None else _first_file(
        run_dir, (BEST_WEIGHTS_FILE, KERAS_FILE))
    if weights is None:
        raise FileNotFoundError(
            f"{run_dir} holds neither {KERAS_FILE} nor {BEST_WEIGHTS_FILE}; let the training run "
            "finish, or pass a weights file with --weights FILE."
        )
    input_shape = tuple(input_shape) if input_shape else _input_shape(config, info)
    if input_shape is None:
        raise ValueError(
            f"Cannot tell the input shape of the model in {run_dir} (no image_size and channels "
            f"in {CONFIG_FILE} or {DATASET_FILE}); pass it with --input-shape H,W,C."
        )
    if not name:
        raise ValueError(
            f"{run_dir / CONFIG_FILE} names no model; add 'model: <registered name>' to it."
        )
    import zoo
    from zoo.models.weights import load_weights

    model = zoo.get_model(name, input_shape=input_shape, num_classes=len(labels),
                          **dict(config.get("model_kwargs") or {}))
    load_weights(model, weights)
    return RunContents(path=run_dir, model=model, model_name=name, labels=labels, config=config,
                       dataset_info=info, weights=weights)


def _model_name(config: dict) -> str | None:
    name = config.get("model")
    name = name.get("name") if isinstance(name, dict) else name
    return str(name) if name else None


def _first_file(run_dir: Path, names) -> Path | None:
    for n in names:
        if (run_dir / n).is_file():
            return run_dir / n
    return None


def _dataset_info(run_dir: Path, config: dict) -> dict:
    """The run directory's dataset.json, else the cache's (``config.yaml`` cache_dir), else {}."""
    cache = Path(config["cache_dir"]) / DATASET_FILE if config.get("cache_dir") else None
    for candidate in (run_dir / DATASET_FILE, cache):
        if candidate is not None and candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


def _labels(run_dir: Path, config: dict, info: dict) -> tuple | None:
    if (run_dir / LABELS_FILE).is_file():
        return tuple(cells.read_lines(run_dir / LABELS_FILE))
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        data = json.loads(metrics.read_text())
        if isinstance(data, dict) and data.get("labels"):
            return tuple(data["labels"])
    for source in (config, info):
        if source.get("labels"):
            return tuple(source["labels"])
    return None


def _input_shape(config: dict, info: dict) -> tuple[int, int, int] | None:
    channels = int(info.get("channels") or 0)
    size = info.get("image_size") or config.get("image_size")
    if not size or not channels:
        return None
    height, width = (size, size) if isinstance(size, (int, float, str)) else size
    return int(height), int(width), channels
