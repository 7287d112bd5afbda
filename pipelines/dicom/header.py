"""DICOM headers read safely: pydicom's output silenced, elements read without echoing values.

Everything in :mod:`pipelines.dicom` reads files through here: :func:`read_dataset` (every
failure a :class:`~pipelines.manifest.DataError` naming the file, never a value), inside
:func:`quiet` (pydicom's warnings and log records quote raw header values, so they are dropped
while a read runs), and the element readers (:func:`element`, :func:`int_element`,
:func:`float_element`) that name the tag at fault and never its contents. Also here: the size
limits checked before any pixel is decoded (:data:`MAX_PIXELS`, :func:`check_size`), the
whitelist of header fields (:data:`SAFE_HEADER_FIELDS`, :func:`read_header_safe`) and the
header test for the RSNA 12-bit fix (:func:`needs_rsna_fix`).
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from pipelines.bounded import check_deflate_stream
from pipelines.manifest import DataError

__all__ = [
    "IDENTIFYING_FIELDS", "MAX_ABS_VALUE", "MAX_PIXELS", "SAFE_HEADER_FIELDS", "check_size",
    "element", "float_element", "floats", "frame_count", "int_element", "needs_rsna_fix",
    "quiet", "read_dataset", "read_header_safe", "reason", "tag_for",
]


# Declared pixels (Rows x Columns x NumberOfFrames x SamplesPerPixel) above which a file is
# refused before decoding: 2**27, e.g. 512 frames of 512 x 512, or one 11585 x 11585 frame
# (about 0.5 GB as float32). Pass ``max_pixels=`` to read_hu / read_frames for another limit.
MAX_PIXELS = 1 << 27
# Modality-unit values beyond this are a corrupt RescaleSlope / RescaleIntercept: they are
# near float32's range (3.4e38) and no modality measures anything like them.
MAX_ABS_VALUE = 1e30

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
class _DropRecords(logging.Filter):
    def filter(self, record) -> bool:
        return False


class _Quiet:
    """Silence pydicom's warnings and log records (they quote raw header values) while reading.

    The filter drops records logged on the ``pydicom`` logger itself; records of its children
    (the pixel decoders) stop there because it stops propagating for the duration.

    Re-entrant and per thread: only the outermost ``with quiet()`` reconfigures the logger and
    the warning filters (a read nests dozens of element accesses, each of which asks for
    quiet; the inner ones cost a counter). The outermost one also holds the read's memo of
    header values (:func:`element`), dropped when it exits.
    """

    _state = threading.local()

    def __enter__(self):
        state = self._state
        depth = getattr(state, "depth", 0)
        state.depth = depth + 1
        if depth:
            return self
        logger = logging.getLogger("pydicom")
        drop, sink = _DropRecords(), logging.NullHandler()
        caught = warnings.catch_warnings()
        state.saved = (logger, drop, sink, logger.propagate, caught)
        state.memo = {}
        logger.addFilter(drop)
        logger.addHandler(sink)
        logger.propagate = False
        caught.__enter__()
        warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc) -> bool:
        state = self._state
        state.depth -= 1
        if state.depth:
            return False
        logger, drop, sink, propagate, caught = state.saved
        state.saved = state.memo = None
        caught.__exit__(*exc)
        logger.propagate = propagate
        logger.removeHandler(sink)
        logger.removeFilter(drop)
        return False

    @classmethod
    def memo(cls) -> dict | None:
        return getattr(cls._state, "memo", None)


_QUIET = _Quiet()


def quiet() -> _Quiet:
    """The context in which pipelines.dicom reads files (see :class:`_Quiet`)."""
    return _QUIET


def reason(exc: BaseException) -> str:
    """A value-free description of why pydicom could not read an element."""
    text = str(exc)
    if isinstance(exc, NotImplementedError) and "Value Representation" in text:
        return "unknown value representation"
    if type(exc).__name__ == "BytesLengthException" or "length" in text.lower():
        return "its value has the wrong length for its value representation"
    if isinstance(exc, (ValueError, TypeError, OverflowError)):
        return "its value is not valid for its value representation"
    return type(exc).__name__


class _BoundedFile(io.BufferedReader):
    """A DICOM file whose read-to-the-end is checked by :mod:`pipelines.bounded` first.

    pydicom reads a file to its end in one place only: a Deflated Explicit VR Little Endian
    dataset, which it then inflates with ``zlib.decompress`` and no limit (a 1 MB file became
    1 GB). Here that read first inflates the rest of the file in steps, keeping nothing, and
    refuses it past the limit, so pydicom never sees a bomb. Every other read is the plain
    buffered one. Constructed as ``open`` is (pydicom reopens deferred reads that way).
    """

    def __init__(self, name, mode: str = "rb"):
        super().__init__(io.FileIO(name, mode))

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            start = self.tell()
            compressed = os.fstat(self.fileno()).st_size - start
            check_deflate_stream(self, self.name, "its deflated dataset",
                                 compressed_size=compressed)
            self.seek(start)
        return super().read(size)


_DEFLATED = pydicom.uid.DeflatedExplicitVRLittleEndian.encode()
_VRS = frozenset(vr.value.encode() for vr in VR)
_LONG_VRS = frozenset(vr.value.encode() for vr in EXPLICIT_VR_LENGTH_32)
_HEAD = 8192


def _plainly_not_deflated(head: bytes) -> bool:
    """True when the file meta in ``head`` plainly names a transfer syntax other than deflate.

    The check costs a walk over a dozen elements of bytes already buffered; anything unusual
    (no preamble, an implicit-VR or over-long meta, the deflate UID anywhere in the head)
    is False, and the file is read through :class:`_BoundedFile`, whose per-read cost a
    plain file is spared.
    """
    if head[128:132] != b"DICM" or _DEFLATED in head:
        return False
    pos, syntax = 132, None
    while pos + 12 <= len(head):
        group, number = struct.unpack_from("<HH", head, pos)
        if group != 2:
            return syntax is not None
        vr = head[pos + 4:pos + 6]
        if vr not in _VRS:
            return False
        if vr in _LONG_VRS:
            start, length = pos + 12, struct.unpack_from("<I", head, pos + 8)[0]
        else:
            start, length = pos + 8, struct.unpack_from("<H", head, pos + 6)[0]
        if number == 0x0010:
            syntax = head[start:start + length]
        pos = start + length
    return False


def _dcmread(path: Path, **kwargs) -> pydicom.Dataset:
    with open(path, "rb") as fp:
        if _plainly_not_deflated(fp.peek(_HEAD)[:_HEAD]):
            return pydicom.dcmread(fp, **kwargs)
    with _BoundedFile(str(path)) as fp:
        return pydicom.dcmread(fp, **kwargs)


def read_dataset(path, **kwargs) -> pydicom.Dataset:
    path = Path(path)
    try:
        with quiet():
            try:
                return _dcmread(path, **kwargs)
            except InvalidDicomError:
                # no 128-byte preamble + "DICM": accept it only if it parses as a dataset
                ds = _dcmread(path, force=True, **kwargs)
                if "SOPClassUID" not in ds and "PixelData" not in ds and "Rows" not in ds:
                    raise DataError(path, "is not a DICOM file (no DICM header and no image elements)") from None
                return ds
    except DataError:
        raise
    except OSError as exc:  # checked here, not before: two stat calls on every good read
        if not path.exists():
            raise DataError(path, "DICOM file does not exist") from None
        if path.is_dir():
            raise DataError(path, "expected a DICOM file but this is a directory") from None
        raise DataError(path, f"DICOM header is truncated or corrupt ({type(exc).__name__})") from None
    except (EOFError, struct.error, zlib.error) as exc:
        raise DataError(path, f"DICOM header is truncated or corrupt ({type(exc).__name__})") from None
    except Exception as exc:  # pydicom raises assorted ValueError/KeyError/TypeError on junk
        raise DataError(path, f"cannot be read as DICOM ({type(exc).__name__})") from None


_TAGS: dict[str, Tag] = {}


def tag_for(keyword: str) -> Tag:
    """``Tag(keyword)``, remembered: pydicom's keyword lookup costs ten times the element read."""
    tag = _TAGS.get(keyword)
    if tag is None:
        tag = _TAGS[keyword] = Tag(keyword)
    return tag


_SLOW = object()
# the pixel-module elements every read looks up, with their value representation
_FAST_VR = {
    "Rows": "US", "Columns": "US", "BitsAllocated": "US", "BitsStored": "US",
    "PixelRepresentation": "US", "SamplesPerPixel": "US", "NumberOfFrames": "IS",
    "RescaleSlope": "DS", "RescaleIntercept": "DS", "PhotometricInterpretation": "CS",
    "Modality": "CS",
}
_FAST_TEXT = {
    "DS": (re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"), float),
    "IS": (re.compile(r"[+-]?\d+"), int),
    "CS": (re.compile(r"[A-Z0-9_ ]*"), str),
}


def _raw_value(ds, tag: Tag, keyword: str):
    """The plain value of a pixel-module element read from its raw bytes, or ``_SLOW``.

    pydicom converts a raw element through its hooks and validators, which costs more than
    decoding a 512x512 slice's header needs: this reads the common plain forms directly (a
    little-endian single US; a single DS / IS / CS in plain ASCII) and gives ``_SLOW`` for
    anything else (other VRs, multiple values, odd lengths, unusual text), which then takes
    pydicom's path with its checks and errors. Absent elements are None, as there.
    """
    vr = _FAST_VR.get(keyword)
    if vr is None:
        return _SLOW
    try:
        raw = ds.get_item(tag)
    except Exception:
        return _SLOW
    if raw is None:
        return None
    if not getattr(raw, "is_raw", False):
        return raw.value  # already converted by pydicom
    if raw.VR not in (None, vr) or not raw.is_little_endian or not isinstance(raw.value, bytes):
        return _SLOW
    value = raw.value
    if vr == "US":
        return int.from_bytes(value, "little") if len(value) == 2 else _SLOW
    try:
        text = value.decode("ascii").strip(" \x00")
    except UnicodeDecodeError:
        return _SLOW
    pattern, convert = _FAST_TEXT[vr]
    return convert(text) if pattern.fullmatch(text) else _SLOW


def element(ds, keyword: str, path, default=None):
    """The value of header element ``keyword`` (``default`` if absent or empty).

    pydicom converts raw values lazily, so junk surfaces here: DataError naming the tag,
    never the value. Within one read (an outermost ``with quiet()``) each element of a
    dataset is looked up once.
    """
    memo = _Quiet.memo()
    key = (id(ds), keyword)
    if memo is not None and key in memo:
        value = memo[key][1]
    else:
        tag = tag_for(keyword)
        value = _raw_value(ds, tag, keyword)
        if value is _SLOW:
            try:
                with quiet():
                    value = ds[tag].value if tag in ds else None
            except Exception as exc:
                raise DataError(path, f"DICOM header element {keyword} cannot be read "
                                      f"({reason(exc)})") from None
        if memo is not None:
            memo[key] = (ds, value)  # ds kept alive, so its id cannot be reused within the read
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return default
    return value


def int_element(ds, keyword: str, path, default: int | None, lo: int, hi: int) -> int | None:
    value = element(ds, keyword, path)
    if value is None:
        return default
    try:
        if isinstance(value, (MultiValue, list, tuple, bytes)):
            raise TypeError
        number = float(value)
        if not number.is_integer():
            raise ValueError
        number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise DataError(path, f"DICOM header element {keyword} is not a whole number") from None
    if not lo <= number <= hi:
        raise DataError(path, f"DICOM header element {keyword} is outside {lo}..{hi}")
    return number


def float_element(ds, keyword: str, path, default: float) -> float:
    value = element(ds, keyword, path)
    if value is None:
        return default
    try:
        if isinstance(value, (MultiValue, list, tuple, bytes)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise DataError(path, f"DICOM header element {keyword} is not a number") from None
    if not np.isfinite(number):
        raise DataError(path, f"DICOM header element {keyword} is not a finite number (NaN or inf)")
    return number


def frame_count(ds, path=None) -> int:
    """NumberOfFrames (1 when absent); DataError if it is not a whole number >= 1."""
    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    return int_element(ds, "NumberOfFrames", path, 1, 1, 2**31 - 1)


def check_size(ds, path, max_pixels: int) -> None:
    """Refuse a declared image larger than ``max_pixels`` before anything is decoded."""
    rows = int_element(ds, "Rows", path, None, 1, 65535)
    columns = int_element(ds, "Columns", path, None, 1, 65535)
    for keyword, value in (("Rows", rows), ("Columns", columns)):
        if value is None:
            raise DataError(path, f"DICOM header element {keyword} is missing, so the image size "
                                  "is unknown")
    samples = int_element(ds, "SamplesPerPixel", path, 1, 1, 4)
    int_element(ds, "BitsAllocated", path, None, 1, 64)
    declared = rows * columns * samples * frame_count(ds, path)
    if declared > int(max_pixels):
        raise DataError(
            path,
            "declares more pixels (Rows x Columns x NumberOfFrames x SamplesPerPixel) than the "
            f"limit of {int(max_pixels)}; it was refused before decoding (pass max_pixels= to "
            "read a genuinely large image)",
        )


def needs_rsna_fix(ds) -> bool:
    """True for the wrapped 12-bit RSNA slices (see module docstring, step 2)."""
    def value(keyword, default):
        tag = tag_for(keyword)
        fast = _raw_value(ds, tag, keyword)
        if fast is not _SLOW:
            return default if fast is None else fast
        return ds[tag].value if tag in ds else default

    try:
        with quiet():
            return (
                int(value("BitsStored", 0)) == 12
                and int(value("PixelRepresentation", 1)) == 0
                and tag_for("RescaleIntercept") in ds
                and float(value("RescaleIntercept", None)) > -100
                and str(value("Modality", "CT")).upper() == "CT"
            )
    except Exception:  # an unreadable element is reported by the reader itself
        return False


def floats(value) -> list[float]:
    """Numbers of a (multi-)value; ValueError (never quoting the value) if one is not a number."""
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    try:
        out = [float(v) for v in items]
    except (TypeError, ValueError, OverflowError):
        raise ValueError("not a list of numbers") from None
    if not all(np.isfinite(out)):
        raise ValueError("not a list of finite numbers")
    return out


# --------------------------------------------------------------------------------------- headers
def read_header_safe(path) -> dict:
    """The non-identifying header fields of a DICOM file (pixel data is not read).

    Returns a dict with the keys of :data:`SAFE_HEADER_FIELDS` values that are present:
    ``patient_id``, ``study_id``, ``series_id``, ``sop_instance_uid`` as str; ``position``
    (z of ImagePositionPatient, mm) when present; ``frames`` (int, default 1);
    ``window_center`` / ``window_width`` as lists; other numbers as float/int. Nothing else
    (no names, dates, sex, age, institution) is read from the file at all.

    A field whose value is not what its type says (a name in RescaleIntercept, a non-finite
    number) is dropped, not echoed; an element pydicom cannot read at all (an unknown value
    representation, a wrong value length) is a DataError naming the file and the element.
    """
    ds = read_dataset(path, stop_before_pixels=True, specific_tags=_SAFE_TAGS)
    out: dict = {}
    for keyword, key in SAFE_HEADER_FIELDS.items():
        value = element(ds, keyword, path)
        if value is None:
            continue
        try:
            if keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                           "Modality", "PhotometricInterpretation", "SeriesDescription"):
                if isinstance(value, (bytes, MultiValue, list, tuple)):
                    raise TypeError
                out[key] = str(value).strip()
            elif keyword in ("WindowCenter", "WindowWidth", "ImagePositionPatient",
                             "ImageOrientationPatient", "PixelSpacing"):
                out[key] = floats(value)
            elif keyword in ("Rows", "Columns", "NumberOfFrames", "BitsStored",
                             "PixelRepresentation", "InstanceNumber"):
                if isinstance(value, (bytes, MultiValue, list, tuple)):
                    raise TypeError
                number = float(value)
                if not number.is_integer():
                    raise ValueError
                out[key] = int(number)
            else:
                if isinstance(value, (bytes, MultiValue, list, tuple)):
                    raise TypeError
                number = float(value)
                if not np.isfinite(number):
                    raise ValueError
                out[key] = number
        except (TypeError, ValueError, OverflowError):
            continue  # a malformed optional field is dropped, not echoed
    out.setdefault("frames", 1)
    if len(out.get("image_position", [])) == 3:
        out["position"] = out["image_position"][2]
    return out
