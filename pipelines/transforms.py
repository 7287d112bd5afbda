"""Pure array functions: CT window presets and stacking, 8-bit scaling, resizing, the (H, W, C) shape.

NumPy in, NumPy out, no state and no file access, so ``prepare`` worker processes and tests
can call them freely.

Windowing maps Hounsfield units linearly from ``[center - width/2, center + width/2]`` onto
``[0, 1]`` and clips outside, one output channel per window (the RSNA convention,
brain/subdural/bone as an RGB-like stack). This is the plain linear window used by most
published RSNA pipelines, not the DICOM PS3.3 C.11.2.1.2 variant with its half-unit offsets
(which differs by less than 1/width).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np


class Window(NamedTuple):
    """A CT display window in Hounsfield units."""

    center: float
    width: float


# name -> (center, width) in HU. Sources: common radiology presets (e.g. Radiopaedia
# "Windowing (CT)"); the first three are the RSNA 2019 ICH default stack.
WINDOWS: dict[str, Window] = {
    "brain": Window(40.0, 80.0),
    "subdural": Window(80.0, 200.0),
    "bone": Window(600.0, 2800.0),
    "stroke": Window(32.0, 8.0),
    "temporal_bone": Window(600.0, 2800.0),
    "soft_tissue": Window(50.0, 350.0),
    "abdomen": Window(40.0, 400.0),
    "liver": Window(60.0, 160.0),
    "mediastinum": Window(50.0, 350.0),
    "lung": Window(-600.0, 1500.0),
    "blood": Window(60.0, 40.0),
    "stone": Window(400.0, 1800.0),
}
DEFAULT_CT_WINDOWS = ("brain", "subdural", "bone")


def parse_windows(spec=None) -> tuple[Window, ...]:
    """Windows from a flag or config value.

    Accepts ``None`` (:data:`DEFAULT_CT_WINDOWS`), a comma-separated string of preset names
    and/or ``center/width`` pairs (``"brain,subdural,bone"``, ``"40/80,80/200"``,
    ``"brain,-600/1500"``), or a sequence of names, ``(center, width)`` pairs or
    :class:`Window` s. Raises ValueError with the close preset names on an unknown name.
    """
    if spec is None:
        spec = DEFAULT_CT_WINDOWS
    if isinstance(spec, str):
        items: Iterable = [s.strip() for s in spec.split(",")]
    elif isinstance(spec, Window):
        items = [spec]
    else:
        items = list(spec)
        # a single bare (center, width) pair of numbers
        if len(items) == 2 and all(isinstance(v, (int, float, np.number)) for v in items):
            items = [tuple(items)]
    out = []
    for item in items:
        out.append(_one_window(item))
    if not out:
        raise ValueError("no windows given; use e.g. --windows brain,subdural,bone or 40/80")
    return tuple(out)


def _one_window(item) -> Window:
    if isinstance(item, str):
        text = item.strip()
        if not text:
            raise ValueError("empty window in the list; use e.g. 'brain,subdural,bone'")
        if text.lower() in WINDOWS:
            return WINDOWS[text.lower()]
        if "/" in text:
            center, _, width = text.partition("/")
            try:
                return _checked(float(center), float(width), text)
            except ValueError as exc:
                if "width" in str(exc):
                    raise
                raise ValueError(f"window {text!r} is not 'center/width' in HU, e.g. '40/80'") from None
        close = difflib.get_close_matches(text.lower(), WINDOWS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown window {text!r}{hint} Presets: {', '.join(WINDOWS)}; or give center/width like 40/80"
        )
    try:
        center, width = item
    except (TypeError, ValueError):
        raise ValueError(f"window {item!r} is neither a preset name nor a (center, width) pair") from None
    return _checked(float(center), float(width), item)


def _checked(center: float, width: float, raw) -> Window:
    if not np.isfinite(center) or not np.isfinite(width) or width <= 0:
        raise ValueError(f"window {raw!r} needs a finite center and a width > 0")
    return Window(center, width)


def format_windows(windows=None) -> str:
    """The inverse of :func:`parse_windows`: preset names where they match, else center/width."""
    names = {w: n for n, w in reversed(list(WINDOWS.items()))}
    parts = []
    for w in parse_windows(windows):
        parts.append(names.get(w) or f"{w.center:g}/{w.width:g}")
    return ",".join(parts)


def apply_windows(hu: np.ndarray, windows=None) -> np.ndarray:
    """Stack windows of a 2-D HU image: (H, W) -> (H, W, C) float32 in [0, 1].

    ``windows`` is anything :func:`parse_windows` accepts (None = brain, subdural, bone).
    Each window is ``clip((hu - low) * (1 / width), 0, 1)`` in float32, ``low`` and ``1 / width``
    each rounded once to float32.

    The result is (H, W, C) but laid out channel by channel in memory (a transposed view of
    one (C, H, W) block, so ``out[..., c]`` is contiguous): each window is three in-place
    float32 passes over a contiguous plane, with no temporaries. Writing the channels
    interleaved costs more than the windows themselves (a stride-C store per pixel), and
    what follows (the per-channel resize, the uint8 rounding, ``tobytes()``) reads either
    layout. ``np.ascontiguousarray`` gives interleaved memory where a caller needs it.
    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim == 3 and hu.shape[-1] == 1:
        hu = hu[..., 0]
    if hu.ndim != 2:
        raise ValueError(f"apply_windows expects a 2-D HU image, got shape {hu.shape}")
    parsed = parse_windows(windows)
    planes = np.empty((len(parsed),) + hu.shape, dtype=np.float32)
    for plane, (center, width) in zip(planes, parsed):
        np.subtract(hu, np.float32(center - width / 2.0), out=plane)
        np.multiply(plane, _reciprocal(width), out=plane)  # a multiply costs half a divide
        np.clip(plane, _ZERO, _ONE, out=plane)
    return np.moveaxis(planes, 0, -1)


def windows_of_shifted(stored: np.ndarray, shift: float, windows=None) -> np.ndarray | None:
    """:func:`apply_windows` of ``stored + shift``, bit for bit, without building that array.

    For integer ``stored`` whose sum with ``shift`` is exact in float32 (slope-1 CT: HU =
    stored + RescaleIntercept), ``(hu - low) / width`` equals ``(stored - (low - shift)) /
    width`` as real numbers, and both are rounded once, so the float32 results are identical
    when ``low - shift`` is itself exact in float32. That saves the HU array (one allocation
    and one pass) and is what :func:`pipelines.dicom.read_windows` and
    :func:`pipelines.nifti.read_windows` use. Returns None when a condition fails (the caller
    then builds the HU array).

    Where ``low - shift`` is an integer (every preset window of slope-1 CT), the clip is done
    on the integers before the multiply (:func:`_integer_bounds`): between the two integer
    bounds the float32 result is the one above, below them it is 0 and above them exactly 1.
    An integer clip and subtract on the 2-byte stored values cost less than a float32 clip.
    """
    if stored.ndim != 2 or stored.dtype.kind not in "ui" or stored.dtype.itemsize > 2:
        return None
    lows = _shifted_lows(stored.dtype.str, float(shift), parse_windows(windows))
    if lows is None:
        return None
    planes = np.empty((len(lows),) + stored.shape, dtype=np.float32)
    source = scratch = None
    for plane, (low, inverse, bounds) in zip(planes, lows):
        if bounds is not None:
            if scratch is None:
                scratch = np.empty(stored.shape, dtype=stored.dtype)
            np.clip(stored, bounds[0], bounds[1], out=scratch)
            np.subtract(scratch, bounds[0], out=scratch)  # 0 .. bounds[1] - bounds[0]: no overflow
            plane[...] = scratch  # exact in float32
            np.multiply(plane, inverse, out=plane)
            continue
        if source is None:  # the stored values as float32 (exact), made once
            source = stored.astype(np.float32)
        np.subtract(source, low, out=plane)
        np.multiply(plane, inverse, out=plane)
        np.clip(plane, _ZERO, _ONE, out=plane)
    return np.moveaxis(planes, 0, -1)


@functools.lru_cache(maxsize=64)
def _shifted_lows(dtype: str, shift: float, windows: tuple) -> tuple | None:
    """((low - shift, 1 / width) as float32, and :func:`_integer_bounds`, per window) for
    :func:`windows_of_shifted`, or None where its result would not be exact (see there).
    Cached: a dataset has few (dtype, shift)."""
    info = np.iinfo(np.dtype(dtype))
    if not shift.is_integer() or max(-int(info.min), int(info.max)) + abs(shift) >= 2**24:
        return None  # every stored + shift must be exact in float32
    lows = []
    for center, width in windows:
        low = float(np.float32(center - width / 2.0)) - shift  # exact in float64
        if float(np.float32(low)) != low:
            return None
        inverse = _reciprocal(width)
        lows.append((np.float32(low), inverse, _integer_bounds(low, inverse, info)))
    return tuple(lows)


def _integer_bounds(low: float, inverse: np.float32, info: np.iinfo):
    """Stored-value bounds ``(a, b)`` of ``dtype`` (``info``) for which, for every stored
    integer ``x``, ``clip((x - low) * inverse, 0, 1)`` in float32 equals ``(clip(x, a, b) - a)
    * inverse`` in float32; None where there are none (then the float clip is used).

    ``a`` is ``low`` itself (an integer): below it the result is 0, and at it ``0 * inverse``.
    ``b`` is the first integer whose product rounds to 1 or more, kept only if it rounds to
    exactly 1 (then everything above is 1, as the clip gives; the product is monotone in
    ``x``), or the dtype's maximum if no stored value reaches 1. ``b - a`` must fit the dtype.
    Every ``x - low`` is exact (integers below 2**24), so each side rounds once, the same way.
    """
    if not low.is_integer() or not info.min <= low <= info.max:
        return None
    a = int(low)

    def unit(x: int) -> np.float32:
        return np.float32(np.float32(x - a) * inverse)

    b = a + max(int(1.0 / float(inverse)) - 2, 0)
    while b > a and unit(b) >= 1:
        b -= 1
    while b <= info.max and unit(b) < 1:
        b += 1
    if b > info.max:
        b = int(info.max)
    elif unit(b) != 1:
        return None
    return (a, b) if b - a <= info.max else None


_ZERO, _ONE = np.float32(0.0), np.float32(1.0)


def _reciprocal(width: float) -> np.float32:
    """``1 / width`` rounded once to float32: every window multiplies by this same number."""
    return np.float32(1.0 / float(width))


def to_unit(image: np.ndarray) -> np.ndarray:
    """Integer image -> float32 in [0, 1] by its dtype range (uint8 /255, uint16 /65535).

    Float input is assumed already in [0, 1] and is clipped. Bool becomes 0/1.
    """
    image = np.asarray(image)
    if image.dtype == bool:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        if info.min < 0:
            raise ValueError(f"to_unit expects unsigned integer images, got {image.dtype}")
        return (image.astype(np.float32) / float(info.max)).astype(np.float32)
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def ensure_hwc(image: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 1); (H, W, C) unchanged; anything else ValueError."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image[..., None]
    if image.ndim == 3:
        return image
    raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")


def resize(image: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """Bilinear resize of an (H, W, C) or (H, W) float image to ``size`` ((H, W) or int).

    Uses Pillow's float mode per channel (antialiased when shrinking), so worker processes
    need no TensorFlow. The dtype is kept float32; no renormalisation.
    """
    from PIL import Image

    height, width = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    image = np.asarray(image, dtype=np.float32)
    squeeze = image.ndim == 2
    image = ensure_hwc(image)
    if image.shape[:2] == (height, width):
        return image[..., 0] if squeeze else image
    out = np.empty((height, width, image.shape[-1]), dtype=np.float32)
    for c in range(image.shape[-1]):
        pil = Image.fromarray(np.ascontiguousarray(image[..., c]))  # float32 -> mode "F"
        out[..., c] = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    return out[..., 0] if squeeze else out


# Rounding to 8 bits: floor(x * 255 + ROUND_OFFSET). The offset is a hair above one half, so an
# exact half (a bilinear average of two neighbouring levels, which resizing makes often) always
# rounds up, and the decision boundary sits where real images put almost no values. With plain
# half-to-even rounding, the last-bit differences between two resize implementations (Pillow here,
# TensorFlow in the serving graph) flipped about 0.5% of the pixels of resized JPEGs by a level.
ROUND_OFFSET = 0.5 + 2.0**-10
# The cache's levels (uint8) and the ITU-R BT.601 luma weights, applied to float values in
# [0, 1]: shared by pipelines.preprocessing and its TensorFlow twins.
LEVELS = 255
GREY_WEIGHTS = (0.299, 0.587, 0.114)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 levels (the cache's storage format): ``floor(x * 255 + 0.500977)``."""
    scaled = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * np.float32(255.0)
    return np.floor(scaled + np.float32(ROUND_OFFSET)).astype(np.uint8)
