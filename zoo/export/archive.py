"""``export_saved_model``: what goes into one export version, and the checks on what it is given.

The steps: check the model, labels, name and formats; write the SavedModel with the two
signatures (:mod:`zoo.export.signatures`), ``assets.extra/`` (config, preprocessing document,
model card through :mod:`zoo.card`, warmup records, the Keras model) and optionally
``model.onnx`` (:mod:`zoo.export.onnx`) into a hidden temporary directory; then hand it to
:mod:`zoo.export.publish`, which renames it to the next integer version and rewrites the TF
Serving configs.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

from pipelines import cells
from pipelines.preprocessing import Preprocessing
from pipelines.yamlfile import dump_yaml
from zoo import card as card_mod
from zoo.card import plain_data
from zoo.export import publish
from zoo.export.onnx import export_onnx
from zoo.export.signatures import (
    MAX_BATCH,
    preprocessing_doc,
    resolve_spec,
    serving_module,
    signature_docs,
    warmup_records,
)

FORMATS = ("savedmodel", "onnx")
WARMUP_FILE = "tf_serving_warmup_requests"
KERAS_FILE = "model.keras"  # assets.extra/model.keras (zoo.explain needs it)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------
# Checks on what the caller gave
# --------------------------------------------------------------------------------------------


def _check_model(model) -> tuple[int, int, int, int]:
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"export_saved_model needs a keras.Model, got {type(model).__name__}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "export needs one image input and one probabilities output."
        )
    shape = tuple(model.input_shape)
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ValueError(
            f"Model {model.name!r} has input shape {shape}; export needs a fixed "
            "(height, width, channels) input: build it with input_shape=(H, W, C)."
        )
    out = tuple(model.output_shape)
    if len(out) != 2 or out[1] is None:
        raise ValueError(
            f"Model {model.name!r} has output shape {out}; export needs [batch, num_classes]."
        )
    try:
        activation = model.get_layer("predictions").activation.__name__
    except (ValueError, AttributeError):
        activation = None
    if activation == "linear":
        warnings.warn(
            f"Model {model.name!r} outputs logits (its 'predictions' layer is linear); the exported "
            "'probabilities' will be those logits. Build it with activation='sigmoid' or "
            "'softmax' to serve probabilities.",
            stacklevel=3,
        )
    return int(shape[1]), int(shape[2]), int(shape[3]), int(out[1])


def _check_labels(labels, num_classes: int) -> tuple[str, ...]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise ValueError(
            f"labels must be a list of class names (one per model output), got {labels!r}."
        )
    labels = tuple(str(x) for x in labels)
    bad = [x for x in labels if not x.strip() or "\n" in x or "\r" in x]
    if bad:
        raise ValueError(f"labels must be non-empty single-line names, got {bad!r}.")
    if len(set(labels)) != len(labels):
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        raise ValueError(f"labels must be unique; {dupes} appear more than once.")
    if len(labels) != num_classes:
        raise ValueError(
            f"The model has {num_classes} outputs but {len(labels)} labels were given "
            f"({', '.join(labels)}); pass one label per output, in output order."
        )
    return labels


def _check_name(model_name) -> str:
    if not isinstance(model_name, str) or not _NAME_RE.match(model_name) or model_name.isdigit():
        raise ValueError(
            f"model_name {model_name!r} is not usable as a TF Serving model directory: use letters, "
            "digits, '_', '-' or '.', starting with a letter or digit (e.g. 'ichnet')."
        )
    return model_name


def _check_formats(formats) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(str(f).lower() for f in formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(
            f"Unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)} (the SavedModel "
            "is always written, 'onnx' adds model.onnx beside it)."
        )
    return formats


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_saved_model(
    model,
    base_dir="saved_models",
    *,
    model_name: str,
    labels,
    config=None,
    preprocessing=None,
    training_data: dict | None = None,
    card: dict | None = None,
    formats=("savedmodel",),
    max_batch: int = MAX_BATCH,
) -> Path:
    """Export ``model`` to ``base_dir/model_name/<next version>/`` and return that directory.

    Args:
        model: a keras.Model with one fixed-size image input and one [batch, K] output.
        base_dir: the TF Serving model root (``saved_models``); created if absent.
        model_name: the served name (the directory under ``base_dir``).
        labels: K class names in output order (written to ``assets/labels.txt``).
        config: the resolved training config (dict or TrainConfig), saved as
            ``assets.extra/config.yaml``.
        preprocessing: the :class:`pipelines.preprocessing.Preprocessing` the model was trained
            with (the cache's ``preprocessing.json``; its dict also works). Both signatures
            run it in the graph, and it is stored in ``assets.extra/preprocessing.json``. A
            dict of training facts (windows, ...) or None derives the spec from the model's
            input and the config's windows.
        training_data: facts about the training inputs (dataset, cache, activation, ...),
            recorded under ``training_data`` in ``assets.extra/preprocessing.json``.
        card: extra model-card fields, merged over the facts from ``zoo.model_info``.
        formats: ``"savedmodel"`` (always written) and optionally ``"onnx"`` (``model.onnx``).
        max_batch: the most images one request may hold; both signatures refuse a larger batch
            with InvalidArgument (default :data:`zoo.export.signatures.MAX_BATCH`, 64).
    """
    model_name = _check_name(model_name)
    formats = _check_formats(formats)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch={max_batch!r} must be a positive integer, e.g. {MAX_BATCH}.")
    h, w, c, k = _check_model(model)
    labels = _check_labels(labels, k)
    config = plain_data(config) if config is not None else None
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"config must be a mapping (or a TrainConfig), got {type(config).__name__}.")
    if preprocessing is not None and not isinstance(preprocessing, (dict, Preprocessing)):
        raise ValueError(
            f"preprocessing must be a pipelines.preprocessing.Preprocessing or a dict, got "
            f"{type(preprocessing).__name__}."
        )
    spec = resolve_spec((h, w, c), preprocessing, config)

    base = Path(base_dir)
    if base.exists() and not base.is_dir():
        raise NotADirectoryError(f"Export directory {base} is a file; pass a directory path.")
    model_dir = base / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    publish.clean_stale_tmp(model_dir)

    tmp = publish.new_tmp(model_dir)
    try:
        _write_version(tmp, model, model_name=model_name, labels=labels, config=config,
                       preprocessing=training_data if training_data is not None else preprocessing,
                       spec=spec, card=card, formats=formats, max_batch=max_batch,
                       planned_version=publish.next_version(model_dir))
        version_dir = publish.publish_version(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish.write_server_configs(base)
    return version_dir


def _write_version(tmp: Path, model, *, model_name, labels, config, preprocessing, spec, card,
                   formats, max_batch: int, planned_version: int) -> None:
    """Everything one version holds, written into ``tmp`` (not yet visible to TF Serving)."""
    import tensorflow as tf

    h, w, c = (int(d) for d in model.input_shape[1:])
    staging = tmp / ".staging"
    staging.mkdir()
    labels_path = staging / "labels.txt"
    cells.write_lines(labels_path, labels)

    module, signatures = serving_module(model, str(labels_path), spec, max_batch=max_batch)
    # Serving needs no gradients; tracing custom gradients (swish, GELU) would take most of
    # the export time for the bigger models.
    options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
    tf.saved_model.save(module, str(tmp), signatures=signatures, options=options)
    shutil.rmtree(staging)

    extra = tmp / "assets.extra"
    extra.mkdir(exist_ok=True)
    resolved = config if config is not None else {
        "model": model_name, "input_shape": [h, w, c], "labels": list(labels),
    }
    (extra / "config.yaml").write_text(dump_yaml(resolved))
    (extra / "preprocessing.json").write_text(
        json.dumps(preprocessing_doc((h, w, c), spec, preprocessing, config, max_batch=max_batch),
                   indent=2) + "\n"
    )
    card_mod.write_card(extra, card_mod.build_export_card(
        model, model_name=model_name, version=planned_version, labels=labels, config=config,
        input_shape=(h, w, c), signatures=signature_docs(c, len(labels), max_batch), extra=card,
    ))
    with tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as writer:
        for record in warmup_records(model_name, (h, w, c)):
            writer.write(record)
    # The Keras model itself, for Grad-CAM (python -m zoo.explain) and fine-tuning; TF
    # Serving ignores assets.extra/ beyond the warmup file.
    model.save(extra / KERAS_FILE)

    if "onnx" in formats:
        export_onnx(model, tmp / "model.onnx", (h, w, c))
