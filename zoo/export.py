"""Export a trained model for TensorFlow Serving (SavedModel) and for ONNX runtimes.

    from zoo.export import export_saved_model, load_export
    path = export_saved_model(model, "saved_models", model_name="ichnet", labels=RSNA_ICH)
    served = load_export(path)                 # saved_models/ichnet/<version>/
    served.predict(images)                     # float32 [N, H, W, C] in [0, 1] -> probabilities

    python -m zoo.export --model ichnet --input-shape 96,96,3 --format savedmodel onnx
    python -m zoo.export --run-dir runs/ichnet --export-dir saved_models

What an export directory holds (``<base_dir>/<model_name>/<version>/``)::

    saved_model.pb  variables/        the serving graph (two signatures, below)
    assets/labels.txt                 class names, one a line, in output order
    assets.extra/config.yaml          the resolved training config
    assets.extra/preprocessing.json   what the signatures expect and do to their inputs
    assets.extra/model_card.{md,json} card facts from the registry; metrics filled by evaluation
    assets.extra/tf_serving_warmup_requests   PredictionLog records, one per signature
    assets.extra/model.keras          the Keras model (Grad-CAM in zoo.explain, fine-tuning)
    model.onnx                        with ``formats=("savedmodel", "onnx")``

Signatures (built with ``tf.Module`` + ``tf.function``, standard TF ops only):

* ``serving_default``: ``image`` float32 ``[batch, height, width, channels]`` in [0, 1], any
  height and width (resized in the graph to the model's input size with bilinear
  ``tf.image.resize``) -> ``{"probabilities": float32 [batch, num_classes]}``.
* ``serving_bytes``: ``image_bytes`` string ``[batch]`` of encoded PNG/JPEG/BMP/GIF, decoded in
  the graph (``tf.io.decode_image``, 8-bit / 255, 16-bit PNG / 65535), converted to the model's
  channel count, resized -> ``{"probabilities": ...}``.

A new export takes the next integer version and never overwrites one. It is written to a hidden
``.tmp-*`` directory beside the versions (TF Serving only loads integer names) and renamed into
place when complete, so a crash never leaves a half-written version. ``models.config`` (a
``ModelServerConfig`` listing every exported model) and ``batching.config`` (``BatchingParameters``)
beside the models are regenerated on every export.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import errno
import json
import os
import re
import shutil
import socket
import sys
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "export_saved_model",
    "load_export",
    "ExportedModel",
    "update_model_card",
    "render_model_card",
    "write_server_configs",
    "batching_parameters_class",
    "SIGNATURE_IMAGE",
    "SIGNATURE_BYTES",
    "FORMATS",
]

SIGNATURE_IMAGE = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
OUTPUT_KEY = "probabilities"
FORMATS = ("savedmodel", "onnx")
NOT_EVALUATED = "not evaluated yet"
TMP_PREFIX = ".tmp-"
WARMUP_FILE = "tf_serving_warmup_requests"
KERAS_FILE = "model.keras"  # assets.extra/model.keras (zoo.explain needs it)
# Where the TF Serving container sees the export directory (`docker run -v $PWD/saved_models:/models`).
SERVING_ROOT = "/models"
# batching.config: TF Serving's BatchingParameters, sized for a CPU server and batches up to 32.
BATCHING = {
    "max_batch_size": 32,
    "batch_timeout_micros": 2000,
    "max_enqueued_batches": 100,
    "num_batch_threads": 4,
    "allowed_batch_sizes": (1, 2, 4, 8, 16, 32),
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------
# The serving graph
# --------------------------------------------------------------------------------------------


def _serving_module(model, labels_path: str):
    """(tf.Module holding ``model``'s variables and the labels asset, {signature: function})."""
    import tensorflow as tf

    height, width, channels = (int(d) for d in model.input_shape[1:])
    size = tf.constant([height, width], tf.int32)

    def resize(images):
        # Bilinear resize to the model's input size; skipped (bit-exact) when it already fits.
        same = tf.reduce_all(tf.equal(tf.shape(images)[1:3], size))
        out = tf.cond(
            same,
            lambda: tf.identity(images),
            lambda: tf.image.resize(images, size, method="bilinear"),
        )
        return tf.ensure_shape(out, [None, height, width, channels])

    def decode(contents):
        # One encoded image -> float32 [H, W, C] in [0, 1] at the model's input size.
        if channels in (1, 3, 4):
            image = tf.io.decode_image(
                contents, channels=channels, dtype=tf.float32, expand_animations=False
            )
        else:  # e.g. 2 CT windows: a grey image repeated over the channels
            image = tf.io.decode_image(contents, channels=1, dtype=tf.float32, expand_animations=False)
            image = tf.tile(image, [1, 1, channels])
        image = tf.ensure_shape(image, [None, None, channels])
        return resize(image[tf.newaxis])[0]

    # The model is traced once, inside `predict`, which both signatures call.
    predict = tf.function(
        lambda images: tf.cast(model(images, training=False), tf.float32),
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32)],
        autograph=False,
    )

    def serve_image(image):
        return {OUTPUT_KEY: predict(resize(image))}

    def serve_bytes(image_bytes):
        images = tf.map_fn(
            decode, image_bytes, fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32)
        )
        return {OUTPUT_KEY: predict(images)}

    # The module holds the model's variables and the labels asset, not the Keras object (as
    # keras.export.ExportArchive does) and not the functions (only the signatures are exported),
    # so saving neither walks every Keras layer nor retraces anything.
    module = tf.Module(name="zoo_serving")
    module.model_variables = list(model.variables)
    module.labels_file = tf.saved_model.Asset(labels_path)
    signatures = {
        SIGNATURE_IMAGE: tf.function(serve_image, autograph=False).get_concrete_function(
            tf.TensorSpec([None, None, None, channels], tf.float32, name="image")
        ),
        SIGNATURE_BYTES: tf.function(serve_bytes, autograph=False).get_concrete_function(
            tf.TensorSpec([None], tf.string, name="image_bytes")
        ),
    }
    return module, signatures


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
# Plain data for YAML/JSON
# --------------------------------------------------------------------------------------------


def _plain(obj):
    """Config objects -> YAML/JSON-safe builtins (dataclasses, paths, tuples, numpy scalars)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    elif hasattr(obj, "to_dict") and callable(obj.to_dict):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


# --------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------


def _registry_facts(model_name: str) -> dict:
    """Card facts from ``zoo.model_info`` when ``model_name`` is registered, else ``{}``."""
    from zoo import registry

    if model_name not in registry.list_models():
        return {}
    # Without model_info's parameter count, which builds the model at its default size (seconds
    # for the big ones); the card counts the exported model instead.
    info = registry.model_info(model_name, count_params=False)
    keep = ("summary", "paper", "doi", "task", "labels", "input_shape", "feature_layer",
            "from_paper", "our_reading", "parameters")
    facts = {k: info[k] for k in keep if k in info}
    if "input_shape" in facts:
        facts["default_input_shape"] = facts.pop("input_shape")
    if "parameters" in facts:
        facts["default_parameters"] = facts.pop("parameters")
    if "labels" in facts:
        facts["default_labels"] = facts.pop("labels")
    return _plain(facts)


def _build_card(model, *, model_name, version, labels, config, card, input_shape) -> dict:
    import keras
    import tensorflow as tf

    facts = _registry_facts(model_name)
    h, w, c = input_shape
    base = {
        "model_name": model_name,
        "version": version,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "summary": facts.pop("summary", "") or f"{model_name} image classifier",
        "registered": bool(facts),
        **facts,
        "labels": list(labels),
        "input_shape": [h, w, c],
        "parameters": int(model.count_params()),
        "training": {
            k: config[k]
            for k in ("dataset", "image_size", "windows", "epochs", "batch_size", "seed")
            if isinstance(config, dict) and k in config
        },
        "signatures": {
            SIGNATURE_IMAGE: f"image float32 [batch, H, W, {c}] in [0, 1] -> probabilities float32 "
            f"[batch, {len(labels)}]",
            SIGNATURE_BYTES: f"image_bytes string [batch] (PNG/JPEG) -> probabilities float32 "
            f"[batch, {len(labels)}]",
        },
        "metrics": {"status": NOT_EVALUATED},
        "intended_use": "Research and engineering on medical image classification; not a medical "
        "device and not validated for clinical decisions.",
        "software": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    base.update(_plain(card or {}))
    return base


def _md_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_md_value(v)}" for k, v in value.items())
    return str(value)


def render_model_card(card: dict) -> str:
    """The Markdown view of a model card dict (``model_card.json``)."""
    lines = [f"# Model card: {card.get('model_name', 'model')} (version {card.get('version', '?')})", ""]
    if card.get("summary"):
        lines += [str(card["summary"]), ""]
    lines += ["## Model", ""]
    for key, title in (("task", "Task"), ("paper", "Paper"), ("doi", "DOI"),
                       ("input_shape", "Input (H, W, C)"), ("parameters", "Parameters"),
                       ("labels", "Labels (output order)"), ("exported_at", "Exported"),
                       ("software", "Software")):
        if card.get(key) not in (None, "", [], {}):
            lines.append(f"- {title}: {_md_value(card[key])}")
    for key, title in (("from_paper", "From the paper"), ("our_reading", "Our reading")):
        if card.get(key):
            lines += ["", f"### {title}", ""] + [f"- {item}" for item in card[key]]
    lines += ["", "## Serving signatures", ""]
    lines += [f"- `{name}`: {desc}" for name, desc in card.get("signatures", {}).items()]
    if card.get("training"):
        lines += ["", "## Training", ""]
        lines += [f"- {k}: {_md_value(v)}" for k, v in card["training"].items()]
        lines.append("- Full resolved config: `assets.extra/config.yaml`")
    lines += ["", "## Metrics", ""]
    metrics = card.get("metrics") or {"status": NOT_EVALUATED}
    if set(metrics) == {"status"}:
        lines.append(f"{str(metrics['status']).capitalize()}.")
    else:
        lines += [f"- {k}: {_md_value(v)}" for k, v in metrics.items()]
    if card.get("intended_use"):
        lines += ["", "## Intended use", "", str(card["intended_use"])]
    shown = {"model_name", "version", "summary", "task", "paper", "doi", "input_shape",
             "parameters", "labels", "exported_at", "software", "from_paper", "our_reading",
             "signatures", "training", "metrics", "intended_use"}
    extra = {k: v for k, v in card.items() if k not in shown and v not in (None, "", [], {})}
    if extra:
        lines += ["", "## Other facts", ""] + [f"- {k}: {_md_value(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def _write_card(extra_dir: Path, card: dict) -> None:
    (extra_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (extra_dir / "model_card.md").write_text(render_model_card(card))


def update_model_card(version_dir, **fields) -> dict:
    """Merge ``fields`` (e.g. ``metrics={...}``) into an export's model card; rewrites .json and .md."""
    extra = Path(version_dir) / "assets.extra"
    path = extra / "model_card.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; pass a version directory written by zoo.export "
            "(saved_models/<model>/<version>)."
        )
    card = json.loads(path.read_text())
    card.update(_plain(fields))
    _write_card(extra, card)
    return card


# --------------------------------------------------------------------------------------------
# Warmup records and TF Serving configs
# --------------------------------------------------------------------------------------------


def _warmup_records(model_name: str, input_shape) -> list[bytes]:
    """Serialized PredictionLog records: one request per signature at the model's input size."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    h, w, c = input_shape
    image = np.full((1, h, w, c), 0.5, np.float32)
    png = tf.io.encode_png(np.full((h, w, c if c in (1, 3, 4) else 1), 128, np.uint8)).numpy()
    requests = [
        (SIGNATURE_IMAGE, "image", tf.make_tensor_proto(image)),
        (SIGNATURE_BYTES, "image_bytes", tf.make_tensor_proto([png], dtype=tf.string, shape=[1])),
    ]
    records = []
    for signature, key, tensor in requests:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
        )
        request.inputs[key].CopyFrom(tensor)
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log.SerializeToString())
    return records


_BATCHING_CLASS = None


def batching_parameters_class():
    """TF Serving's ``tensorflow.serving.BatchingParameters`` message class.

    The pip package tensorflow-serving-api does not ship ``session_bundle_config_pb2``, so the
    message is declared here field for field from TF Serving's
    ``tensorflow_serving/servables/tensorflow/session_bundle_config.proto`` (fields 1-7), in a
    private descriptor pool so it can never clash with the real module.
    """
    global _BATCHING_CLASS
    if _BATCHING_CLASS is not None:
        return _BATCHING_CLASS
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    msg = proto.message_type.add(name="BatchingParameters")
    for number, name, wrapper in (
        (1, "max_batch_size", "Int64Value"),
        (2, "batch_timeout_micros", "Int64Value"),
        (3, "max_enqueued_batches", "Int64Value"),
        (4, "num_batch_threads", "Int64Value"),
        (5, "thread_pool_name", "StringValue"),
    ):
        msg.field.add(name=name, number=number, label=field.LABEL_OPTIONAL,
                      type=field.TYPE_MESSAGE, type_name=f".google.protobuf.{wrapper}")
    msg.field.add(name="allowed_batch_sizes", number=6, label=field.LABEL_REPEATED,
                  type=field.TYPE_INT64)
    msg.field.add(name="pad_variable_length_inputs", number=7, label=field.LABEL_OPTIONAL,
                  type=field.TYPE_BOOL)
    pool.Add(proto)
    _BATCHING_CLASS = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )
    return _BATCHING_CLASS


def _version_dirs(model_dir: Path) -> dict[int, Path]:
    if not model_dir.is_dir():
        return {}
    return {int(p.name): p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}


def write_server_configs(base_dir, *, serving_root: str = SERVING_ROOT) -> tuple[Path, Path]:
    """(Re)write ``base_dir/models.config`` and ``base_dir/batching.config``.

    ``models.config`` lists every model directory in ``base_dir`` holding at least one integer
    version with a ``saved_model.pb``; ``base_path`` is ``<serving_root>/<model>`` (``/models``:
    where the tensorflow/serving container sees ``base_dir`` when mounted as in the README).
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2 as msc

    base = Path(base_dir)
    config = msc.ModelServerConfig()
    for model_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [v for v in _version_dirs(model_dir).values() if (v / "saved_model.pb").is_file()]
        if not versions:
            continue
        entry = config.model_config_list.config.add()
        entry.name = model_dir.name
        entry.base_path = f"{serving_root.rstrip('/')}/{model_dir.name}"
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = 1
    models_path = base / "models.config"
    _atomic_write(models_path, text_format.MessageToString(config))

    params = batching_parameters_class()()
    for key in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        getattr(params, key).value = BATCHING[key]
    params.allowed_batch_sizes.extend(BATCHING["allowed_batch_sizes"])
    params.pad_variable_length_inputs = False
    batching_path = base / "batching.config"
    _atomic_write(batching_path, text_format.MessageToString(params))
    return models_path, batching_path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Temporary directories and publishing
# --------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_tmp(model_dir: Path) -> None:
    """Remove ``.tmp-*`` directories left by exports on this host whose process has died."""
    host = socket.gethostname()
    for tmp in model_dir.glob(f"{TMP_PREFIX}*"):
        owner = tmp / ".owner"
        try:
            owner_host, pid = owner.read_text().split()
            if owner_host == host and not _pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)
        except (OSError, ValueError):
            continue


def _publish(tmp: Path, model_dir: Path) -> Path:
    """Rename the finished ``tmp`` to the next free integer version; never replaces a version.

    ``os.rename`` onto a name that does not exist is atomic on POSIX, and onto a non-empty
    directory (a concurrent export took the number) fails, so the next number is tried.
    """
    while True:
        version = max(_version_dirs(model_dir), default=0) + 1
        card_path = tmp / "assets.extra" / "model_card.json"
        card = json.loads(card_path.read_text())
        if card.get("version") != version:  # another export took the version we planned
            card["version"] = version
            _write_card(tmp / "assets.extra", card)
        target = model_dir / str(version)
        try:
            os.rename(tmp, target)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise
        (target / ".owner").unlink(missing_ok=True)
        return target


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def _preprocessing(input_shape, preprocessing, config) -> dict:
    h, w, c = input_shape
    doc = {
        "layout": "NHWC",
        "model_input": {"height": h, "width": w, "channels": c, "dtype": "float32",
                        "range": [0.0, 1.0]},
        SIGNATURE_IMAGE: {
            "input": "image", "dtype": "float32", "shape": [None, None, None, c],
            "intensity": "same as training: windowed CT or 8-bit images / 255, in [0, 1]",
            "resize": {"op": "tf.image.resize", "method": "bilinear", "antialias": False,
                       "to": [h, w], "skipped_when_size_matches": True},
        },
        SIGNATURE_BYTES: {
            "input": "image_bytes", "dtype": "string", "shape": [None],
            "decode": "tf.io.decode_image(expand_animations=False): PNG, JPEG, BMP, GIF",
            "scale": "8-bit / 255, 16-bit PNG / 65535",
            "channels": (f"converted to {c} by tf.io.decode_image" if c in (1, 3, 4)
                         else f"decoded as grey and repeated {c} times"),
            "resize": {"op": "tf.image.resize", "method": "bilinear", "antialias": False,
                       "to": [h, w], "skipped_when_size_matches": True},
        },
        "output": {"key": OUTPUT_KEY, "dtype": "float32", "labels": "assets/labels.txt"},
    }
    training = {}
    if isinstance(config, dict):
        training.update({k: config[k] for k in ("dataset", "image_size", "windows") if k in config})
    if preprocessing:
        training.update(_plain(preprocessing))
    if training:
        doc["training_data"] = training
    return doc


def export_saved_model(
    model,
    base_dir="saved_models",
    *,
    model_name: str,
    labels,
    config=None,
    preprocessing: dict | None = None,
    card: dict | None = None,
    formats=("savedmodel",),
) -> Path:
    """Export ``model`` to ``base_dir/model_name/<next version>/`` and return that directory.

    Args:
        model: a keras.Model with one fixed-size image input and one [batch, K] output.
        base_dir: the TF Serving model root (``saved_models``); created if absent.
        model_name: the served name (the directory under ``base_dir``).
        labels: K class names in output order (written to ``assets/labels.txt``).
        config: the resolved training config (dict or TrainConfig), saved as
            ``assets.extra/config.yaml``.
        preprocessing: how the training inputs were made (windows, image size, ...); stored in
            ``assets.extra/preprocessing.json`` beside what the signatures do.
        card: extra model-card fields, merged over the facts from ``zoo.model_info``.
        formats: ``"savedmodel"`` (always written) and optionally ``"onnx"`` (``model.onnx``).
    """
    import tensorflow as tf
    import yaml

    model_name = _check_name(model_name)
    formats = _check_formats(formats)
    h, w, c, k = _check_model(model)
    labels = _check_labels(labels, k)
    config = _plain(config) if config is not None else None
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"config must be a mapping (or a TrainConfig), got {type(config).__name__}.")
    if preprocessing is not None and not isinstance(preprocessing, dict):
        raise ValueError(f"preprocessing must be a dict, got {type(preprocessing).__name__}.")

    base = Path(base_dir)
    if base.exists() and not base.is_dir():
        raise NotADirectoryError(f"Export directory {base} is a file; pass a directory path.")
    model_dir = base / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(model_dir)

    tmp = model_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        (tmp / ".owner").write_text(f"{socket.gethostname()} {os.getpid()}\n")
        staging = tmp / ".staging"
        staging.mkdir()
        labels_path = staging / "labels.txt"
        labels_path.write_text("\n".join(labels) + "\n")

        module, signatures = _serving_module(model, str(labels_path))
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
        (extra / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        (extra / "preprocessing.json").write_text(
            json.dumps(_preprocessing((h, w, c), preprocessing, config), indent=2) + "\n"
        )
        planned = max(_version_dirs(model_dir), default=0) + 1
        _write_card(extra, _build_card(model, model_name=model_name, version=planned,
                                       labels=labels, config=config, card=card,
                                       input_shape=(h, w, c)))
        with tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as writer:
            for record in _warmup_records(model_name, (h, w, c)):
                writer.write(record)
        # The Keras model itself, for Grad-CAM (python -m zoo.explain) and fine-tuning; TF
        # Serving ignores assets.extra/ beyond the warmup file.
        model.save(extra / KERAS_FILE)

        if "onnx" in formats:
            _export_onnx(model, tmp / "model.onnx", (h, w, c))

        version_dir = _publish(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_server_configs(base)
    return version_dir


def _onnx_erfc(ctx, node, name, args):
    """tf2onnx handler for TF's Erfc (exact GELU), which ONNX lacks: erfc(x) = 1 - erf(x)."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def _export_onnx(model, path: Path, input_shape) -> None:
    """``model.onnx`` via tf2onnx from the frozen graph; input ``image``, output ``probabilities``.

    The graph is frozen first (variables and captured constants become constants):
    ``model.export(format="onnx")`` leaves constants that a layer captured outside the graph
    (e.g. a Normalization layer's mean) as extra ONNX inputs that nobody could feed.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    h, w, c = input_shape
    policy = getattr(getattr(model, "dtype_policy", None), "name", "float32")
    if policy != "float32":
        raise ValueError(
            f"ONNX export needs a float32 model, but {model.name!r} uses the {policy!r} policy; "
            "rebuild it under keras.mixed_precision.set_global_policy('float32') and load the weights."
        )
    try:  # tf2onnx 1.17 still uses NumPy 1 names; Keras ships the shim it uses for its own export
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            patch_tf2onnx()
    except ImportError:
        pass
    fn = tf.function(
        lambda image: tf.cast(model(image, training=False), tf.float32), autograph=False
    ).get_concrete_function(tf.TensorSpec([None, h, w, c], tf.float32, name="image"))
    verbosity = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frozen = convert_variables_to_constants_v2(fn)
            tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(),
                input_names=[t.name for t in frozen.inputs],
                output_names=[t.name for t in frozen.outputs],
                output_path=str(path),
                custom_op_handlers={"Erfc": (_onnx_erfc, [])},
            )
    except Exception as err:  # tf2onnx failures are long and deep; name the model and the way out
        raise RuntimeError(
            f"ONNX export of {model.name!r} failed ({type(err).__name__}: {err}); export the "
            "SavedModel alone (formats=('savedmodel',)) or convert it later with tf2onnx."
        ) from err
    finally:
        tf.get_logger().setLevel(verbosity)
    proto = onnx.load(str(path))
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise RuntimeError(
            f"ONNX export of {model.name!r} produced inputs {[i.name for i in graph.input]} and "
            f"outputs {[o.name for o in graph.output]}; expected one image input and one output."
        )
    renames = {graph.input[0].name: "image", graph.output[0].name: OUTPUT_KEY}
    for node in graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.output[:] = [renames.get(o, o) for o in node.output]
    graph.input[0].name, graph.output[0].name = "image", OUTPUT_KEY
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


# --------------------------------------------------------------------------------------------
# Loading an export
# --------------------------------------------------------------------------------------------


class ExportedModel:
    """A loaded export: ``.predict(images)``, ``.predict_bytes(encoded)``, labels, config, card."""

    def __init__(self, path: Path):
        import tensorflow as tf
        import yaml

        self.path = path
        self.model_name = path.parent.name
        self.version = int(path.name) if path.name.isdigit() else None
        self.loaded = tf.saved_model.load(str(path))
        self.signatures = self.loaded.signatures
        self.labels = tuple(
            line for line in (path / "assets" / "labels.txt").read_text().splitlines() if line
        )
        extra = path / "assets.extra"
        self.config = yaml.safe_load((extra / "config.yaml").read_text()) or {}
        self.preprocessing = json.loads((extra / "preprocessing.json").read_text())
        self.card = json.loads((extra / "model_card.json").read_text())
        model_input = self.preprocessing["model_input"]
        self.input_shape = (model_input["height"], model_input["width"], model_input["channels"])

    def __repr__(self):
        return (f"ExportedModel({self.model_name!r}, version={self.version}, "
                f"input_shape={self.input_shape}, labels={len(self.labels)})")

    def predict(self, images, batch_size: int = 32) -> np.ndarray:
        """Probabilities [N, K] for float images [N, H, W, C] in [0, 1] (uint8 is divided by 255)."""
        import tensorflow as tf

        images = np.asarray(images)
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 255.0
        if images.ndim == 3:
            images = images[np.newaxis]
        c = self.input_shape[2]
        if images.ndim != 4 or images.shape[-1] != c:
            raise ValueError(
                f"{self.model_name} expects images shaped [N, H, W, {c}] (or one [H, W, {c}]), got "
                f"{images.shape}."
            )
        fn = self.signatures[SIGNATURE_IMAGE]
        out = [
            fn(image=tf.constant(images[i:i + batch_size], tf.float32))[OUTPUT_KEY].numpy()
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict_bytes(self, encoded: Sequence[bytes]) -> np.ndarray:
        """Probabilities [N, K] for encoded PNG/JPEG images (the ``serving_bytes`` signature)."""
        import tensorflow as tf

        fn = self.signatures[SIGNATURE_BYTES]
        return fn(image_bytes=tf.constant(list(encoded), tf.string))[OUTPUT_KEY].numpy()


def load_export(version_dir) -> ExportedModel:
    """Load ``saved_models/<model>/<version>`` (or ``saved_models/<model>``: its latest version)."""
    path = Path(version_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"Export directory {path} does not exist; pass saved_models/<model>/<version> written "
            "by zoo.export."
        )
    if not (path / "saved_model.pb").is_file():
        versions = _version_dirs(path)
        if not versions:
            raise FileNotFoundError(
                f"{path} holds no saved_model.pb and no integer version directories; pass "
                "saved_models/<model>/<version> written by zoo.export."
            )
        path = versions[max(versions)]
    for needed in ("assets/labels.txt", "assets.extra/config.yaml",
                   "assets.extra/preprocessing.json", "assets.extra/model_card.json"):
        if not (path / needed).is_file():
            raise FileNotFoundError(
                f"{path / needed} is missing; {path} is not a complete zoo export (re-export it "
                "with python -m zoo.export)."
            )
    return ExportedModel(path)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"--input-shape must be H,W,C as three positive integers (e.g. 96,96,3), got {text!r}."
        )
    return shape


def _run_dir_model(run_dir: Path, weights, input_shape, labels=None):
    """(model, model_name, labels, config) from a training run directory."""
    import keras
    import yaml

    import zoo

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} does not exist; --run-dir must be a training run directory "
            "(written by train.py, holding config.yaml and best.weights.h5 or model.keras)."
        )
    config = yaml.safe_load(config_path.read_text()) or {}
    name = config.get("model")
    name = name.get("name") if isinstance(name, dict) else name
    labels = labels or _run_labels(run_dir, config)

    if weights is None and (run_dir / "model.keras").is_file() and input_shape is None:
        model = keras.saving.load_model(str(run_dir / "model.keras"), compile=False)
    else:
        weights = weights or _first_file(run_dir, ("best.weights.h5", "model.keras"))
        if weights is None:
            raise FileNotFoundError(
                f"{run_dir} holds neither best.weights.h5 nor model.keras; pass --weights FILE."
            )
        if input_shape is None:
            size = int(config.get("image_size", 0) or 0)
            channels = _run_channels(run_dir, config)
            if not size or not channels:
                raise ValueError(
                    f"Cannot tell the input shape of the model in {run_dir}; pass "
                    "--input-shape H,W,C."
                )
            input_shape = (size, size, channels)
        if labels is None:
            raise ValueError(
                f"Cannot find the labels of the run in {run_dir}; pass --labels a,b,c."
            )
        kwargs = dict(config.get("model_kwargs") or {})
        model = zoo.get_model(name, input_shape=input_shape, num_classes=len(labels), **kwargs)
        _load_weights(model, weights)
    return model, name, labels, config


def _first_file(run_dir: Path, names) -> Path | None:
    for n in names:
        if (run_dir / n).is_file():
            return run_dir / n
    return None


def _dataset_info(run_dir: Path, config: dict) -> dict:
    for candidate in (run_dir / "dataset.json",
                      Path(config["cache_dir"]) / "dataset.json" if config.get("cache_dir") else None):
        if candidate is not None and candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


def _run_labels(run_dir: Path, config: dict):
    if (run_dir / "labels.txt").is_file():
        return [x for x in (run_dir / "labels.txt").read_text().splitlines() if x]
    if config.get("labels"):
        return list(config["labels"])
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        data = json.loads(metrics.read_text())
        if isinstance(data, dict) and data.get("labels"):
            return list(data["labels"])
    info = _dataset_info(run_dir, config)
    return list(info["labels"]) if info.get("labels") else None


def _run_channels(run_dir: Path, config: dict):
    info = _dataset_info(run_dir, config)
    return info.get("channels")


def _load_weights(model, weights) -> None:
    from zoo.models.common import load_weights

    load_weights(model, weights)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.export",
        description="Export a model to saved_models/<name>/<version>/ for TF Serving (and ONNX).",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="registered model name (see zoo.list_models())")
    src.add_argument("--run-dir", type=Path, help="training run directory (config.yaml + weights)")
    parser.add_argument("--weights", type=Path, help="local .weights.h5 or .keras file")
    parser.add_argument("--input-shape", type=_parse_shape, metavar="H,W,C",
                        help="model input (default: the model's / the run's)")
    parser.add_argument("--labels", help="comma-separated class names (default: the model's / run's)")
    parser.add_argument("--name", help="served model name (default: the model name)")
    parser.add_argument("--export-dir", type=Path, default=Path("saved_models"),
                        help="TF Serving model root (default: saved_models)")
    parser.add_argument("--format", nargs="+", default=["savedmodel"], choices=FORMATS,
                        dest="formats", help="savedmodel (always) and/or onnx")
    args = parser.parse_args(argv)

    import zoo

    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights} does not exist; pass a local .weights.h5 or .keras file.")
    try:
        if args.run_dir is not None:
            if not args.run_dir.is_dir():
                parser.error(f"--run-dir {args.run_dir} is not a directory; pass a training run directory.")
            model, name, labels, config = _run_dir_model(
                args.run_dir, args.weights, args.input_shape, labels
            )
        else:
            if args.model not in zoo.list_models():
                zoo.model_info(args.model)  # raises the registry's message with close matches
            labels = labels or list(_registry_facts(args.model).get("default_labels") or ())
            model = zoo.get_model(args.model, input_shape=args.input_shape,
                                  num_classes=len(labels) if labels else None)
            if args.weights is not None:
                _load_weights(model, args.weights)
            name, config = args.model, None
        if not labels:
            parser.error("the model has no default labels; pass --labels a,b,c.")
        path = export_saved_model(model, args.export_dir, model_name=args.name or name,
                                  labels=labels, config=config, formats=args.formats)
    except (KeyError, ValueError, FileNotFoundError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(f"Exported {args.name or name} to {path}")
    for f in ("model.onnx",):
        if (path / f).is_file():
            print(f"  + {path / f}")
    print(f"  TF Serving config: {args.export_dir / 'models.config'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
