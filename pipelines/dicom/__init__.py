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

The package, by step: :mod:`~pipelines.dicom.header` (quiet reads, safe header elements, size
limits, ``read_header_safe``), :mod:`~pipelines.dicom.pixels` (decoding one frame's stored
values, codestream checks), :mod:`~pipelines.dicom.units` (RSNA fix, modality LUT,
MONOCHROME1, ``read_hu`` / ``read_frames`` / ``read_windows``, stored windows). The names
below are the public API; import them from ``pipelines.dicom``.
"""

from __future__ import annotations

from pipelines.dicom.header import (
    IDENTIFYING_FIELDS,
    MAX_ABS_VALUE,
    MAX_PIXELS,
    SAFE_HEADER_FIELDS,
    needs_rsna_fix,
    read_header_safe,
)
from pipelines.dicom.units import (
    hu_from_dataset,
    read_frames,
    read_hu,
    read_windows,
    stored_windows,
    windows_from_dataset,
)

__all__ = [
    "IDENTIFYING_FIELDS",
    "MAX_ABS_VALUE",
    "MAX_PIXELS",
    "SAFE_HEADER_FIELDS",
    "hu_from_dataset",
    "needs_rsna_fix",
    "read_frames",
    "read_header_safe",
    "read_hu",
    "read_windows",
    "stored_windows",
    "windows_from_dataset",
]
