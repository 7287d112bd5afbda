"""Publishing versions for TF Serving: atomic integer versions and the server config files.

* an export is written into a hidden ``.tmp-*`` directory (:func:`new_tmp`) beside the versions
  (TF Serving only loads integer names) and :func:`publish_version` renames it to the next free
  integer, never over an existing version; :func:`clean_stale_tmp` removes what a dead export
  process left behind; :func:`version_dirs` lists the published versions;
* :func:`write_server_configs` regenerates ``models.config`` (a ``ModelServerConfig`` listing
  every exported model) and ``batching.config`` (``BatchingParameters``, :data:`BATCHING`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import uuid
from pathlib import Path

from pipelines.fs import atomic_write_text, pid_alive
from zoo.card import CARD_JSON, write_card

TMP_PREFIX = ".tmp-"
OWNER_FILE = ".owner"  # "<host> <pid>" of the export writing a .tmp-* directory
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


# --------------------------------------------------------------------------------------------
# Versions, temporary directories and publishing
# --------------------------------------------------------------------------------------------


def version_dirs(model_dir: Path) -> dict[int, Path]:
    """{version: directory} of the integer-named directories in ``model_dir``."""
    if not model_dir.is_dir():
        return {}
    return {int(p.name): p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}


def next_version(model_dir: Path) -> int:
    return max(version_dirs(model_dir), default=0) + 1


def new_tmp(model_dir: Path) -> Path:
    """A fresh hidden ``.tmp-*`` directory in ``model_dir``, marked with this host and process."""
    tmp = model_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        (tmp / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def clean_stale_tmp(model_dir: Path) -> None:
    """Remove ``.tmp-*`` directories left by exports on this host whose process has died."""
    host = socket.gethostname()
    for tmp in model_dir.glob(f"{TMP_PREFIX}*"):
        owner = tmp / OWNER_FILE
        try:
            owner_host, pid = owner.read_text().split()
            if owner_host == host and not pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)
        except (OSError, ValueError):
            continue


def publish_version(tmp: Path, model_dir: Path) -> Path:
    """Rename the finished ``tmp`` to the next free integer version; never replaces a version.

    ``os.rename`` onto a name that does not exist is atomic on POSIX, and onto a non-empty
    directory (a concurrent export took the number) fails, so the next number is tried. The
    model card names its version, so it is rewritten only when the planned number was taken.
    """
    while True:
        version = next_version(model_dir)
        extra = tmp / "assets.extra"
        card = json.loads((extra / CARD_JSON).read_text())
        if card.get("version") != version:  # another export took the version we planned
            card["version"] = version
            write_card(extra, card)
        target = model_dir / str(version)
        try:
            os.rename(tmp, target)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise
        (target / OWNER_FILE).unlink(missing_ok=True)
        return target


# --------------------------------------------------------------------------------------------
# TF Serving configs
# --------------------------------------------------------------------------------------------


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
        versions = [v for v in version_dirs(model_dir).values() if (v / "saved_model.pb").is_file()]
        if not versions:
            continue
        entry = config.model_config_list.config.add()
        entry.name = model_dir.name
        entry.base_path = f"{serving_root.rstrip('/')}/{model_dir.name}"
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = 1
    models_path = base / "models.config"
    atomic_write_text(models_path, text_format.MessageToString(config))

    params = batching_parameters_class()()
    for key in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        getattr(params, key).value = BATCHING[key]
    params.allowed_batch_sizes.extend(BATCHING["allowed_batch_sizes"])
    params.pad_variable_length_inputs = False
    batching_path = base / "batching.config"
    atomic_write_text(batching_path, text_format.MessageToString(params))
    return models_path, batching_path



