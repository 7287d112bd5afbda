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
messages name the file and the tag or field at fault, never its contents (pydicom's own
warnings and log records, which quote raw values, are silenced while this module reads).

Untrusted input: every failure to read a header element or decode pixel data is a
:class:`~pipelines.manifest.DataError`. A declared size above ``max_pixels`` (default
:data:`MAX_PIXELS`, Rows x Columns x NumberOfFrames x SamplesPerPixel) is refused before any
pixel is decoded; a RescaleSlope of 0, a non-finite slope or intercept, and a modality LUT
whose result is non-finite or beyond :data:`MAX_ABS_VALUE` (float32 overflow) are errors, never
an image.
"""

from __future__ import annotations

import logging
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

from pipelines.manifest import DataError

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

    Re-entrant and per thread: only the outermost ``with _quiet()`` reconfigures the logger and
    the warning filters (a read nests dozens of element accesses, each of which asks for
    quiet; the inner ones cost a counter). The outermost one also holds the read's memo of
    header values (:func:`_element`), dropped when it exits.
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


def _quiet() -> _Quiet:
    """The context in which this module reads files (see :class:`_Quiet`)."""
    return _QUIET


def _reason(exc: BaseException) -> str:
    """A value-free description of why pydicom could not read an element."""
    text = str(exc)
    if isinstance(exc, NotImplementedError) and "Value Representation" in text:
        return "unknown value representation"
    if type(exc).__name__ == "BytesLengthException" or "length" in text.lower():
        return "its value has the wrong length for its value representation"
    if isinstance(exc, (ValueError, TypeError, OverflowError)):
        return "its value is not valid for its value representation"
    return type(exc).__name__


def _dcmread(path, **kwargs) -> pydicom.Dataset:
    path = Path(path)
    try:
        with _quiet():
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


def _tag(keyword: str) -> Tag:
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


def _element(ds, keyword: str, path, default=None):
    """The value of header element ``keyword`` (``default`` if absent or empty).

    pydicom converts raw values lazily, so junk surfaces here: DataError naming the tag,
    never the value. Within one read (an outermost ``with _quiet()``) each element of a
    dataset is looked up once.
    """
    memo = _Quiet.memo()
    key = (id(ds), keyword)
    if memo is not None and key in memo:
        value = memo[key][1]
    else:
        tag = _tag(keyword)
        value = _raw_value(ds, tag, keyword)
        if value is _SLOW:
            try:
                with _quiet():
                    value = ds[tag].value if tag in ds else None
            except Exception as exc:
                raise DataError(path, f"DICOM header element {keyword} cannot be read "
                                      f"({_reason(exc)})") from None
        if memo is not None:
            memo[key] = (ds, value)  # ds kept alive, so its id cannot be reused within the read
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return default
    return value


def _int_element(ds, keyword: str, path, default: int | None, lo: int, hi: int) -> int | None:
    value = _element(ds, keyword, path)
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


def _float_element(ds, keyword: str, path, default: float) -> float:
    value = _element(ds, keyword, path)
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


def _frames(ds, path=None) -> int:
    """NumberOfFrames (1 when absent); DataError if it is not a whole number >= 1."""
    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    return _int_element(ds, "NumberOfFrames", path, 1, 1, 2**31 - 1)


def _check_size(ds, path, max_pixels: int) -> None:
    """Refuse a declared image larger than ``max_pixels`` before anything is decoded."""
    rows = _int_element(ds, "Rows", path, None, 1, 65535)
    columns = _int_element(ds, "Columns", path, None, 1, 65535)
    samples = _int_element(ds, "SamplesPerPixel", path, 1, 1, 4)
    _int_element(ds, "BitsAllocated", path, None, 1, 64)
    declared = rows * columns * samples * _frames(ds, path)
    if declared > int(max_pixels):
        raise DataError(
            path,
            "declares more pixels (Rows x Columns x NumberOfFrames x SamplesPerPixel) than the "
            f"limit of {int(max_pixels)}; it was refused before decoding (pass max_pixels= to "
            "read a genuinely large image)",
        )


def _transfer_syntax(ds):
    meta = getattr(ds, "file_meta", None)
    try:
        with _quiet():
            tag = _tag("TransferSyntaxUID")
            ts = meta[tag].value if meta is not None and tag in meta else None
            return pydicom.uid.UID(str(ts)) if ts else None
    except Exception:
        return None


def _decoder_problem(ds) -> str | None:
    """Why pydicom cannot decode this file's transfer syntax at all (None if it can)."""
    from pydicom.pixels.decoders.base import get_decoder

    ts = _transfer_syntax(ds)
    if ts is None or ts not in pydicom.uid.AllTransferSyntaxes:
        return "its TransferSyntaxUID is missing or not a known transfer syntax"
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return f"pydicom has no decoder for its transfer syntax ({ts.name})"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        return (f"no decoder plugin for its transfer syntax ({ts.name}) is installed (pydicom "
                f"reports: {missing}); install the pylibjpeg plugins")
    return None


def _codestream_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) a JPEG 2000 / JPEG / JPEG-LS codestream declares, or None if not found."""
    pos = frame.find(b"\xff\x4f\xff\x51", 0, 4096)  # JPEG 2000 SOC + SIZ
    if pos >= 0:
        if len(frame) < pos + 24:
            return (0, 0)
        x, y, x0, y0 = struct.unpack(">IIII", frame[pos + 8:pos + 24])
        return (y - y0, x - x0)
    try:
        from pydicom.pixels.utils import _get_jpg_parameters

        params = _get_jpg_parameters(frame)
    except Exception:
        return None
    if "height" in params and "width" in params:
        return (int(params["height"]), int(params["width"]))
    return None


def _check_codestream(ds, path, frame: int | None) -> None:
    """A compressed frame must declare the header's Rows x Columns: a decoder given a corrupt
    codestream that declares a huge image allocates (and spins) before it fails."""
    ts = _transfer_syntax(ds)
    if ts is None or ts not in pydicom.uid.AllTransferSyntaxes or not ts.is_encapsulated:
        return
    if ts not in (*pydicom.uid.JPEG2000TransferSyntaxes, *pydicom.uid.JPEGTransferSyntaxes,
                  *pydicom.uid.JPEGLSTransferSyntaxes):
        return
    try:
        from pydicom.encaps import get_frame

        with _quiet():
            data = get_frame(ds.PixelData, frame or 0, number_of_frames=_frames(ds, path))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(path, f"compressed pixel data cannot be split into frames ({type(exc).__name__})") from None
    size = _codestream_size(bytes(data[:65536]))
    if size is None:
        return
    rows = _int_element(ds, "Rows", path, None, 1, 65535)
    columns = _int_element(ds, "Columns", path, None, 1, 65535)
    if size != (rows, columns):
        raise DataError(path, "the compressed frame declares a size other than Rows x Columns "
                              "(a corrupt codestream); it was refused before decoding")


# Uncompressed little-endian syntaxes that _native_frame reads itself (pydicom's generic decoder
# costs about as much again as parsing the file, for what is here one np.frombuffer).
_NATIVE_SYNTAXES = frozenset((pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian))
_NATIVE_DTYPES = {(8, 0): np.dtype("<u1"), (8, 1): np.dtype("<i1"),
                  (16, 0): np.dtype("<u2"), (16, 1): np.dtype("<i2")}


def _native_frame(ds, path, frame: int | None) -> np.ndarray | None:
    """The one frame of a plain uncompressed greyscale file, exactly as pydicom decodes it.

    Only single-frame, one-sample, 8- or 16-bit, MONOCHROME1/2 ``PixelData`` in explicit or
    implicit VR little endian whose length is what the header declares (plus the one padding
    byte of an odd length). Unused high bits are corrected as pydicom does (sign-extended for
    PixelRepresentation 1, cleared for 0). Returns None for anything else, which then goes
    through pydicom's decoder with all its checks. Read-only when no correction was needed.
    """
    if frame is not None or _transfer_syntax(ds) not in _NATIVE_SYNTAXES:
        return None
    if _tag("FloatPixelData") in ds or _tag("DoubleFloatPixelData") in ds:
        return None
    # the elements pydicom's decoder requires, with the values it accepts
    if _element(ds, "PhotometricInterpretation", path) not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    if _element(ds, "SamplesPerPixel", path) != 1 or _frames(ds, path) != 1:
        return None
    allocated = _int_element(ds, "BitsAllocated", path, None, 1, 64)
    representation = _element(ds, "PixelRepresentation", path)
    stored_bits = _element(ds, "BitsStored", path)
    if type(representation) is not int or type(stored_bits) is not int:
        return None
    dtype = _NATIVE_DTYPES.get((allocated, representation))
    if dtype is None or not 1 <= stored_bits <= allocated:
        return None
    rows = _int_element(ds, "Rows", path, None, 1, 65535)
    columns = _int_element(ds, "Columns", path, None, 1, 65535)
    try:  # the raw bytes when unconverted (what pydicom's conversion of OB/OW returns)
        raw = ds.get_item(_tag("PixelData"))
        data = raw.value if getattr(raw, "is_raw", False) else ds.PixelData
    except Exception:  # pydicom's decoder reports it
        return None
    expected = rows * columns * dtype.itemsize
    if not isinstance(data, bytes) or len(data) not in (expected, expected + expected % 2):
        return None
    arr = np.frombuffer(data, dtype=dtype, count=rows * columns).reshape(rows, columns)
    if stored_bits < allocated:  # PS3.5 8.1.1: the unused bits carry no meaning
        shift = allocated - stored_bits
        arr = np.left_shift(arr, shift)
        np.right_shift(arr, shift, out=arr)
    return arr


def _decode(ds, path, frame: int | None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    if all(_tag(k) not in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(path, "DICOM file has no pixel data (a header-only or non-image object)")
    for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if _element(ds, keyword, path) is None:
            raise DataError(path, f"DICOM file lacks {keyword}, so its pixel data cannot be decoded")
    _check_size(ds, path, max_pixels)
    arr = _native_frame(ds, path, frame)
    if arr is not None:
        return arr
    _check_codestream(ds, path, frame)
    try:
        from pydicom.pixels import pixel_array

        with _quiet():
            arr = pixel_array(ds, index=frame)
    except MemoryError:
        raise DataError(path, "pixel data is too large to decode in memory") from None
    except Exception as exc:
        problem = _decoder_problem(ds)
        if problem is None:
            text = str(exc).lower()
            if "length" in text or "truncat" in text or isinstance(exc, EOFError):
                problem = "pixel data is shorter than the header says (truncated or corrupt file)"
            else:
                problem = (f"pixel data cannot be decoded ({type(exc).__name__}); the file is "
                           "corrupt or its TransferSyntaxUID does not match its pixel data")
        else:
            problem = f"pixel data cannot be decoded: {problem}"
        raise DataError(path, problem) from None
    if arr.ndim == 3 and _element(ds, "SamplesPerPixel", path, 1) == 3:
        raise DataError(path, "is a colour DICOM (SamplesPerPixel 3); only greyscale is supported")
    if arr.ndim != 2:
        raise DataError(path, "decoded to more than one 2-D greyscale frame (check NumberOfFrames "
                              "and SamplesPerPixel)")
    if arr.dtype.kind not in "uif":
        raise DataError(path, "decoded to non-numeric pixel data")
    return arr


def _slope_intercept(item, path) -> tuple[float, float]:
    slope = _float_element(item, "RescaleSlope", path, 1.0)
    intercept = _float_element(item, "RescaleIntercept", path, 0.0)
    if slope == 0.0:
        raise DataError(path, "DICOM header element RescaleSlope is 0, which would map every "
                              "pixel to the intercept")
    return slope, intercept


def _rescale(ds, frame: int | None, path=None) -> tuple[float, float] | None:
    """(slope, intercept) from the top level or the functional groups; None if absent.

    DataError (naming the element) for a slope of 0, a non-number or a non-finite value.
    """
    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    if _element(ds, "RescaleSlope", path) is not None or _element(ds, "RescaleIntercept", path) is not None:
        return _slope_intercept(ds, path)
    groups = []
    try:
        with _quiet():
            per_frame = ds.get("PerFrameFunctionalGroupsSequence")
            if per_frame is not None and frame is not None and frame < len(per_frame):
                groups.append(per_frame[frame])
            shared = ds.get("SharedFunctionalGroupsSequence")
            if shared:
                groups.append(shared[0])
            seqs = [group.get("PixelValueTransformationSequence") for group in groups]
    except Exception as exc:
        raise DataError(path, f"DICOM functional groups cannot be read ({_reason(exc)})") from None
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


def needs_rsna_fix(ds) -> bool:
    """True for the wrapped 12-bit RSNA slices (see module docstring, step 2)."""
    def value(keyword, default):
        tag = _tag(keyword)
        fast = _raw_value(ds, tag, keyword)
        if fast is not _SLOW:
            return default if fast is None else fast
        return ds[tag].value if tag in ds else default

    try:
        with _quiet():
            return (
                int(value("BitsStored", 0)) == 12
                and int(value("PixelRepresentation", 1)) == 0
                and _tag("RescaleIntercept") in ds
                and float(value("RescaleIntercept", None)) > -100
                and str(value("Modality", "CT")).upper() == "CT"
            )
    except Exception:  # an unreadable element is reported by the reader itself
        return False


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
    if rescale is None and _element(ds, "ModalityLUTSequence", path) is not None:
        from pydicom.pixels import apply_modality_lut

        try:
            with _quiet(), np.errstate(all="ignore"):
                values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        except Exception as exc:
            raise DataError(path, "DICOM header element ModalityLUTSequence cannot be applied "
                                  f"({_reason(exc)})") from None
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
    allocated = _int_element(ds, "BitsAllocated", path, 16, 1, 64)
    bits = _int_element(ds, "BitsStored", path, allocated, 1, 64)
    if _int_element(ds, "PixelRepresentation", path, 0, 0, 1) == 1:
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
    with _quiet():  # once for the whole read; the nested ones are then free
        ds = _dcmread(path)
        return hu_from_dataset(ds, frame=frame, rsna_fix=rsna_fix, path=path, max_pixels=max_pixels)


def hu_from_dataset(ds, *, frame: int | None = None, rsna_fix: bool = True, path=None,
                    max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`read_hu` for an already-read :class:`pydicom.Dataset`."""
    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    with _quiet():
        return _hu(ds, frame, rsna_fix, path, max_pixels)


def _frame_index(ds, frame: int | None, path) -> int | None:
    """The pixel-data frame to decode (None for a single-frame file), or DataError."""
    n = _frames(ds, path)
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
    return str(_element(ds, "PhotometricInterpretation", path)).strip().upper() == "MONOCHROME1"


def _inverted(ds, values: np.ndarray, index: int | None, rsna_fix: bool, path) -> np.ndarray:
    """MONOCHROME1 modality values mirrored about their representable range (step 4)."""
    lo, hi = _representable_range(ds, index, rsna_fix, path)
    with np.errstate(all="ignore"):
        values = (np.float64(lo) + np.float64(hi)) - values.astype(np.float64)
    return _checked_values(values, path, "MONOCHROME1 inversion of the modality values")


def _hu(ds, frame: int | None, rsna_fix: bool, path, max_pixels: int) -> np.ndarray:
    index = _frame_index(ds, frame, path)
    stored = _decode(ds, path, index, max_pixels)
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
    with _quiet():
        ds = _dcmread(path)
        return windows_from_dataset(ds, windows, frame=frame, rsna_fix=rsna_fix, path=path,
                                    max_pixels=max_pixels)


def windows_from_dataset(ds, windows=None, *, frame: int | None = None, rsna_fix: bool = True,
                         path=None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`read_windows` for an already-read :class:`pydicom.Dataset`."""
    from pipelines import transforms

    path = path if path is not None else getattr(ds, "filename", None) or "<dataset>"
    with _quiet():
        index = _frame_index(ds, frame, path)
        stored = _decode(ds, path, index, max_pixels)
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
    with _quiet():
        ds = _dcmread(path)
        n = _frames(ds, path)
        if n == 1:
            return hu_from_dataset(ds, rsna_fix=rsna_fix, path=path, max_pixels=max_pixels)[None]
        _check_size(ds, path, max_pixels)
        return np.stack([hu_from_dataset(ds, frame=i, rsna_fix=rsna_fix, path=path, max_pixels=max_pixels)
                         for i in range(n)])


def _floats(value) -> list[float]:
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
            values[keyword] = _floats(_element(ds, keyword, path))
        except ValueError:
            raise DataError(path, f"DICOM header element {keyword} is not a list of finite numbers") from None
    centers, widths = values["WindowCenter"], values["WindowWidth"]
    if not centers or not widths:
        return []
    n = max(len(centers), len(widths))
    centers += [centers[-1]] * (n - len(centers))
    widths += [widths[-1]] * (n - len(widths))
    pairs = [(c, w) for c, w in zip(centers, widths) if w > 0]
    if str(_element(ds, "PhotometricInterpretation", path, "")).strip().upper() == "MONOCHROME1":
        lo, hi = _representable_range(ds, None, path=path)
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

    A field whose value is not what its type says (a name in RescaleIntercept, a non-finite
    number) is dropped, not echoed; an element pydicom cannot read at all (an unknown value
    representation, a wrong value length) is a DataError naming the file and the element.
    """
    ds = _dcmread(path, stop_before_pixels=True, specific_tags=_SAFE_TAGS)
    out: dict = {}
    for keyword, key in SAFE_HEADER_FIELDS.items():
        value = _element(ds, keyword, path)
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
                out[key] = _floats(value)
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
