"""The decode step of ``prepare``: one manifest row -> uint8 pixels, in worker processes.

This module imports no TensorFlow (nor does anything it imports), so spawned workers start in
well under a second and spend their time in pydicom / numpy. Keep it that way:
``tests/pipelines/test_cache_layout.py`` checks it.

Each image goes: ``adapter.load(row, data_dir, windows)`` (float32 (H, W, C) in [0, 1]) ->
:func:`to_cache_pixels` (resize to ``image_size``, then uint8) -> :func:`encode_example` (the
finished ``tf.train.Example`` bytes, written without TensorFlow) -> :func:`frame_record` (the
TFRecord framing, byte for byte what ``tf.io.TFRecordWriter`` writes). A worker takes a
*piece* (a run of consecutive rows of one shard, :func:`work_piece`), writes its framed records
to a piece file beside the shard, and sends back only each row's outcome; the parent appends
the piece files to the shards in plan order. The pixels never cross a pipe: sending each
196 KB record through the pool's one result pipe (64 KB of buffer, one lock shared by the
workers) held 2 workers to the speed of one.
"""

from __future__ import annotations

import os
import struct

import google_crc32c
import numpy as np

from pipelines import preprocessing, transforms
from pipelines.cache.jobs import PrepareJob
from pipelines.datasets import get_adapter

# --------------------------------------------------------------------------------------------
# Adapter references that survive pickling into a spawned process


class AdapterRef:
    """A picklable way back to a dataset adapter in another process.

    A registered name goes through ``pipelines.datasets.get_adapter`` (so the worker uses the
    registered adapter, not a pickled copy); any other adapter object (a test double, a
    configured instance) is pickled as it is.
    """

    def __init__(self, adapter):
        self.name = adapter if isinstance(adapter, str) else None
        self.obj = None if isinstance(adapter, str) else adapter

    def resolve(self):
        if self.name is not None:
            return get_adapter(self.name)
        return self.obj


# --------------------------------------------------------------------------------------------
# The decode step (runs in workers, or in-process with workers=1)


def to_cache_pixels(image: np.ndarray, size) -> np.ndarray:
    """float32 (H, W, C) in [0, 1] -> uint8 (size[0], size[1], C): the cache's pixels.

    The resize and rounding steps of the one preprocessing spec (:mod:`pipelines.preprocessing`:
    bilinear with antialiasing, aspect ratio not kept, then ``round(x * 255)``), which the
    serving graph repeats with TensorFlow ops.
    """
    return transforms.to_uint8(preprocessing.resize(image, size))


def decode_row(adapter, row, data_dir, windows, size, channels) -> np.ndarray:
    """One manifest row -> uint8 (H, W, C) at ``size``; raises ValueError naming the problem."""
    image = adapter.load(row, data_dir, windows)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"the adapter returned an array of shape {image.shape}, not (H, W, C)")
    if image.shape[-1] != channels:
        raise ValueError(
            f"the adapter returned {image.shape[-1]} channels where the cache has {channels}"
        )
    image = image.astype(np.float32, copy=False)
    if not np.all(np.isfinite(image)):
        raise ValueError("the decoded image has non-finite values (NaN or inf)")
    return to_cache_pixels(image, size)


# --------------------------------------------------------------------------------------------
# The record, encoded without TensorFlow (protobuf wire format of tf.train.Example)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(kind: int, payload: bytes) -> bytes:
    # Feature{oneof: bytes_list = 1, float_list = 2, int64_list = 3}; each list's values are
    # field 1 (repeated bytes; packed floats; packed varints)
    return _field(kind, payload)


def encode_example(image: bytes, shape, label, example_id: str, patient_id: str) -> bytes:
    """The same ``tf.train.Example`` as ``pipelines.cache.format.serialize_example``, as bytes,
    without importing TensorFlow (``tests/pipelines/test_prepare_scaling.py`` parses both)."""
    height, width, channels = (int(v) for v in shape)

    def ints(*values):
        return _feature(3, _field(1, b"".join(_varint(v) for v in values)))

    features = (
        ("image", _feature(1, _field(1, bytes(image)))),
        ("height", ints(height)),
        ("width", ints(width)),
        ("channels", ints(channels)),
        ("label", _feature(2, _field(1, struct.pack(f"<{len(label)}f", *map(float, label))))),
        ("id", _feature(1, _field(1, str(example_id).encode("utf-8")))),
        ("patient_id", _feature(1, _field(1, str(patient_id).encode("utf-8")))),
    )
    entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, v)) for k, v in features)
    return _field(1, entries)  # Example{features = 1}: Features{map<string, Feature> = 1}


def _masked_crc(data: bytes) -> bytes:
    """TFRecord's masked CRC-32C (Castagnoli) of ``data``, 4 bytes little-endian."""
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def frame_record(record: bytes) -> bytes:
    """One TFRecord entry: uint64 length, masked CRC of the length, the record, masked CRC of
    the record (the bytes ``tf.io.TFRecordWriter`` writes, uncompressed)."""
    length = struct.pack("<Q", len(record))
    return b"".join((length, _masked_crc(length), record, _masked_crc(record)))


def describe_error(error: BaseException) -> str:
    """A one-line reason for quarantine.csv (the exception's first line, with its type)."""
    problem = getattr(error, "problem", None)  # pipelines.manifest.DataError: path is separate
    if problem:
        return str(problem).splitlines()[0]
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class Row(dict):
    """A manifest row for ``adapter.load``: ``row["path"]``, ``row.path`` and ``row.get``.

    Much cheaper to make than a ``pandas.Series`` (which matters for tiny images).
    """

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


_WORKER: dict = {}

# glibc malloc thresholds for a decoding process (mallopt's M_TRIM_THRESHOLD, M_MMAP_THRESHOLD)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 128 << 20
MMAP_ABOVE_BYTES = 32 << 20


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a decode frees, for the next image (True if set).

    Each slice allocates and frees a few MB (the windowed planes, Pillow's images, the resized
    copy). By default glibc hands blocks that large back to the kernel (mmap'd, or trimmed off
    the top of the heap) and the next image faults them in again, zeroed: 1,579 page faults
    (6 MB) per 512x512 slice in a process that had imported TensorFlow, which doubled the
    decode time (6.3-7.1 ms against 3.2-3.5 ms per slice with these settings). Blocks below
    ``MMAP_ABOVE_BYTES`` now come from the heap, and up to ``KEEP_FREED_BYTES`` of free heap
    stays mapped. A no-op where the C library is not glibc. In ``workers=1`` runs this is the
    calling process, whose later allocations keep the same thresholds.
    """
    if _WORKER.get("malloc_tuned"):
        return True
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        done = (libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES) == 1
                and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_ABOVE_BYTES) == 1)
    except (OSError, AttributeError):
        return False
    _WORKER["malloc_tuned"] = done
    return done


def init_worker(ref: AdapterRef, data_dir: str, windows, size) -> None:
    """Pool initializer: import the decoders and resolve the adapter once per process. It needs
    nothing from the manifest, so the pool can start while the parent still reads it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keep_freed_memory()
    _WORKER.update(adapter=ref.resolve(), data_dir=data_dir, windows=windows, size=size)


def work(job: PrepareJob):
    """Pool task: a :class:`~pipelines.cache.jobs.PrepareJob` -> ``(position, record bytes or
    None, error or None)``."""
    size = _WORKER["size"]
    try:
        image = decode_row(
            _WORKER["adapter"], Row(job.row), _WORKER["data_dir"], _WORKER["windows"], size,
            job.channels,
        )
    except Exception as error:  # noqa: BLE001 - any failure of one file is that file's problem
        return job.position, None, describe_error(error)
    shape = (size[0], size[1], job.channels)
    record = encode_example(image.tobytes(), shape, job.label, job.example_id, job.patient_id)
    return job.position, record, None


def work_piece(piece):
    """Pool task: ``(path, [job, ...])`` -> ``(path, [error or None per job])``.

    Decodes the jobs (:func:`work`) and writes the framed records of those that decoded to
    ``path``, in job order; the parent appends the file to the shard and removes it."""
    path, jobs = piece
    outcomes = []
    with open(path, "wb") as handle:
        for job in jobs:
            _, record, error = work(job)
            if record is not None:
                handle.write(frame_record(record))
            outcomes.append(error)
    return os.fspath(path), outcomes
