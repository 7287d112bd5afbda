"""NIfTI volumes (PhysioNet CT-ICH ``ct_scans/NNN.nii``) -> 2-D slices in HU, with nibabel.

Orientation policy
------------------
* The slice axis is the volume's **third array axis, in stored order**. That is the axis the
  PhysioNet CT-ICH slice labels (``hemorrhage_diagnosis_raw_ct.csv``, ``SliceNumber``) and
  masks index, so we never reorder or flip it: manifest ``slice = k`` is ``data[:, :, k]``.
* In-plane, ``orient="lps"`` (default) turns the slice into the DICOM viewing convention
  the RSNA slices have (rows run anterior -> posterior, columns run patient right -> left,
  i.e. the patient's right on the image's left), from the affine's axis codes
  (``nibabel.aff2axcodes``): the two in-plane array axes are transposed and flipped as needed.
  If the first two axes are not the left/right and anterior/posterior ones (a sagittal or
  coronal volume), the slice is only transposed to (axis 1, axis 0) rows/columns.
* ``orient="raw"`` returns ``data[:, :, k]`` untouched (rows = array axis 0).

Values are ``scl_slope * stored + scl_inter`` (nibabel's scaling), float32; for the
PhysioNet scans these are Hounsfield units. Only the requested slice is read from disk.

Public API: :func:`read_slice` (what the adapters use), :func:`volume_shape` (the header only)
and :func:`read_volume` (the whole volume in stored order with its affine, for 3-D work and for
inspecting a volume or its mask outside the 2-D pipeline).

Untrusted input: every failure to read the header or the voxels is a
:class:`~pipelines.manifest.DataError` naming the file and the field, never its value
(nibabel's warnings are silenced while reading: a header's ``descrip`` is free text). A
declared volume above ``max_pixels`` voxels (default :data:`MAX_PIXELS`) is refused before
any voxel is read, and voxel values that are non-finite or beyond ``MAX_ABS_VALUE`` after
scaling (a NaN voxel, an overflowing ``scl_slope`` / ``scl_inter``) are errors, never an image.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
import threading
import warnings
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np

from pipelines import transforms
from pipelines.dicom import MAX_ABS_VALUE, MAX_PIXELS
from pipelines.manifest import DataError

ORIENTS = ("lps", "raw")


class _DropRecords(logging.Filter):
    def filter(self, record) -> bool:
        return False


_QUIET = threading.local()


@contextlib.contextmanager
def _quiet():
    """Silence nibabel's warnings and its header-fixing log lines while reading.

    Re-entrant per thread: :func:`read_slice` enters it once for the whole read, and the
    steps inside it then cost a counter instead of reconfiguring the logger and filters.
    """
    depth = getattr(_QUIET, "depth", 0)
    _QUIET.depth = depth + 1
    if depth:
        try:
            yield
        finally:
            _QUIET.depth = depth
        return
    logger = nib.imageglobals.logger
    drop = _DropRecords()
    logger.addFilter(drop)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        _QUIET.depth = 0
        logger.removeFilter(drop)


def _load(path, max_pixels: int = MAX_PIXELS):
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "NIfTI file does not exist" if not path.exists() else "is not a file")
    try:
        with _quiet():
            img = nib.load(str(path))
            shape = tuple(int(s) for s in img.shape)
    except MemoryError:
        raise DataError(path, "NIfTI header cannot be read in memory (corrupt header)") from None
    except Exception as exc:  # nibabel raises assorted errors on a corrupt header
        field = _field_named(exc)
        where = f"header field {field} is invalid" if field else "the file is corrupt or not a .nii/.nii.gz"
        raise DataError(path, f"cannot be read as NIfTI ({type(exc).__name__}); {where}") from None
    if any(s < 1 for s in shape):
        raise DataError(path, "NIfTI header field dim has a zero or negative size")
    if math.prod(shape) > int(max_pixels):
        raise DataError(path, f"NIfTI header field dim declares more voxels than the limit of "
                              f"{int(max_pixels)}; it was refused before reading (pass max_pixels= "
                              "to read a genuinely large volume)")
    return img


# nibabel's messages quote header values; only the name of the field at fault is passed on.
_FIELDS = {"slope": "scl_slope", "intercept": "scl_inter", "scl_": "scl_slope / scl_inter",
           "datatype": "datatype", "data code": "datatype", "bitpix": "bitpix",
           "vox offset": "vox_offset", "vox_offset": "vox_offset", "sizeof_hdr": "sizeof_hdr",
           "dim": "dim", "shape": "dim", "pixdim": "pixdim", "magic": "magic"}


def _field_named(exc: BaseException) -> str | None:
    text = str(exc).lower()
    named = [field for word, field in _FIELDS.items() if word in text]
    return named[0] if named else None


def _voxels(img, path, index) -> np.ndarray:
    """Read ``img.dataobj[index]`` as float32; DataError if unreadable, non-finite or overflowing.

    nibabel already scaled the voxels (in float32 for int16 data with a float32 ``scl_slope``).
    Integers cannot be non-finite or beyond :data:`MAX_ABS_VALUE`, so only float data is
    checked: one min and one max (NaN propagates through both) in its own dtype, with no
    float64 copy; the float32 result is the one the float64 detour gave.
    """
    try:
        with _quiet():
            data = np.asarray(img.dataobj[index])
            if data.dtype.kind not in "uif":
                data = data.astype(np.float64)
    except MemoryError:
        raise DataError(path, "voxel data is too large to read in memory") from None
    except Exception as exc:
        raise DataError(path, f"voxel data is truncated or corrupt ({type(exc).__name__})") from None
    if data.dtype.kind in "ui":  # exact in float32 up to 32 bits; wider ints round via float64
        return data.astype(np.float32) if data.dtype.itemsize <= 4 else data.astype(np.float64).astype(np.float32)
    if data.size:
        with np.errstate(all="ignore"):
            lo, hi = float(np.min(data)), float(np.max(data))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise DataError(path, "voxel values are non-finite (NaN or inf) after scaling; the voxel "
                                  "data or header fields scl_slope / scl_inter are corrupt")
        if max(-lo, hi) > MAX_ABS_VALUE:
            raise DataError(path, f"voxel values go beyond +-{MAX_ABS_VALUE:g} after scaling, which "
                                  "overflows float32; header fields scl_slope / scl_inter are corrupt")
    # a copy unless nibabel handed us a fresh array (unscaled data is a view of the file's mmap)
    return data.astype(np.float32, copy=not data.flags.owndata)


def _check_rank(img, path) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in img.shape)
    # a trailing singleton (x, y, z, 1) is still one volume
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DataError(
            path,
            f"NIfTI has {len(img.shape)} dimension(s) with shape {tuple(img.shape)}; expected a "
            "3-D volume (x, y, slices)",
        )
    return shape  # type: ignore[return-value]


def volume_shape(path, *, max_pixels: int = MAX_PIXELS) -> tuple[int, int, int]:
    """(X, Y, slices) from the header alone; DataError on a wrong rank or unreadable file."""
    img = _load(path, max_pixels)
    return _check_rank(img, path)


def read_volume(path, *, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """The whole volume as float32 (X, Y, slices) in stored order, and its 4x4 affine."""
    img = _load(path, max_pixels)
    shape = _check_rank(img, path)
    data = _voxels(img, path, ...).reshape(shape)
    return data, _affine(img, path)


def _affine(img, path) -> np.ndarray:
    try:
        with _quiet():
            affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:
        raise DataError(path, f"NIfTI header affine cannot be read ({type(exc).__name__})") from None
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise DataError(path, "NIfTI header fields srow / pixdim / quatern give a non-finite affine")
    return affine


_AXCODES: dict[bytes, tuple | None] = {}


def _axcodes(affine: np.ndarray) -> tuple | None:
    """``nib.aff2axcodes(affine)`` (None if it has none), remembered per affine: every slice of
    a volume, and usually every volume of a dataset, has the same one, and nibabel's answer
    (an SVD) costs about as much as reading the slice."""
    key = affine.tobytes()
    if key not in _AXCODES:
        try:
            with _quiet():
                codes = tuple(nib.aff2axcodes(affine))
        except Exception:
            codes = None
        if len(_AXCODES) >= 1024:
            _AXCODES.clear()
        _AXCODES[key] = codes
    return _AXCODES[key]


def _inplane(slice2d: np.ndarray, affine: np.ndarray, orient: str) -> np.ndarray:
    if orient == "raw":
        return slice2d
    codes = _axcodes(affine)
    if codes is None:  # a degenerate affine has no axis codes: treat as not axial
        return slice2d.T
    a0, a1 = codes[0], codes[1]
    lr, ap = {"L", "R"}, {"A", "P"}
    if {a0, a1} & lr and {a0, a1} & ap:
        # make array axis order (AP, LR) -> rows, columns
        if a0 in lr:
            slice2d, row_code, col_code = slice2d.T, a1, a0
        else:
            row_code, col_code = a0, a1
        if row_code == "A":  # index grows toward anterior; rows must grow toward posterior
            slice2d = slice2d[::-1, :]
        if col_code == "R":  # columns must grow toward patient left
            slice2d = slice2d[:, ::-1]
        return slice2d
    return slice2d.T


def read_slice(path, index: int, *, orient: str = "lps", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Slice ``index`` (0-based, third axis, stored order) -> (H, W) float32 HU.

    See the module docstring for ``orient``. DataError on a bad file, wrong rank or an
    out-of-range index, and for a volume declaring more than ``max_pixels`` voxels.
    """
    if orient not in ORIENTS:
        raise ValueError(f"orient must be one of {ORIENTS}, got {orient!r}")
    with _quiet():  # once for the whole read
        img = _load(path, max_pixels)
        shape = _check_rank(img, path)
        depth = shape[2]
        k = int(index)
        if not 0 <= k < depth:
            raise DataError(path, f"slice {index} is out of range for a volume with {depth} slices")
        extra = (0,) * (len(img.shape) - 3)
        data = _voxels(img, path, (slice(None), slice(None), k, *extra))
        affine = _affine(img, path)
        return np.ascontiguousarray(_inplane(data, affine, orient), dtype=np.float32)


def read_windows(path, index: int, windows=None, *, orient: str = "lps",
                 max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``transforms.apply_windows(read_slice(path, index, ...), windows)``, bit for bit, faster.

    For an uncompressed ``.nii`` of 8/16-bit integers with nibabel's slope 1 and an integral
    intercept (the PhysioNet scans: int16, ``scl_inter`` -1024), the slice's stored integers
    are read straight from the file (:func:`_fast_stored`: the header is parsed by nibabel
    once per distinct header, then each slice is one ``pread`` of its bytes), reoriented as
    integers and windowed by :func:`pipelines.transforms.windows_of_shifted`. Anything else,
    and every file that would fail a check, takes the :func:`read_slice` path, so the checks
    and errors are :func:`read_slice`'s.
    """
    if orient not in ORIENTS:
        raise ValueError(f"orient must be one of {ORIENTS}, got {orient!r}")
    fast = _fast_stored(path, index, max_pixels)
    if fast is not None:
        stored, plan = fast
        out = transforms.windows_of_shifted(_inplane(stored, plan.affine, orient), plan.inter, windows)
        if out is not None:
            return out
    return transforms.apply_windows(read_slice(path, index, orient=orient, max_pixels=max_pixels),
                                    windows)


class _Plan(NamedTuple):
    """What reading one slice of an uncompressed integer ``.nii`` needs, from its header."""

    shape: tuple[int, int, int]  # (X, Y, slices), trailing singletons dropped
    voxels: int  # every voxel the header declares (the max_pixels check)
    dtype: np.dtype  # stored integers, with the file's byte order
    offset: int  # vox_offset: where the voxels start
    inter: float  # scl_inter (slope is 1)
    affine: np.ndarray


# NIfTI-2's 540-byte header and the 4-byte extension flag; NIfTI-1's 348 + 4 fit inside it.
_HEAD_BYTES = 544
_PLANS: dict[bytes, _Plan | None] = {}


def _fast_stored(path, index, max_pixels) -> tuple[np.ndarray, _Plan] | None:
    """(the stored integers of slice ``index`` as an (X, Y) view, the volume's plan), or None.

    The plan is remembered by the file's first :data:`_HEAD_BYTES` bytes, which hold every
    header field it depends on: a volume's slices, read one by one, parse its header once
    (nibabel's parse costs more than reading a 512 x 512 slice), and a file rewritten with a
    new header has new bytes. Each call opens the file, reads those bytes, checks it is a
    regular file, and reads the slice's bytes (F order: slice ``k`` of the first volume is
    one contiguous run). None, for the :func:`read_slice` path, whenever the file is not this
    simple case or anything is amiss (a missing or special file, a refused volume, an index
    out of range, a slice cut short), so errors are always :func:`read_slice`'s: like it, a
    volume cut short loses only the slices it lacks.
    """
    name = os.fspath(path)
    if not isinstance(name, str) or not name.endswith(".nii"):
        return None
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.pread(fd, _HEAD_BYTES, 0)
        if head in _PLANS:
            plan = _PLANS[head]
        else:
            plan = _plan(name, max_pixels)
            if os.pread(fd, _HEAD_BYTES, 0) != head:  # rewritten while nibabel read it
                return None
            if len(_PLANS) >= 1024:
                _PLANS.clear()
            _PLANS[head] = plan
        k = int(index)
        if plan is None or plan.voxels > int(max_pixels) or not 0 <= k < plan.shape[2]:
            return None
        width, height = plan.shape[0], plan.shape[1]
        count = width * height * plan.dtype.itemsize
        data = os.pread(fd, count, plan.offset + k * count)
    except (OSError, OverflowError):
        return None
    finally:
        os.close(fd)
    if len(data) != count:
        return None
    return np.frombuffer(data, plan.dtype).reshape(height, width).T, plan


def _plan(name: str, max_pixels) -> _Plan | None:
    """The :class:`_Plan` of an uncompressed integer ``.nii`` whose values are exactly
    ``stored + scl_inter``; None for any other file (or one nibabel cannot read)."""
    try:
        with _quiet():
            img = _load(name, max(int(max_pixels), MAX_PIXELS))
            shape = _check_rank(img, name)
            proxy = img.dataobj
            slope, inter = float(proxy.slope), float(proxy.inter)
            dtype = np.dtype(proxy.dtype)
            order, offset = proxy.order, int(proxy.offset)
            affine = _affine(img, name)
    except Exception:
        return None
    if (slope != 1.0 or not math.isfinite(inter) or not inter.is_integer() or order != "F"
            or dtype.kind not in "ui" or dtype.itemsize > 2):
        return None
    voxels = math.prod(int(s) for s in img.shape)
    return _Plan(shape, voxels, dtype, offset, inter, affine)
