"""DICOM pixel data -> the stored values of one frame, refusing what would hurt to decode.

:func:`decode_stored` checks the declared size (:func:`~pipelines.dicom.header.check_size`)
and, for JPEG / JPEG-LS / JPEG 2000, that the codestream declares the header's Rows x Columns
before a decoder allocates anything; plain uncompressed greyscale is read with one
``np.frombuffer`` (:func:`_native_frame`), anything else through pydicom's decoders. The
modality units are :mod:`pipelines.dicom.units`' business.
"""

from __future__ import annotations

import struct

import numpy as np
import pydicom

from pipelines.dicom.header import (
    MAX_PIXELS,
    check_size,
    element,
    frame_count,
    int_element,
    quiet,
    tag_for,
)
from pipelines.manifest import DataError

__all__ = ["decode_stored"]


def _transfer_syntax(ds):
    meta = getattr(ds, "file_meta", None)
    try:
        with quiet():
            tag = tag_for("TransferSyntaxUID")
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

        with quiet():
            data = get_frame(ds.PixelData, frame or 0, number_of_frames=frame_count(ds, path))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(path, f"compressed pixel data cannot be split into frames ({type(exc).__name__})") from None
    size = _codestream_size(bytes(data[:65536]))
    if size is None:
        return
    rows = int_element(ds, "Rows", path, None, 1, 65535)
    columns = int_element(ds, "Columns", path, None, 1, 65535)
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
    if tag_for("FloatPixelData") in ds or tag_for("DoubleFloatPixelData") in ds:
        return None
    # the elements pydicom's decoder requires, with the values it accepts
    if element(ds, "PhotometricInterpretation", path) not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    if element(ds, "SamplesPerPixel", path) != 1 or frame_count(ds, path) != 1:
        return None
    allocated = int_element(ds, "BitsAllocated", path, None, 1, 64)
    representation = element(ds, "PixelRepresentation", path)
    stored_bits = element(ds, "BitsStored", path)
    if type(representation) is not int or type(stored_bits) is not int:
        return None
    dtype = _NATIVE_DTYPES.get((allocated, representation))
    if dtype is None or not 1 <= stored_bits <= allocated:
        return None
    rows = int_element(ds, "Rows", path, None, 1, 65535)
    columns = int_element(ds, "Columns", path, None, 1, 65535)
    try:  # the raw bytes when unconverted (what pydicom's conversion of OB/OW returns)
        raw = ds.get_item(tag_for("PixelData"))
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


def decode_stored(ds, path, frame: int | None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    if all(tag_for(k) not in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(path, "DICOM file has no pixel data (a header-only or non-image object)")
    for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if element(ds, keyword, path) is None:
            raise DataError(path, f"DICOM file lacks {keyword}, so its pixel data cannot be decoded")
    check_size(ds, path, max_pixels)
    arr = _native_frame(ds, path, frame)
    if arr is not None:
        return arr
    _check_codestream(ds, path, frame)
    try:
        from pydicom.pixels import pixel_array

        with quiet():
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
    if arr.ndim == 3 and element(ds, "SamplesPerPixel", path, 1) == 3:
        raise DataError(path, "is a colour DICOM (SamplesPerPixel 3); only greyscale is supported")
    if arr.ndim != 2:
        raise DataError(path, "decoded to more than one 2-D greyscale frame (check NumberOfFrames "
                              "and SamplesPerPixel)")
    if arr.dtype.kind not in "uif":
        raise DataError(path, "decoded to non-numeric pixel data")
    return arr
