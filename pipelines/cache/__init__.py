"""The TFRecord cache: decode a dataset once, read it back as ``tf.data`` many times.

::

    format.py   the on-disk format: file names, FORMAT_VERSION, the record, read_info, shard_files
    decode.py   the worker side of prepare: adapter.load -> resize -> uint8 (no TensorFlow)
    jobs.py     what both runners share: PrepareJob (one row to decode), PrepareError, finish_shard
    writer.py   prepare(): manifest -> split -> shard plan -> a runner -> shards -> dataset.json
    pool.py     prepare(runner="pool"): the decode workers on this machine and the shard writing
    beam.py     prepare(runner="beam"): the decode and shard writing as an Apache Beam pipeline
    reader.py   make_dataset(): shards -> tf.data (per-worker sharding, shuffle, balance, augment)

The names below are imported on first use (PEP 562), so that importing
``pipelines.cache.decode`` in a spawned worker does not import TensorFlow.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "prepare": "writer",
    "PrepareError": "jobs",
    "make_dataset": "reader",
    "read_info": "format",
    "shard_files": "format",
    "parse_batch": "format",
    "serialize_example": "format",
    "feature_spec": "format",
    "FORMAT_VERSION": "format",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
