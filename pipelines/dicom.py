"""DICOM -> Hounsfield units (or the modality's own units), with the known fixes, and safe headers.

Order of operations in :func:`read_hu`, following DICOM PS3.3 C.11 (modality LUT, then VOI
LUT / window, then presentation):

1. decode the stored values (pydicom; JPEG, JPEG-LS, JPEG 2000 and RLE through the pylibjpeg
   plugins). Signed data (PixelRepresentation 1, including BitsStored < BitsAllocated) comes
   back sign-extended from pydicom.
2. the RSNA 12-bit fix (on by default): some RSNA 2019 ICH slices store 12-bit unsigned values
   whose padding wrapped around, with a RescaleIntercept near 0 instead of about -1024. Where
   BitsStored == 12, PixelRepresentation == 0, the Modality is CT (or absent) and
   RescaleIntercept > -100, the stored value ``x`` is replaced by ``(x + 1000) mod 4096`` and the
   intercept by -1000. This is the correction that circulated in the RSNA 2019 competition;
   it leaves every other file alone.
3. the modality LUT: ``RescaleSlope * x + RescaleIntercept`` (from the top level, or the
   per-frame / shared functional groups of enhanced multi-frame files); a ModalityLUTSequence
   is applied with pydicom's ``apply_modality_lut``. For CT the result is HU.
4. MONOCHROME1 (low values bright) is inverted about its representable range, so that larger
   always means brighter; stored windows are mirrored the same way (:func:`stored_windows`).

Multi-frame policy: ``frame=None`` reads a single-frame file and refuses a multi-frame one
with a DataError that says how many frames it has; pass ``frame=i`` (0-based, as the
manifest's ``slice`` column does) for one frame, or use :func:`read_frames` for all of them.

No function here logs or returns identifying header values: :func:`read_header_safe` returns
only the whitelisted technical fields plus PatientID / StudyInstanceUID / SeriesInstanceUID /
SOPInstanceUID (the IDs the manifest needs; ``prepare`` pseudonymises patient ids), and error
messages name the file and the problem, never header contents.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from pipelines.manifest import DataError

# The only header fields read_header_safe ever reads or returns (keyword -> output key).
SAFE_HEADER_FIELDS = {
    "PatientID": "patient_id",
    "StudyInstanceUID": "study_id",
    "SeriesInstanceUID": "series_id",
    "SOPInstanceUID": "sop_instance_uid",
    "Modality": "modality",
    "Rows": "rows",
    "Columns": "columns",
    "NumberOfFrames": "frames",
    "BitsStored": "bits_stored",
    "PixelRepresentation": "pixel_representation",
    "PhotometricInterpretation": "photometric",
    "RescaleSlope": "rescale_slope",
    "RescaleIntercept": "rescale_intercept",
    "WindowCenter": "window_center",
    "WindowWidth": "window_width",
    "ImagePositionPatient": "image_position",
    "ImageOrientationPatient": "image_orientation",
    "InstanceNumber": "instance_number",
    "PixelSpacing": "pixel_spacing",
    "SliceThickness": "slice_thickness",
    "SeriesDescription": "series_description",
}
_SAFE_TAGS = [Tag(k) for k in SAFE_HEADER_FIELDS]

# Identifying keywords that must never leave this module (checked by the tests).
IDENTIFYING_FIELDS = (
    "PatientName", "PatientBirthDate", "PatientSex", "PatientAge", "PatientAddress",
    "OtherPatientIDs", "OtherPatientNames", "InstitutionName", "InstitutionAddress",
    "ReferringPhysicianName", "AccessionNumber", "StudyDate", "StudyTime", "AcquisitionDate",
    "ContentDate", "OperatorsName", "PerformingPhysicianName", "StationName", "DeviceSerialNumber",
)


# --------------------------------------------------------------------------------------- reading
def _dcmread(path, **kwargs) -> pydicom.Dataset:
    path = Path(path)
    if not path.exists():
        raise DataError(path, "DICOM file does not exist")
    if path.is_dir():
        raise DataError(path, "expected a DICOM file but this is a directory")
    try:
        try:
            return pydicom.dcmread(path, **kwargs)
        except InvalidDicomError:
            # no 128-byte preamble + "DICM": accept it only if it parses as a dataset
            ds = pydicom.dcmread(path, force=True, **kwargs)
            if "SOPClassUID" not in ds and "PixelData" not in ds and "Rows" not in ds:
                raise DataError(path, "is not a DICOM file (no DICM header and no image elements)") from None
            return ds
    except DataError:
        raise
    except (EOFError, struct.error, zlib.error, OSError) as exc:
        raise DataError(path, f"DICOM header is truncated or corrupt ({type(exc).__name__})") from None
    except Exception as exc:  # pydicom raises assorted ValueError/KeyError/TypeError on junk
        raise DataError(path, f"cannot be read as DICOM ({type(exc).__name__})") from None


def _frames(ds) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _decode(ds, path, frame: int | None) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(path, "DICOM file has no pixel data (a header-only or non-image object)")
    for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if keyword not in ds:
            raise DataError(path, f"DICOM file lacks {keyword}, so its pixel data cannot be decoded")
    try:
        from pydicom.pixels import pixel_array

        arr = pixel_array(ds, index=frame)
    except Exception as exc:
        text = str(exc).splitlines()[0][:160] if str(exc) else ""
        if "length" in text.lower() or "truncat" in text.lower() or isinstance(exc, EOFError):
            problem = "pixel data is shorter than the header says (truncated or corrupt file)"
        elif "plugin" in text.lower() or "decod" in text.lower():
            problem = f"pixel data cannot be decoded ({text}); install the pylibjpeg plugins"
        else:
            problem = f"pixel data cannot be decoded ({type(exc).__name__}: {text})"
        raise DataError(path, problem) from None
    if arr.ndim == 3 and ds.get("SamplesPerPixel", 1) == 3:
        raise DataError(path, "is a colour DICOM (SamplesPerPixel 3); only greyscale is supported")
    if arr.ndim != 2:
        raise DataError(path, f"decoded to shape {arr.shape}; expected one 2-D greyscale frame")
    return arr


def _rescale(ds, frame: int | None) -> tuple[float, float] | None:
    """(slope, intercept) from the top level or the functional groups; None if absent."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame is not None and frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        seq = group.get("PixelValueTransformationSequence")
        if seq:
            item = seq[0]
            return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)
    return None


def needs_rsna_fix(ds) -> bool:
    """True for the wrapped 12-bit RSNA slices (see module docstring, step 2)."""
    try:
        return (
            int(ds.get("BitsStored", 0)) == 12
            and int(ds.get("PixelRepresentation", 1)) == 0
            and "RescaleIntercept" in ds
            and float(ds.RescaleIntercept) > -100
            and str(ds.get("Modality", "CT")).upper() == "CT"
        )
    except (TypeError, ValueError):
        return False


def _to_modality_units(ds, stored: np.ndarray, frame: int | None, rsna_fix: bool) -> np.ndarray:
    intercept_override = None
    if rsna_fix and needs_rsna_fix(ds):
        stored = (stored.astype(np.int32) + 1000) % 4096
        intercept_override = -1000.0
    rescale = _rescale(ds, frame)
    if rescale is None and "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    slope, intercept = rescale if rescale is not None else (1.0, 0.0)
    if intercept_override is not None:
        intercept = intercept_override
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def _representable_range(ds, frame: int | None, rsna_fix: bool = True) -> tuple[float, float]:
    """The modality-unit range the stored bits can express (for MONOCHROME1 inversion)."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    slope, intercept = _rescale(ds, frame) or (1.0, 0.0)
    if rsna_fix and needs_rsna_fix(ds):
        intercept = -1000.0
    a, b = lo * slope + intercept, hi * slope + intercept
    return (min(a, b), max(a, b))


def read_hu(path, *, frame: int | None = None, rsna_fix: bool = True) -> np.ndarray:
    """One DICOM image -> (H, W) float32 in modality units (HU for CT).

    ``frame``: None for single-frame files (a multi-frame file then raises DataError naming
    its frame count), or a 0-based frame index (negative counts from the end). Raises
    :class:`DataError` for a missing, non-DICOM, truncated or pixel-less file.
    """
    ds = _dcmread(path)
    return hu_from_dataset(ds, frame=frame, rsna_fix=rsna_fix, path=path)


def hu_from_dataset(ds, *, frame: int | None = None, rsna_fix: bool = True, path=None) -> np.ndarray:
    """:func:`read_hu` for an already-read :class:`pydicom.Dataset`."""
    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    n = _frames(ds)
    if frame is None:
        if n > 1:
            raise DataError(
                path,
                f"is a multi-frame DICOM with {n} frames; pass frame=0..{n - 1} (the manifest's "
                "slice column) or use read_frames",
            )
        index = None
    else:
        index = int(frame) + n if int(frame) < 0 else int(frame)
        if not 0 <= index < n:
            raise DataError(path, f"frame {frame} is out of range for a DICOM with {n} frame(s)")
        if n == 1:
            index = None
    stored = _decode(ds, path, index)
    values = _to_modality_units(ds, stored, index, rsna_fix)
    if str(ds.PhotometricInterpretation).upper() == "MONOCHROME1":
        lo, hi = _representable_range(ds, index, rsna_fix)
        values = (lo + hi) - values
    return values.astype(np.float32, copy=False)


def read_frames(path, *, rsna_fix: bool = True) -> np.ndarray:
    """Every frame of a DICOM file -> (N, H, W) float32 modality units (N = 1 for single)."""
    ds = _dcmread(path)
    n = _frames(ds)
    if n == 1:
        return hu_from_dataset(ds, rsna_fix=rsna_fix, path=path)[None]
    return np.stack([hu_from_dataset(ds, frame=i, rsna_fix=rsna_fix, path=path) for i in range(n)])


def _floats(value) -> list[float]:
    if value is None or value == "":
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return [float(v) for v in value]
    return [float(value)]


def stored_windows(ds) -> list[tuple[float, float]]:
    """The header's (WindowCenter, WindowWidth) pairs, in modality units as :func:`read_hu` gives.

    Multi-valued centre/width lists are paired in order (a shorter list repeats its last
    value); for MONOCHROME1 the centres are mirrored like the pixels. Empty if absent.
    """
    centers = _floats(ds.get("WindowCenter"))
    widths = _floats(ds.get("WindowWidth"))
    if not centers or not widths:
        return []
    n = max(len(centers), len(widths))
    centers += [centers[-1]] * (n - len(centers))
    widths += [widths[-1]] * (n - len(widths))
    pairs = [(c, w) for c, w in zip(centers, widths) if w > 0]
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        lo, hi = _representable_range(ds, None)
        pairs = [(lo + hi - c, w) for c, w in pairs]
    return pairs


# --------------------------------------------------------------------------------------- headers
def read_header_safe(path) -> dict:
    """The non-identifying header fields of a DICOM file (pixel data is not read).

    Returns a dict with the keys of :data:`SAFE_HEADER_FIELDS` values that are present:
    ``patient_id``, ``study_id``, ``series_id``, ``sop_instance_uid`` as str; ``position``
    (z of ImagePositionPatient, mm) when present; ``frames`` (int, default 1);
    ``window_center`` / ``window_width`` as lists; other numbers as float/int. Nothing else
    (no names, dates, sex, age, institution) is read from the file at all.
    """
    ds = _dcmread(path, stop_before_pixels=True, specific_tags=_SAFE_TAGS)
    out: dict = {}
    for keyword, key in SAFE_HEADER_FIELDS.items():
        if keyword not in ds:
            continue
        value = ds[keyword].value
        if value is None or value == "":
            continue
        try:
            if keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                           "Modality", "PhotometricInterpretation", "SeriesDescription"):
                out[key] = str(value).strip()
            elif keyword in ("WindowCenter", "WindowWidth", "ImagePositionPatient",
                             "ImageOrientationPatient", "PixelSpacing"):
                out[key] = _floats(value)
            elif keyword in ("Rows", "Columns", "NumberOfFrames", "BitsStored",
                             "PixelRepresentation", "InstanceNumber"):
                out[key] = int(value)
            else:
                out[key] = float(value)
        except (TypeError, ValueError):
            continue  # a malformed optional field is dropped, not echoed
    out.setdefault("frames", 1)
    if len(out.get("image_position", [])) == 3:
        out["position"] = out["image_position"][2]
    return out
