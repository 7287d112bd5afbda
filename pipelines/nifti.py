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
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from pipelines.manifest import DataError

ORIENTS = ("lps", "raw")


def _load(path):
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "NIfTI file does not exist" if not path.exists() else "is not a file")
    try:
        img = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error, gzip.BadGzipFile,
            ValueError) as exc:
        raise DataError(path, f"cannot be read as NIfTI ({type(exc).__name__}); the file is corrupt "
                              "or not a .nii/.nii.gz") from None
    return img


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


def volume_shape(path) -> tuple[int, int, int]:
    """(X, Y, slices) from the header alone; DataError on a wrong rank or unreadable file."""
    img = _load(path)
    return _check_rank(img, path)


def read_volume(path) -> tuple[np.ndarray, np.ndarray]:
    """The whole volume as float32 (X, Y, slices) in stored order, and its 4x4 affine."""
    img = _load(path)
    shape = _check_rank(img, path)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise DataError(path, f"voxel data is truncated or corrupt ({type(exc).__name__})") from None
    return data, np.asarray(img.affine)


def _inplane(slice2d: np.ndarray, affine: np.ndarray, orient: str) -> np.ndarray:
    if orient == "raw":
        return slice2d
    codes = nib.aff2axcodes(affine)
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


def read_slice(path, index: int, *, orient: str = "lps") -> np.ndarray:
    """Slice ``index`` (0-based, third axis, stored order) -> (H, W) float32 HU.

    See the module docstring for ``orient``. DataError on a bad file, wrong rank or an
    out-of-range index.
    """
    if orient not in ORIENTS:
        raise ValueError(f"orient must be one of {ORIENTS}, got {orient!r}")
    img = _load(path)
    shape = _check_rank(img, path)
    depth = shape[2]
    k = int(index)
    if not 0 <= k < depth:
        raise DataError(path, f"slice {index} is out of range for a volume with {depth} slices")
    try:
        proxy = img.dataobj
        if len(img.shape) > 3:
            extra = (0,) * (len(img.shape) - 3)
            data = np.asarray(proxy[(slice(None), slice(None), k, *extra)], dtype=np.float32)
        else:
            data = np.asarray(proxy[:, :, k], dtype=np.float32)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise DataError(path, f"voxel data is truncated or corrupt ({type(exc).__name__})") from None
    return np.ascontiguousarray(_inplane(data, np.asarray(img.affine), orient), dtype=np.float32)
