"""Weight files checked before they are trusted: opened, sized, described and finite.

Every weights loader (:mod:`zoo.models.backbone`, :mod:`zoo.models.imagenet`, and
:func:`zoo.models.weights.load_weights` for Keras' own ``.weights.h5``) goes through here:

- :func:`open_h5`: a truncated or foreign file is one sentence, not h5py's OSError traceback;
- :func:`check_declared_size`: the datasets' shapes and dtypes are read from the file's
  metadata (no data) and their total refused past a limit the caller derives from the model (a
  284 KB file declaring a 32 GiB dataset made ``load_backbone`` allocate it before comparing);
- :func:`parse_metadata`: the one schema for a backbone's metadata JSON: a mapping of plain
  values, at most :data:`MAX_METADATA_BYTES` long and :data:`MAX_METADATA_DEPTH` levels deep
  (a list gave AttributeError, invalid JSON JSONDecodeError, deep nesting RecursionError);
- :func:`check_finite`: NaN or infinite weights are refused after reading, never loaded.
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["MAX_METADATA_BYTES", "MAX_METADATA_DEPTH", "WeightsFileError", "check_declared_size",
           "check_finite", "open_h5", "parse_metadata"]

MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 8


class WeightsFileError(ValueError):
    """A weights file that cannot be trusted: one sentence naming the file and the fix."""


def open_h5(path, what: str = "Weights file", error=WeightsFileError):
    """``h5py.File(path, "r")``; ``error`` (one sentence) if it is truncated or not HDF5."""
    import h5py

    try:
        return h5py.File(os.fspath(path), "r")
    except OSError:
        raise error(f"{what} {os.fspath(path)!r} is truncated or not an HDF5 weights file; copy it "
                    "again or write it anew.") from None


def check_declared_size(f, path, limit_bytes: int, error=WeightsFileError) -> None:
    """Refuse an open HDF5 file whose datasets declare more than ``limit_bytes`` in all, or a
    non-numeric dtype, from their metadata alone (nothing is read)."""
    import h5py

    total = 0
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found.append((name, obj.shape or (), obj.dtype))

    try:
        f.visititems(visit)
    except (RuntimeError, OSError, KeyError, ValueError):  # h5py walking a corrupt object table
        raise error(f"Weights file {os.fspath(path)!r} is truncated or corrupt; copy it again or "
                    "write it anew.") from None
    for name, shape, dtype in found:
        if dtype.kind not in "fiub":
            raise error(f"Weights file {os.fspath(path)!r} holds {name!r} of dtype {dtype}, not "
                        "numbers; it is not a weights file of this model.")
        total += int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if total > limit_bytes:
        raise error(f"Weights file {os.fspath(path)!r} declares {total} bytes of weights, more than "
                    f"the {limit_bytes} this model can use; it belongs to another model or is "
                    "corrupt.")


def check_finite(values, path, where: str, error=WeightsFileError) -> None:
    """Refuse weights holding NaN or infinity (``where`` names the layer or weight)."""
    for value in values:
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise error(f"Weights file {os.fspath(path)!r} holds NaN or infinite values in {where}; "
                        "it comes from a diverged run or is corrupt, so use another file.")


def _depth(text: str) -> int:
    """The deepest [ / { nesting of JSON ``text`` (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_metadata(text, path, error=WeightsFileError) -> dict:
    """A backbone file's metadata JSON as a dict of plain values, or ``error`` in one sentence."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    name = os.fspath(path)
    if not isinstance(text, str):
        raise error(f"Backbone file {name!r} has metadata that is not JSON text; re-run the pretraining.")
    if len(text) > MAX_METADATA_BYTES:
        raise error(f"Backbone file {name!r} has {len(text)} characters of metadata, over the "
                    f"{MAX_METADATA_BYTES} limit; re-run the pretraining to write it anew.")
    if _depth(text) > MAX_METADATA_DEPTH:
        raise error(f"Backbone file {name!r} has metadata nested deeper than {MAX_METADATA_DEPTH} "
                    "levels; re-run the pretraining to write it anew.")
    try:
        meta = json.loads(text or "{}")
    except ValueError:
        raise error(f"Backbone file {name!r} has metadata that is not valid JSON; re-run the "
                    "pretraining to write it anew.") from None
    if not isinstance(meta, dict):
        raise error(f"Backbone file {name!r} has metadata that is a JSON {type(meta).__name__}, not "
                    "an object; re-run the pretraining to write it anew.")
    return meta
