"""Stored values -> modality units (HU for CT) and windows: steps 2 to 4 of :mod:`pipelines.dicom`.

The RSNA 12-bit fix, the modality LUT (rescale slope and intercept, from the top level or the
functional groups, or a ModalityLUTSequence), MONOCHROME1 inversion; the public readers
:func:`read_hu`, :func:`read_frames`, :func:`read_windows` (windows straight from the stored
integers where the units are a plain shift) and :func:`stored_windows`.
"""

from __future__ import annotations

import numpy as np

from pipelines import transforms
from pipelines.dicom.header import (
    MAX_ABS_VALUE,
    MAX_PIXELS,
    check_size,
    element,
    float_element,
    floats,
    frame_count,
    int_element,
    needs_rsna_fix,
    quiet,
    read_dataset,
    reason,
)
from pipelines.dicom.pixels import decode_stored
from pipelines.manifest import DataError

__all__ = [
    "hu_from_dataset", "read_frames", "read_hu", "read_windows", "stored_windows",
    "windows_from_dataset",
]


def _slope_intercept(item, path) -> tuple[float, float]:
    slope = float_element(item, "RescaleSlope", path, 1.0)
    intercept = float_element(item, "RescaleIntercept", path, 0.0)
    if slope == 0.0:
        raise DataError(path, "DICOM header element RescaleSlope is 0, which would map every "
                              "pixel to the intercept")
    return slope, intercept


def _rescale(ds, frame: int | None, path=None) -> tuple[float, float] | None:
    """(slope, intercept) from the top level or the functional groups; None if absent.

    DataError (naming the element) for a slope of 0, a non-number or a non-finite value.
    """
    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    if element(ds, "RescaleSlope", path) is not None or element(ds, "RescaleIntercept", path) is not None:
        return _slope_intercept(ds, path)
    groups = []
    try:
        with quiet():
            per_frame = ds.get("PerFrameFunctionalGroupsSequence")
            if per_frame is not None and frame is not None and frame < len(per_frame):
                groups.append(per_frame[frame])
            shared = ds.get("SharedFunctionalGroupsSequence")
            if shared:
                groups.append(shared[0])
            seqs = [group.get("PixelValueTransformationSequence") for group in groups]
    except Exception as exc:
        raise DataError(path, f"DICOM functional groups cannot be read ({reason(exc)})") from None
    for seq in seqs:
        if seq:
            return _slope_intercept(seq[0], path)
    return None


def _checked_values(values: np.ndarray, path, source: str) -> np.ndarray:
    """float64 modality values -> float32; DataError if non-finite or overflowing.

    One min and one max (NaN propagates through both) instead of isfinite and abs temporaries.
    """
    if values.size:
        lo, hi = float(np.min(values)), float(np.max(values))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise DataError(path, f"{source} gives non-finite values (NaN or inf); the pixel data or "
                                  "RescaleSlope / RescaleIntercept are corrupt")
        if max(-lo, hi) > MAX_ABS_VALUE:
            raise DataError(path, f"{source} gives values beyond +-{MAX_ABS_VALUE:g}, which overflow "
                                  "float32 arithmetic; RescaleSlope / RescaleIntercept are corrupt")
    return values.astype(np.float32)


def _linear_units(stored: np.ndarray, slope: float, intercept: float, path, source: str,
                  stored_range: tuple[int, int] | None = None, *, keep_shift: bool = False):
    """``slope * stored + intercept`` -> float32, with :func:`_checked_values`' verdict.

    For integer ``stored`` the map is monotone, so the verdict on the whole array is the
    verdict on its two extreme values: first the dtype's range (or ``stored_range``), which
    costs no pass over the pixels, and the actual min / max only if that range is not safe.
    With slope 1 and an integral intercept the sum is computed in float32, where it is exact
    (integers below 2**24); otherwise in float64, rounded once to float32, as before.

    ``keep_shift``: in that exact slope-1 case return ``(stored, intercept)`` instead of the
    sum, for :func:`read_windows` to window without building it; otherwise ``(values, None)``.
    """
    if stored.dtype.kind not in "ui" or not stored.size:
        with np.errstate(all="ignore"):
            values = _checked_values(stored.astype(np.float64) * slope + intercept, path, source)
        return (values, None) if keep_shift else values

    def ends(lo: int, hi: int) -> tuple[float, float]:
        return lo * slope + intercept, hi * slope + intercept

    lo, hi = stored_range or (int(np.iinfo(stored.dtype).min), int(np.iinfo(stored.dtype).max))
    a, b = ends(lo, hi)
    if not (np.isfinite(a) and np.isfinite(b) and max(abs(a), abs(b)) <= MAX_ABS_VALUE):
        lo, hi = int(stored.min()), int(stored.max())
        _checked_values(np.array(ends(lo, hi), dtype=np.float64), path, source)
    if slope == 1.0 and float(intercept).is_integer() and max(-lo, hi) + abs(intercept) < 2**24:
        if keep_shift:
            return stored, float(intercept)
        values = stored.astype(np.float32)  # exact; a casting np.add is slower
        values += np.float32(intercept)
        return values
    values = np.multiply(stored, slope, dtype=np.float64)
    values += intercept
    values = values.astype(np.float32)
    return (values, None) if keep_shift else values


def _to_modality_units(ds, stored: np.ndarray, frame: int | None, rsna_fix: bool, path=None,
                       *, keep_shift: bool = False):
    """Stored values -> float32 modality units (steps 2 and 3 of the module docstring).

    ``keep_shift``: return ``(array, shift)``: ``(stored, intercept)`` when the units are
    exactly ``stored + intercept`` in float32 (slope 1, integral intercept: most CT), else
    ``(values, None)``.
    """
    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    intercept_override = stored_range = None
    if rsna_fix and needs_rsna_fix(ds):
        stored, stored_range = _rsna_unwrap(stored), (0, 4095)
        intercept_override = -1000.0
    rescale = _rescale(ds, frame, path)
    if rescale is None and element(ds, "ModalityLUTSequence", path) is not None:
        from pydicom.pixels import apply_modality_lut

        try:
            with quiet(), np.errstate(all="ignore"):
                values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        except Exception as exc:
            raise DataError(path, "DICOM header element ModalityLUTSequence cannot be applied "
                                  f"({reason(exc)})") from None
        values = _checked_values(values, path, "the ModalityLUTSequence")
        return (values, None) if keep_shift else values
    slope, intercept = rescale if rescale is not None else (1.0, 0.0)
    if intercept_override is not None:
        intercept = intercept_override
    return _linear_units(stored, slope, intercept, path,
                         "the modality LUT (RescaleSlope * stored + RescaleIntercept)", stored_range,
                         keep_shift=keep_shift)


def _rsna_unwrap(stored: np.ndarray) -> np.ndarray:
    """``(stored + 1000) mod 4096`` (step 2 of the module docstring), in [0, 4095].

    ``& 4095`` is ``mod 4096`` for two's-complement integers, and a uint16 sum that wraps
    (mod 65536, a multiple of 4096) leaves it unchanged, so 12-bit data stays in uint16.
    """
    if stored.dtype.kind == "u" and stored.dtype.itemsize <= 2:
        out = np.add(stored, 1000, dtype=np.uint16)
    elif stored.dtype.kind in "ui":
        out = stored.astype(np.int64) + 1000
    else:
        return (stored.astype(np.int32) + 1000) % 4096
    np.bitwise_and(out, 4095, out=out)
    return out


def _representable_range(ds, frame: int | None, rsna_fix: bool = True, path=None) -> tuple[float, float]:
    """The modality-unit range the stored bits can express (for MONOCHROME1 inversion)."""
    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    allocated = int_element(ds, "BitsAllocated", path, 16, 1, 64)
    bits = int_element(ds, "BitsStored", path, allocated, 1, 64)
    if int_element(ds, "PixelRepresentation", path, 0, 0, 1) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    slope, intercept = _rescale(ds, frame, path) or (1.0, 0.0)
    if rsna_fix and needs_rsna_fix(ds):
        intercept = -1000.0
    a, b = lo * slope + intercept, hi * slope + intercept
    _checked_values(np.array([a, b], dtype=np.float64), path, "the representable range under the modality LUT")
    return (min(a, b), max(a, b))


def read_hu(path, *, frame: int | None = None, rsna_fix: bool = True,
            max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One DICOM image -> (H, W) float32 in modality units (HU for CT).

    ``frame``: None for single-frame files (a multi-frame file then raises DataError naming
    its frame count), or a 0-based frame index (negative counts from the end). Raises
    :class:`DataError` for a missing, non-DICOM, truncated, corrupt or pixel-less file, and
    for one declaring more than ``max_pixels`` pixels (refused before decoding).
    """
    with quiet():  # once for the whole read; the nested ones are then free
        ds = read_dataset(path)
        return hu_from_dataset(ds, frame=frame, rsna_fix=rsna_fix, path=path, max_pixels=max_pixels)


def hu_from_dataset(ds, *, frame: int | None = None, rsna_fix: bool = True, path=None,
                    max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`read_hu` for an already-read :class:`pydicom.Dataset`."""
    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    with quiet():
        return _hu(ds, frame, rsna_fix, path, max_pixels)


def _frame_index(ds, frame: int | None, path) -> int | None:
    """The pixel-data frame to decode (None for a single-frame file), or DataError."""
    n = frame_count(ds, path)
    if frame is None:
        if n > 1:
            raise DataError(
                path,
                f"is a multi-frame DICOM with {n} frames; pass frame=0..{n - 1} (the manifest's "
                "slice column) or use read_frames",
            )
        return None
    index = int(frame) + n if int(frame) < 0 else int(frame)
    if not 0 <= index < n:
        raise DataError(path, f"frame {frame} is out of range for a DICOM with {n} frame(s)")
    return None if n == 1 else index


def _monochrome1(ds, path) -> bool:
    return str(element(ds, "PhotometricInterpretation", path)).strip().upper() == "MONOCHROME1"


def _inverted(ds, values: np.ndarray, index: int | None, rsna_fix: bool, path) -> np.ndarray:
    """MONOCHROME1 modality values mirrored about their representable range (step 4)."""
    lo, hi = _representable_range(ds, index, rsna_fix, path)
    with np.errstate(all="ignore"):
        values = (np.float64(lo) + np.float64(hi)) - values.astype(np.float64)
    return _checked_values(values, path, "MONOCHROME1 inversion of the modality values")


def _hu(ds, frame: int | None, rsna_fix: bool, path, max_pixels: int) -> np.ndarray:
    index = _frame_index(ds, frame, path)
    stored = decode_stored(ds, path, index, max_pixels)
    values = _to_modality_units(ds, stored, index, rsna_fix, path)
    if _monochrome1(ds, path):
        values = _inverted(ds, values, index, rsna_fix, path)
    return values.astype(np.float32, copy=False)


def read_windows(path, windows=None, *, frame: int | None = None, rsna_fix: bool = True,
                 max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``transforms.apply_windows(read_hu(path, ...), windows)``, bit for bit, but faster.

    For the usual CT file (slope 1, integral intercept, MONOCHROME2) the windows are computed
    from the stored integers directly (:func:`pipelines.transforms.windows_of_shifted`), so
    the HU array is never built; any other file takes the :func:`read_hu` path. Same checks
    and errors as :func:`read_hu`. Returns (H, W, C) float32 in [0, 1].
    """
    with quiet():
        ds = read_dataset(path)
        return windows_from_dataset(ds, windows, frame=frame, rsna_fix=rsna_fix, path=path,
                                    max_pixels=max_pixels)


def windows_from_dataset(ds, windows=None, *, frame: int | None = None, rsna_fix: bool = True,
                         path=None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`read_windows` for an already-read :class:`pydicom.Dataset`."""
    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    with quiet():
        index = _frame_index(ds, frame, path)
        stored = decode_stored(ds, path, index, max_pixels)
        values, shift = _to_modality_units(ds, stored, index, rsna_fix, path, keep_shift=True)
        if shift is not None and not _monochrome1(ds, path):
            out = transforms.windows_of_shifted(values, shift, windows)
            if out is not None:
                return out
        if shift is not None:
            values = values.astype(np.float32)
            values += np.float32(shift)
        if _monochrome1(ds, path):
            values = _inverted(ds, values, index, rsna_fix, path)
        return transforms.apply_windows(values, windows)


def read_frames(path, *, rsna_fix: bool = True, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Every frame of a DICOM file -> (N, H, W) float32 modality units (N = 1 for single).

    The whole declared size (all frames) is checked against ``max_pixels`` before decoding.
    """
    with quiet():
        ds = read_dataset(path)
        n = frame_count(ds, path)
        if n == 1:
            return hu_from_dataset(ds, rsna_fix=rsna_fix, path=path, max_pixels=max_pixels)[None]
        check_size(ds, path, max_pixels)
        return np.stack([hu_from_dataset(ds, frame=i, rsna_fix=rsna_fix, path=path, max_pixels=max_pixels)
                         for i in range(n)])


def stored_windows(ds, path=None) -> list[tuple[float, float]]:
    """The header's (WindowCenter, WindowWidth) pairs, in modality units as :func:`read_hu` gives.

    Multi-valued centre/width lists are paired in order (a shorter list repeats its last
    value); for MONOCHROME1 the centres are mirrored like the pixels. Empty if absent.
    DataError naming the element (not its value) if one is unreadable or not numbers.
    """
    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    values = {}
    for keyword in ("WindowCenter", "WindowWidth"):
        try:
            values[keyword] = floats(element(ds, keyword, path))
        except ValueError:
            raise DataError(path, f"DICOM header element {keyword} is not a list of finite numbers") from None
    centers, widths = values["WindowCenter"], values["WindowWidth"]
    if not centers or not widths:
        return []
    n = max(len(centers), len(widths))
    centers += [centers[-1]] * (n - len(centers))
    widths += [widths[-1]] * (n - len(widths))
    pairs = [(c, w) for c, w in zip(centers, widths) if w > 0]
    if str(element(ds, "PhotometricInterpretation", path, "")).strip().upper() == "MONOCHROME1":
        lo, hi = _representable_range(ds, None, path=path)
        pairs = [(lo + hi - c, w) for c, w in pairs]
    return pairs
