"""The cache's on-disk format: file names, the record layout, and reading the index.

Cache layout (``out``)::

    dataset.json                      what is inside; written last, so it is the done marker
    manifest.csv                      one row per written example: id, patient_id, study_id,
                                      series_id (pseudonymised), slice, labels..., split, shard
    quarantine.csv                    path, reason: files that could not be decoded
    train-00000-of-00004.tfrecord     shards; each is written to a hidden temp name and renamed
    ...                               when complete, so a re-run skips the finished ones
    .progress/                        resume state while a run is unfinished (removed at the end)

Record features: ``image`` (bytes: raw uint8 H*W*C, row-major), ``height``, ``width``,
``channels`` (int64), ``label`` (float list, one per label), ``id`` (bytes),
``patient_id`` (bytes, pseudonymised).

Privacy: patient, study and series identifiers are replaced by :func:`pseudonym`,
``sha256(salt + value)`` (first 16 hex digits) with a random per-cache salt. The salt is kept
only in ``.progress/`` while a run can still be resumed and is deleted when the cache is
complete, so a finished cache cannot be linked back to header values by hashing candidate IDs.
Nothing else from the headers is written to the records, the manifest or the logs. Where an
adapter derives ids from file paths (``Adapter.path_ids``: csv, folder), the ``id`` is a row key
(:func:`row_keys`) and ``quarantine.csv`` names the row key, not the path, unless the cache was
prepared with ``keep_path_ids=True`` (``--keep-path-ids``). Otherwise image paths appear only
in ``quarantine.csv`` (the reader needs them to find the broken files).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipelines.fs import replace

FORMAT_VERSION = 1
INFO_FILE = "dataset.json"
MANIFEST_FILE = "manifest.csv"
QUARANTINE_FILE = "quarantine.csv"
PROGRESS_DIR = ".progress"
SHARD_TARGET_BYTES = 64 * 2**20
SPLIT_ORDER = ("train", "val", "test")
PSEUDONYM_HEX = 16

RECORD_FEATURES = {
    "image": "bytes, raw uint8 H*W*C row-major",
    "height": "int64",
    "width": "int64",
    "channels": "int64",
    "label": "float x {num_labels}",
    "id": "bytes",
    "patient_id": "bytes, pseudonymised",
}


# --------------------------------------------------------------------------------------------
# Small shared helpers (writer and reader)


def parse_image_size(size) -> tuple[int, int]:
    """N or (H, W) -> (H, W); ValueError naming the bad value."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        out = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        out = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"image_size={size!r} is not N or (height, width); pass e.g. 256.")
    if min(out) < 1:
        raise ValueError(f"image_size={size!r} must be positive; pass e.g. 256.")
    return out


def pseudonym(salt: str, value) -> str:
    """``sha256(salt + value)``, first :data:`PSEUDONYM_HEX` hex digits ("" for a missing id)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "":
        return ""
    digest = hashlib.sha256((salt + str(value)).encode("utf-8")).hexdigest()
    return digest[:PSEUDONYM_HEX]


ROW_KEY = "row{:07d}"


def row_keys(ids) -> dict[str, str]:
    """Raw ids -> non-identifying row keys: the position in the sorted ids (``row0000012``).

    The cache of a dataset whose ids come from file paths (which may hold MRNs, names or
    UIDs) stores these keys instead; whoever has the same data folder can recompute them
    (``zoo.evaluate --through serving`` does), nobody else learns anything from them.
    """
    return {raw: ROW_KEY.format(k) for k, raw in enumerate(sorted({str(i) for i in ids}))}


def derive_seed(*parts: int) -> int:
    """A 31-bit seed that depends on every part (seed, epoch, purpose)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


def shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def shard_writer(writers: dict, folder, split: str, shard_size: int) -> list:
    """The open writer of ``split`` in ``writers`` (``[TFRecordWriter, count, temp name]``),
    a new ``<split>-NNNNN.tmp`` in ``folder`` when the last holds ``shard_size`` records."""
    shards = writers.setdefault(split, [])
    if not shards or shards[-1][1] >= shard_size:
        if shards:
            shards[-1][0].close()
        name = f"{split}-{len(shards):05d}.tmp"
        shards.append([tf.io.TFRecordWriter(str(Path(folder) / name)), 0, name])
    return shards[-1]


def rename_shards(folder, writers: dict) -> dict[str, str]:
    """The closed temp shards of :func:`shard_writer` renamed to ``<split>-NNNNN-of-NNNNN.tfrecord``;
    returns temp name -> final name."""
    mapping = {}
    for split, shards in writers.items():
        for i, w in enumerate(shards):
            final = shard_name(split, i, len(shards))
            replace(Path(folder) / w[2], Path(folder) / final)
            mapping[w[2]] = final
    return mapping


def split_names(splits) -> list[str]:
    """train, val, test first (those present), then any other split names sorted."""
    names = list(dict.fromkeys(splits))
    return [s for s in SPLIT_ORDER if s in names] + sorted(s for s in names if s not in SPLIT_ORDER)


# --------------------------------------------------------------------------------------------
# The record


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int64(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _float(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def serialize_example(image: bytes, shape, label, example_id: str, patient_id: str) -> bytes:
    """One ``tf.train.Example``: raw uint8 pixels, their shape, labels and the two ids."""
    height, width, channels = shape
    features = {
        "image": _bytes([image]),
        "height": _int64([height]),
        "width": _int64([width]),
        "channels": _int64([channels]),
        "label": _float([float(v) for v in label]),
        "id": _bytes([str(example_id).encode("utf-8")]),
        "patient_id": _bytes([str(patient_id).encode("utf-8")]),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def feature_spec(num_labels: int) -> dict:
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "channels": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([num_labels], tf.float32),
        "id": tf.io.FixedLenFeature([], tf.string),
        "patient_id": tf.io.FixedLenFeature([], tf.string),
    }


def parse_batch(serialized, *, image_shape, num_labels):
    """A batch of serialized records -> (float32 images [B,H,W,C] in [0, 1], labels, ids)."""
    height, width, channels = image_shape
    parsed = tf.io.parse_example(serialized, feature_spec(num_labels))
    pixels = tf.io.decode_raw(parsed["image"], tf.uint8)
    images = tf.reshape(pixels, [-1, height, width, channels])
    images = tf.cast(images, tf.float32) * (1.0 / 255.0)
    ids = {"id": parsed["id"], "patient_id": parsed["patient_id"]}
    return images, parsed["label"], ids


# --------------------------------------------------------------------------------------------
# The index: dataset.json and the shard files


def read_info(cache) -> dict:
    """The cache's dataset.json; a clear error when the folder is missing or unfinished."""
    cache = Path(cache)
    if not cache.is_dir():
        raise FileNotFoundError(
            f"The cache {cache} does not exist; create it with "
            f"`python -m pipelines.prepare --dataset NAME --data-dir DIR --out {cache}`."
        )
    path = cache / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"The cache {cache} has no {INFO_FILE} (it was never prepared or the run stopped "
            "part-way); run `python -m pipelines.prepare` with the same --out to finish it."
        )
    info = json.loads(path.read_text())
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"The cache {cache} has format version {info.get('format_version')!r}, this code "
            f"reads {FORMAT_VERSION}; prepare it again into a new folder."
        )
    return info


def shard_files(cache, split: str, info: dict | None = None) -> list[str]:
    """The split's shard paths, sorted; a clear error for an unknown split or a missing file."""
    cache = Path(cache)
    info = info or read_info(cache)
    if split not in info["splits"]:
        raise ValueError(
            f"The cache {cache} has no split {split!r}; it has {', '.join(info['splits'])}."
        )
    files = [cache / name for name in sorted(info["shards"][split])]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"The cache {cache} is missing {missing[0]}"
            + (f" and {len(missing) - 1} more shard(s)" if len(missing) > 1 else "")
            + "; prepare it again."
        )
    return [str(f) for f in files]
