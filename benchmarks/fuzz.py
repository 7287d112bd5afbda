"""Fuzz the decoders: ``python -m benchmarks.fuzz --files 10000 [--seed S] [--json FILE]``.

Mutates real seed files and sends each mutant through the real decode path in a worker
process with a per-file time limit:

* seeds: 15 of pydicom's own test files (CT, MR, RT dose; uncompressed little/big endian,
  implicit VR, deflated, RLE, JPEG baseline/extended, JPEG-LS, JPEG 2000), small NIfTI volumes
  written with nibabel, and PNG/JPEG pictures written with Pillow;
* mutation classes (:data:`DICOM_CLASSES`, :data:`NIFTI_CLASSES`, :data:`PICTURE_CLASSES`):
  byte flips, truncation, tag corruption (including an unknown VR), identifying strings
  (``Doe^Jane``, ``MRN123456``) planted in numeric tags, missing PixelData, a wrong transfer
  syntax, odd NumberOfFrames, non-DICOM bytes, zero-length files, extreme RescaleSlope /
  RescaleIntercept (+-inf, NaN, +-1e38, 0), and decompression bombs (a PNG or JPEG header
  declaring 16000 x 16000 or more, a DICOM with Rows = Columns = 65535 and many frames, a
  NIfTI declaring 32767 x 32767 x 1000, a deflated DICOM inflating to 300 MiB or 1 GiB);
  multi-frame DICOMs with a pixel-module field missing or odd (:data:`FRAMES_CLASSES`);
  backbone weight files truncated, flipped, declaring a huge dataset, with bad metadata JSON
  or NaN weights (:data:`WEIGHTS_CLASSES`); corpus specs with an alias bomb, deep nesting or
  megabytes of text (:data:`YAML_CLASSES`);
* decode path: DICOM and NIfTI through :func:`pipelines.preprocessing.load_file` with the
  CT spec (64 x 64, brain/subdural/bone), pictures with the one-channel image spec;
  ``frames`` through :func:`pipelines.dicom.read_frames`; weight files through
  :func:`zoo.models.backbone.read_metadata` and ``load_backbone`` (into a NumPy stand-in
  model, in a worker of their own: zoo imports Keras and TensorFlow, about 700 MB); YAML
  through :func:`pipelines.corpus.load_spec`.

Outcomes, per file: an image, a clean error (:class:`~pipelines.manifest.DataError`, or a
ValueError raised in ``pipelines`` naming the file), a crash (anything else, tallied by
exception type and the function that raised it), or a hang (over ``--timeout-s``; the worker
is killed and replaced). Every returned image is checked for silent bad output: non-finite
values, values outside [0, 1], or a "constant from overflow" image (one whose modality values,
recomputed independently in float64 from pydicom / nibabel, are non-finite or beyond float32).
A PHI hit is a planted identifying string in an error message, a warning, a log record or
anything printed. NumPy RuntimeWarnings are counted. Peak memory is the largest RSS of any
worker, also given per family. The same seed gives the same files.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import io
import json
import logging
import multiprocessing
import os
import random
import resource
import shutil
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections import Counter
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np

# Identifying strings planted into headers; none may come back out.
PHI = ("Doe^Jane", "MRN123456")
DICOM_SEEDS = (
    "CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
    "MR_small_expb.dcm", "JPGExtended.dcm", "JPEG-lossy.dcm", "693_J2KI.dcm", "JPEG2000.dcm",
    "liver_1frame.dcm", "rtdose_1frame.dcm", "image_dfl.dcm",
)
DICOM_CLASSES = (
    "byte_flip", "truncate", "tag_corrupt", "unknown_vr", "phi_in_numeric_tag", "missing_pixel_data",
    "wrong_transfer_syntax", "odd_frames", "non_dicom", "zero_length", "extreme_rescale", "bomb",
    "deflate_bomb",
)
NIFTI_CLASSES = ("byte_flip", "truncate", "header_corrupt", "extreme_scaling", "zero_length", "bomb")
PICTURE_CLASSES = ("byte_flip", "truncate", "non_image", "zero_length", "bomb")
# DICOM seeds made multi-frame, then a pixel-module field removed or made odd: read_frames
FRAMES_CLASSES = ("missing_field", "odd_field")
# a backbone weights file (HDF5), loaded by zoo.models.backbone into a stand-in model
WEIGHTS_CLASSES = ("truncate", "byte_flip", "oversized_shape", "bad_metadata", "nan_weights")
# a corpus spec, read by pipelines.corpus.load_spec
YAML_CLASSES = ("byte_flip", "alias_bomb", "deep_nesting", "huge")
# Round-robin plan: DICOM twice as often as the other families.
PLAN = ([("dicom", c) for c in DICOM_CLASSES] * 2 + [("nifti", c) for c in NIFTI_CLASSES]
        + [("picture", c) for c in PICTURE_CLASSES] + [("frames", c) for c in FRAMES_CLASSES]
        + [("weights", c) for c in WEIGHTS_CLASSES] + [("yaml", c) for c in YAML_CLASSES])
# families whose seeds are another family's
SEED_FAMILY = {"frames": "dicom"}
FRAME_FIELDS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PixelData",
                "PhotometricInterpretation", "BitsStored")
# the stand-in backbone (layer name -> weight shapes) that weights seeds are written for
STAND_IN = {"stem_conv": [(3, 3, 1, 8), (8,)], "block_conv": [(3, 3, 8, 8), (8,)], "features": [(8, 4)]}
NUMERIC_TAGS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                "SamplesPerPixel", "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth",
                "NumberOfFrames", "PhotometricInterpretation")
EXTREMES = ("inf", "-inf", "NaN", "1e38", "-1e38", "0", "3.4e38", "1e-45")
F32_MAX = float(np.finfo(np.float32).max)


# ------------------------------------------------------------------------------------------ seeds
def _png(width: int, height: int, raw: bytes, *, bit_depth: int = 8, colour: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def make_seeds(folder: Path) -> list[tuple[str, str, bytes]]:
    """[(family, suffix, bytes)]: the pydicom files, and NIfTI / pictures written here."""
    import nibabel as nib
    from PIL import Image
    from pydicom.data import get_testdata_file

    seeds = []
    for name in DICOM_SEEDS:
        path = get_testdata_file(name)
        if path is not None:
            seeds.append(("dicom", ".dcm", Path(path).read_bytes()))
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    volumes = [
        (rng.integers(-1024, 2000, (16, 16, 4)).astype(np.int16), (1.0, -1024.0)),
        (rng.normal(0, 300, (12, 10, 3)).astype(np.float32), None),
        (rng.integers(0, 255, (20, 8, 2)).astype(np.uint8), (2.0, -100.0)),
    ]
    for i, (vol, scaling) in enumerate(volumes):
        img = nib.Nifti1Image(vol, np.diag([-0.5, 0.5, 5.0, 1.0]))
        if scaling:
            img.header.set_slope_inter(*scaling)
        path = folder / f"seed{i}.nii"
        nib.save(img, str(path))
        seeds.append(("nifti", ".nii", path.read_bytes()))
    seeds.append(("nifti", ".nii.gz", _gzip(seeds[-1][2])))
    pictures = [
        ("L", rng.integers(0, 255, (24, 32)).astype(np.uint8), "PNG", ".png"),
        ("I;16", rng.integers(0, 65535, (20, 18)).astype(np.uint16), "PNG", ".png"),
        ("RGB", rng.integers(0, 255, (16, 16, 3)).astype(np.uint8), "JPEG", ".jpg"),
        ("L", rng.integers(0, 255, (16, 24)).astype(np.uint8), "JPEG", ".jpg"),
        ("RGBA", rng.integers(0, 255, (10, 12, 4)).astype(np.uint8), "PNG", ".png"),
        ("P", rng.integers(0, 16, (12, 12)).astype(np.uint8), "PNG", ".png"),
    ]
    for mode, array, fmt, suffix in pictures:
        buf = io.BytesIO()
        image = Image.fromarray(array) if mode != "P" else Image.fromarray(array, mode="L").convert("P")
        image.save(buf, format=fmt)
        seeds.append(("picture", suffix, buf.getvalue()))
    seeds.append(("weights", ".weights.h5", _backbone_seed(folder / "backbone.weights.h5", rng)))
    seeds.append(("yaml", ".yaml", SPEC_SEED.encode()))
    return seeds


SPEC_SEED = """\
# a corpus spec (pipelines.corpus)
citation: "Example corpus, 2024"
channels: 1
sources:
  - {name: alpha, dataset: medmnist, data_dir: alpha.npz}
  - name: beta
    dataset: medmnist
    data_dir: beta.npz
    options: {name: pneumoniamnist}
"""


def _backbone_seed(path: Path, rng) -> bytes:
    """A backbone file (zoo.models.backbone layout) for the STAND_IN layers, written with h5py."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["medzoo_backbone"] = 1
        f.attrs["metadata"] = json.dumps({"model": "stand_in", "input_shape": [32, 32, 1],
                                          "corpus": {"sources": ["alpha"]}})
        layers = f.create_group("layers")
        for name, shapes in STAND_IN.items():
            group = layers.create_group(name)
            for i, shape in enumerate(shapes):
                group.create_dataset(str(i), data=rng.normal(0, 0.1, shape).astype(np.float32))
    return path.read_bytes()


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)


# -------------------------------------------------------------------------------------- mutations
def _flip(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 32)):
        pos = rng.randrange(len(out))
        out[pos] ^= rng.randint(1, 255)
    return bytes(out)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(max(len(data), 1))]


def _dataset(data: bytes):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def _save(ds) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _set_raw(ds, keyword: str, text: bytes, vr: str | None = None) -> None:
    """Put ``text`` into ``keyword`` as raw bytes, bypassing pydicom's validation."""
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(keyword)
    vr = vr or dictionary_VR(tag)
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "AT", "OB", "OW"):
        vr = "LO"  # a string where a binary number belongs (explicit VR files keep it)
    if len(text) % 2:
        text += b" "
    implicit = bool(getattr(ds, "original_encoding", (False, True))[0])
    little = bool(getattr(ds, "original_encoding", (False, True))[1])
    ds._dict[tag] = RawDataElement(tag, vr, len(text), text, 0, implicit, little)


def _meta_end(data: bytes) -> int:
    """Byte offset where the file meta group (0002) ends, after the 132-byte preamble."""
    pos = 132
    while pos + 8 <= len(data):
        group = struct.unpack("<H", data[pos:pos + 2])[0]
        if group != 2:
            return pos
        vr = data[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR"):
            length = struct.unpack("<I", data[pos + 8:pos + 12])[0]
            pos += 12 + length
        else:
            length = struct.unpack("<H", data[pos + 6:pos + 8])[0]
            pos += 8 + length
    return pos


def _with_transfer_syntax(data: bytes, uid: str) -> bytes:
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    if data[128:132] != b"DICM":
        return data
    end = _meta_end(data)
    ds = _dataset(data)
    meta = ds.file_meta
    meta.TransferSyntaxUID = pydicom.uid.UID(uid)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=False)
    return data[:132] + buf.getvalue() + data[end:]


def deflate_bomb(data: bytes, inflated_bytes: int) -> bytes:
    """``data``'s dataset in the Deflated Explicit VR Little Endian transfer syntax, followed by a
    private OB element of ``inflated_bytes`` zeros: a file about a thousandth of that size."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    ds = _dataset(data)
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            del ds[keyword]
    meta = ds.file_meta
    meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    head, body = DicomBytesIO(), DicomBytesIO()
    for buf in (head, body):
        buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(head, meta, enforce_standard=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dataset(body, ds)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    element = struct.pack("<HH2sHI", 0x7FE1, 0x1010, b"OB", 0, inflated_bytes)
    dataset = deflater.compress(body.getvalue() + element) + deflater.flush(zlib.Z_SYNC_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()  # an empty last block
    return b"\0" * 128 + b"DICM" + head.getvalue() + dataset + _deflated_zeros(inflated_bytes) + final


@functools.lru_cache(maxsize=4)
def _deflated_zeros(count: int) -> bytes:
    """``count`` zero bytes as byte-aligned, non-final raw deflate blocks (they splice between
    other such blocks: a block refers back only within its own compressor's output)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    step = bytes(2**20)
    out = [deflater.compress(step[:count - start]) for start in range(0, count, len(step))]
    return b"".join(out) + deflater.flush(zlib.Z_SYNC_FLUSH)


TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.3.4.5.6", "1.2.840.10008.1.2.4.201",
)


def mutate_dicom(data: bytes, cls: str, rng: random.Random) -> tuple[bytes, bool]:
    """(mutant bytes, whether identifying strings were planted)."""
    if cls == "byte_flip":
        return _flip(data, rng), False
    if cls == "truncate":
        return _truncate(data, rng), False
    if cls == "zero_length":
        return b"", False
    if cls == "non_dicom":
        choice = rng.randrange(4)
        if choice == 0:
            return rng.randbytes(rng.randint(1, 4096)), False
        if choice == 1:
            return b"\0" * 128 + b"DICM" + rng.randbytes(rng.randint(0, 512)), False
        if choice == 2:
            return b"patient Doe^Jane MRN123456\n" * rng.randint(1, 50), True
        return _png(8, 8, b"\0" * 72), False
    if cls == "wrong_transfer_syntax":
        return _with_transfer_syntax(data, rng.choice(TRANSFER_SYNTAXES)), False
    if cls == "unknown_vr":
        # overwrite the VR bytes of one explicit-VR element with an unknown one
        out = bytearray(data)
        spots = [i for i in range(132, len(data) - 6) if data[i:i + 2] in (b"DS", b"US", b"IS", b"CS")
                 and data[i - 4:i - 2] in (b"\x28\x00", b"\x08\x00", b"\x20\x00", b"\x00\x28")]
        if spots:
            pos = rng.choice(spots)
            out[pos:pos + 2] = rng.choice((b"ZZ", b"\x00\x00", b"Q7"))
        return bytes(out), False
    ds = _dataset(data)
    planted = False
    if cls == "tag_corrupt":
        keyword = rng.choice(NUMERIC_TAGS)
        value = rng.choice((b"-1", b"0", b"65535", b"4294967296", b"abc", b"1\\2\\3", b"", b"1e400",
                            b"\xff\xfe", b"MONOCHROME3"))
        _set_raw(ds, keyword, value)
    elif cls == "phi_in_numeric_tag":
        for keyword in rng.sample(("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth",
                                   "Rows", "Columns", "NumberOfFrames", "BitsStored"), rng.randint(1, 3)):
            _set_raw(ds, keyword, rng.choice(PHI).encode())
        planted = True
    elif cls == "missing_pixel_data":
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                del ds[keyword]
    elif cls == "odd_frames":
        _set_raw(ds, "NumberOfFrames", rng.choice((b"0", b"-1", b"2", b"3", b"1000", b"2147483648",
                                                   b"1.5", b"abc", b"")), "IS")
    elif cls == "extreme_rescale":
        for keyword in rng.sample(("RescaleSlope", "RescaleIntercept"), rng.randint(1, 2)):
            _set_raw(ds, keyword, rng.choice(EXTREMES).encode(), "DS")
    elif cls == "bomb":
        _set_raw(ds, "Rows", b"65535", "IS")
        _set_raw(ds, "Columns", b"65535", "IS")
        _set_raw(ds, "NumberOfFrames", rng.choice((b"1", b"1000", b"1048576")), "IS")
    elif cls == "deflate_bomb":
        return deflate_bomb(data, rng.choice((300, 1024)) * 2**20), False
    else:
        raise ValueError(f"unknown DICOM mutation class {cls!r}")
    return _save(ds), planted


def mutate_frames(data: bytes, cls: str, rng: random.Random) -> bytes:
    """A multi-frame mutant for read_frames: a pixel-module field removed or made odd."""
    ds = _dataset(data)
    _set_raw(ds, "NumberOfFrames", rng.choice((b"2", b"3")), "IS")
    keyword = rng.choice(FRAME_FIELDS)
    if cls == "missing_field":
        if keyword in ds:
            del ds[keyword]
    elif cls == "odd_field":
        value = rng.choice((b"0", b"-1", b"", b"1.5", b"abc", b"65536", b"3", b"\xff\xfe"))
        _set_raw(ds, keyword, value, "OB" if keyword == "PixelData" else None)
    else:
        raise ValueError(f"unknown read_frames mutation class {cls!r}")
    return _save(ds)


def mutate_weights(data: bytes, cls: str, rng: random.Random, folder: Path) -> bytes:
    """A hostile backbone file: truncated, flipped, a huge declared shape, bad metadata, NaN."""
    import h5py

    if cls == "truncate":
        return _truncate(data, rng)
    if cls == "byte_flip":
        return _flip(data, rng)
    path = folder / f"mutant-{rng.getrandbits(64):016x}.weights.h5"
    path.write_bytes(data)
    try:
        with h5py.File(path, "a") as f:
            group = f["layers"][rng.choice(sorted(STAND_IN))]
            if cls == "oversized_shape":  # declared only: chunked and never written, so tiny
                del group["0"]
                group.create_dataset("0", shape=rng.choice(((2**32,), (65536, 65536), (3, 3, 2**20, 512))),
                                     dtype="float64", chunks=True)
            elif cls == "bad_metadata":
                f.attrs["metadata"] = rng.choice((
                    "[1, 2, 3]", "{not json", "[" * 100000 + "]" * 100000, '"text"', "null",
                    json.dumps({"model": "x" * 200000}), b"\xff\xfe\x00",
                ))
            elif cls == "nan_weights":
                group["0"][...] = rng.choice((np.nan, np.inf, -np.inf))
            else:
                raise ValueError(f"unknown weights mutation class {cls!r}")
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def mutate_yaml(data: bytes, cls: str, rng: random.Random) -> bytes:
    """A hostile corpus spec: an alias bomb in the citation, deep nesting, a huge file."""
    if cls == "byte_flip":
        return _flip(data, rng)
    if cls == "alias_bomb":
        levels = rng.randint(6, 9)
        lines = ["citation:", "  a0: &a0 [" + ", ".join(["'lol'"] * 9) + "]"]
        lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
        return ("\n".join(lines) + "\n" + data.decode().split("citation:", 1)[1].split("\n", 1)[1]).encode()
    if cls == "deep_nesting":
        depth = rng.choice((100, 1000, 100000))
        return data + b"extra: " + (b"[" * depth + b"]" * depth if rng.random() < 0.5
                                    else b"{a: " * depth + b"1" + b"}" * depth) + b"\n"
    if cls == "huge":
        return data + b"# " + b"x" * (rng.choice((2, 8, 64)) * 2**20) + b"\n"
    raise ValueError(f"unknown YAML mutation class {cls!r}")


def mutate_nifti(data: bytes, cls: str, rng: random.Random, gz: bool) -> bytes:
    raw = _gunzip(data) if gz else data
    if cls == "byte_flip":
        out = _flip(raw, rng)
    elif cls == "truncate":
        out = _truncate(raw, rng)
    elif cls == "zero_length":
        return b""
    else:
        header = bytearray(raw[:352])
        if cls == "header_corrupt":
            field = rng.choice(("dim", "datatype", "bitpix", "vox_offset", "pixdim", "sizeof_hdr", "qform"))
            if field == "dim":
                header[40:56] = struct.pack("<8h", rng.choice((3, 8, -1, 0, 9)), rng.choice((16, -5, 0, 32767)),
                                            rng.choice((16, 1, 32767)), rng.choice((4, 0, 1000)), 1, 1, 1, 1)
            elif field == "datatype":
                header[70:72] = struct.pack("<h", rng.choice((0, 1, 3, 255, 1536, 2304, 32767)))
            elif field == "bitpix":
                header[72:74] = struct.pack("<h", rng.choice((0, 3, 64, -8)))
            elif field == "vox_offset":
                header[108:112] = struct.pack("<f", rng.choice((0.0, 1e9, -352.0, float("nan"))))
            elif field == "pixdim":
                header[76:108] = struct.pack("<8f", *(rng.choice((float("nan"), float("inf"), 0.0, 1e38))
                                                     for _ in range(8)))
            elif field == "sizeof_hdr":
                header[0:4] = struct.pack("<i", rng.choice((0, 540, 1 << 30)))
            else:
                header[252:256] = struct.pack("<hh", 1, 1)
                header[256:280] = struct.pack("<6f", *(rng.choice((float("nan"), 1e38, 2.0)) for _ in range(6)))
        elif cls == "extreme_scaling":
            slope = rng.choice((float("inf"), float("-inf"), float("nan"), 1e38, -1e38, 0.0, 1.0))
            inter = rng.choice((float("inf"), float("nan"), 1e38, 0.0, -1024.0))
            header[112:120] = struct.pack("<ff", slope, inter)
        elif cls == "bomb":
            header[40:56] = struct.pack("<8h", 3, 32767, 32767, 1000, 1, 1, 1, 1)  # dims are int16
        else:
            raise ValueError(f"unknown NIfTI mutation class {cls!r}")
        out = bytes(header) + raw[352:]
    return _gzip(out) if gz else out


def _gunzip(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data)


def mutate_picture(data: bytes, cls: str, rng: random.Random, suffix: str) -> bytes:
    if cls == "byte_flip":
        return _flip(data, rng)
    if cls == "truncate":
        return _truncate(data, rng)
    if cls == "zero_length":
        return b""
    if cls == "non_image":
        return rng.randbytes(rng.randint(1, 2048))
    if cls == "bomb":
        if suffix == ".png":
            side = rng.choice((16000, 30000, 65535))
            return _png(side, side, b"\0" * 64)  # tiny IDAT, huge declared size
        out = bytearray(data)  # JPEG: patch the frame header's height and width
        for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
            pos = out.find(marker)
            if pos >= 0:
                out[pos + 5:pos + 9] = struct.pack(">HH", 16000, 16000)
                break
        return bytes(out)
    raise ValueError(f"unknown picture mutation class {cls!r}")


def make_case(seeds, seed: int, index: int) -> tuple[str, str, str, bytes, bool]:
    """(family, class, suffix, bytes, planted) for file ``index``: a function of (seed, index) only."""
    rng = random.Random(f"{seed}:{index}")
    family, cls = PLAN[index % len(PLAN)]
    family_seeds = [s for s in seeds if s[0] == SEED_FAMILY.get(family, family)]
    _, suffix, data = family_seeds[rng.randrange(len(family_seeds))]
    planted = False
    try:
        if family == "dicom":
            data, planted = mutate_dicom(data, cls, rng)
        elif family == "frames":
            data = mutate_frames(data, cls, rng)
        elif family == "weights":
            data = mutate_weights(data, cls, rng, Path(tempfile.gettempdir()))
        elif family == "yaml":
            data = mutate_yaml(data, cls, rng)
        elif family == "nifti":
            data = mutate_nifti(data, cls, rng, suffix == ".nii.gz")
        else:
            data = mutate_picture(data, cls, rng, suffix)
    except Exception:  # the mutator could not restructure this seed: fall back to byte flips
        data = _flip(data, rng)
    return family, cls, suffix, data, planted


# ----------------------------------------------------------------------------------------- worker
def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{Path(last.filename).stem}.{last.name}"


def _in_pipelines(exc: BaseException) -> bool:
    """True if ``exc`` was raised by the project's own code (pipelines or zoo)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and any(f"{os.sep}{package}{os.sep}" in frames[-1].filename
                                for package in ("pipelines", "zoo"))


class _StandIn:
    """The few parts of a Keras layer / model that load_backbone uses, over NumPy arrays."""

    def __init__(self, name: str, shapes=(), layers=()):
        self.name = name
        self.values = [np.zeros(s, np.float32) for s in shapes]
        self.layers = list(layers)

    @property
    def weights(self):
        return self.values

    def get_weights(self):
        return [v.copy() for v in self.values]

    def set_weights(self, values):
        self.values = [np.asarray(v) for v in values]


def _load_weights_file(path: Path):
    """read_metadata and load_backbone on ``path``; the loaded weights, concatenated."""
    from zoo.models.backbone import load_backbone, read_metadata

    read_metadata(path)
    model = _StandIn("stand_in", layers=[_StandIn(n, s) for n, s in STAND_IN.items()])
    load_backbone(model, path)
    return np.concatenate([v.ravel() for layer in model.layers for v in layer.values])


def _load_yaml_spec(path: Path):
    from pipelines.corpus import load_spec

    load_spec(path)


def _decode(path: Path, family: str):
    """The family's real read path; an array to check, or None where nothing is an image."""
    from pipelines import dicom
    from pipelines.preprocessing import Preprocessing, load_file

    if family == "frames":
        return dicom.read_frames(path)
    if family == "weights":
        return _load_weights_file(path)
    if family == "yaml":
        return _load_yaml_spec(path)
    spec = (Preprocessing(kind="ct", size=(64, 64), channels=3, windows="brain,subdural,bone")
            if family in ("dicom", "nifti") else Preprocessing(kind="image", size=(64, 64), channels=1))
    return load_file(path, spec)


def _oracle_overflow(path: Path, family: str) -> bool:
    """True if the file's modality values, recomputed in float64, are non-finite or beyond float32."""
    logging.disable(logging.CRITICAL)  # the oracle's own pydicom/nibabel chatter is not output
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if family == "dicom":
                import pydicom

                ds = pydicom.dcmread(path, force=True)
                stored = ds.pixel_array.astype(np.float64)
                slope = float(ds.get("RescaleSlope", 1) or 1)
                intercept = float(ds.get("RescaleIntercept", 0) or 0)
                values = stored * slope + intercept
            else:
                import nibabel as nib

                img = nib.load(str(path))
                values = np.asarray(img.dataobj[:, :, 0], dtype=np.float64)
        return bool(not np.all(np.isfinite(values)) or np.max(np.abs(values)) > F32_MAX)
    except Exception:
        return False
    finally:
        logging.disable(logging.NOTSET)


def check_file(path: Path, family: str) -> dict:
    """Decode one file the real way; classify the outcome."""
    from pipelines.manifest import DataError

    records: list[str] = []
    loud = []

    class Collect(logging.Handler):  # every record is scanned for PHI; WARNING+ are counted
        def emit(self, record):
            records.append(record.getMessage())
            if record.levelno >= logging.WARNING:
                loud.append(record.getMessage())

    handler = Collect(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    printed = io.StringIO()
    result = {"status": "image", "message": "", "exc_type": "", "where": "", "bad": []}
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed), \
                contextlib.redirect_stderr(printed):
            warnings.simplefilter("always")
            try:
                image = _decode(path, family)
            except DataError as exc:
                result.update(status="clean", message=str(exc))
            except ValueError as exc:
                ours = _in_pipelines(exc) and str(path) in str(exc)
                result.update(status="clean" if ours else "crash", message=str(exc),
                              exc_type=type(exc).__name__, where=_where(exc))
            except Exception as exc:  # noqa: BLE001 - that is what a crash is
                result.update(status="crash", message=str(exc)[:300], exc_type=type(exc).__name__,
                              where=_where(exc))
            else:
                if image is None or image.size == 0:
                    pass
                elif not np.all(np.isfinite(image)):
                    result["bad"].append("non_finite")
                elif family in ("dicom", "nifti", "picture") and (image.min() < 0.0 or image.max() > 1.0):
                    result["bad"].append("out_of_range")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    if result["status"] == "image" and family in ("dicom", "nifti") and _oracle_overflow(path, family):
        result["bad"].append("constant_from_overflow")
    texts = [result["message"], printed.getvalue(), *records, *(str(w.message) for w in caught)]
    result["runtime_warnings"] = sum(issubclass(w.category, RuntimeWarning) for w in caught)
    result["warnings"] = len(caught)
    result["log_records"] = len(loud)
    result["warning_texts"] = [f"{w.category.__name__}: {w.message}"[:200] for w in caught]
    blob = "\n".join(texts).lower()
    result["phi"] = [s for s in PHI if s.lower() in blob]
    result["rss_kb"] = peak_rss_kb()
    return result


def _failure(status: str, exc_type: str = "", where: str = "", message: str = "") -> dict:
    return {"status": status, "exc_type": exc_type, "where": where, "message": message, "bad": [],
            "phi": [], "runtime_warnings": 0, "warnings": 0, "log_records": 0, "warning_texts": [],
            "rss_kb": peak_rss_kb() if status == "crash" else 0}


def peak_rss_kb(pid: int | str = "self") -> int:
    """Peak resident memory (kB) of process ``pid``: ``VmHWM`` from /proc, which a new program
    starts afresh (``ru_maxrss`` keeps the forking parent's peak across exec), else ru_maxrss."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if pid == "self" else 0


def _kind(family: str) -> str:
    """The worker kind a family needs: weights files load through zoo (Keras and TensorFlow,
    about 700 MB), so they have a worker of their own and the decoders' workers stay small."""
    return "zoo" if family == "weights" else "decode"


def _worker(conn, kind: str = "decode") -> None:
    # imported once, before the first file's clock starts
    import pipelines.dicom  # noqa: F401
    import pipelines.nifti  # noqa: F401
    import pipelines.preprocessing  # noqa: F401

    if kind == "zoo":
        import zoo.models.backbone  # noqa: F401
    conn.send("ready")
    while True:
        task = conn.recv()
        if task is None:
            return
        index, path, family = task
        try:
            result = check_file(Path(path), family)
        except BaseException as exc:  # the harness itself must not die silently
            result = _failure("crash", type(exc).__name__, _where(exc), "harness: " + str(exc)[:200])
        conn.send((index, result))


class _Pool:
    """Worker processes fed one file at a time; a worker over the time limit is replaced.

    Workers are spawned, not forked, so each one's peak RSS is what its own files cost, not the
    memory of whatever process runs the harness (a test session holding TensorFlow models).
    """

    def __init__(self, workers: int, kinds=("decode",)):
        self.ctx = multiprocessing.get_context("spawn")
        self.slots = [self._start("decode") for _ in range(workers)]
        self.slots += [self._start(kind) for kind in kinds if kind != "decode"]

    def _start(self, kind: str = "decode"):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, kind), daemon=True)
        proc.start()
        child.close()
        if not parent.poll(300):
            raise RuntimeError(f"a fuzz worker ({kind}) did not start within 300 s")
        parent.recv()
        return {"proc": proc, "conn": parent, "task": None, "since": 0.0, "kind": kind}

    def replace(self, slot) -> None:
        slot["proc"].kill()
        slot["proc"].join()
        slot["conn"].close()
        slot.update(self._start(slot["kind"]))

    def close(self) -> None:
        for slot in self.slots:
            with contextlib.suppress(OSError, BrokenPipeError):
                slot["conn"].send(None)
            slot["proc"].join(timeout=5)
            if slot["proc"].is_alive():
                slot["proc"].kill()
                slot["proc"].join()


# ------------------------------------------------------------------------------------------- run
def run(files: int = 10000, seed: int = 0, timeout_s: float = 5.0, workers: int = 1,
        progress: bool = False) -> dict:
    """Fuzz ``files`` mutants; returns the figures (see :func:`format_table`)."""
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="medzoo-fuzz-"))
    seeds = make_seeds(tmp / "seeds")
    kinds = {_kind(PLAN[i % len(PLAN)][0]) for i in range(min(files, len(PLAN)))}
    pool = _Pool(max(1, int(workers)), kinds)
    results: dict[int, dict] = {}
    cases: dict[int, tuple] = {}
    waiting = {kind: collections.deque() for kind in ("decode", "zoo")}  # indices, by worker kind
    next_index = 0
    try:
        while len(results) < files:
            for slot in pool.slots:
                queue = waiting[slot["kind"]]
                while not queue and next_index < files:
                    waiting[_kind(PLAN[next_index % len(PLAN)][0])].append(next_index)
                    next_index += 1
                if slot["task"] is None and queue:
                    index = queue.popleft()
                    family, cls, suffix, data, planted = make_case(seeds, seed, index)
                    path = tmp / f"f{index:06d}{suffix}"
                    path.write_bytes(data)
                    cases[index] = (family, cls, planted, path)
                    slot["conn"].send((index, str(path), family))
                    slot["task"], slot["since"] = index, time.monotonic()
            busy = [s for s in pool.slots if s["task"] is not None]
            ready = wait([s["conn"] for s in busy], timeout=0.05)
            now = time.monotonic()
            for slot in busy:
                index = slot["task"]
                if slot["conn"] in ready:
                    try:
                        _, result = slot["conn"].recv()
                    except (EOFError, OSError):  # the worker died (e.g. killed for memory)
                        result = _failure("crash", "WorkerDied", "worker")
                        pool.replace(slot)
                elif now - slot["since"] > timeout_s:
                    result = _failure("hang")
                    result["rss_kb"] = peak_rss_kb(slot["proc"].pid)
                    pool.replace(slot)
                else:
                    continue
                family, cls, planted, path = cases.pop(index)
                result.update(family=family, cls=cls, planted=planted, file=path.name)
                results[index] = result
                slot["task"] = None
                path.unlink(missing_ok=True)
                if progress and len(results) % 500 == 0:
                    print(f"  {len(results)}/{files} files", file=sys.stderr, flush=True)
    finally:
        pool.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return summarise(results, seed=seed, timeout_s=timeout_s, workers=workers,
                     seconds=time.perf_counter() - started)


def summarise(results: dict[int, dict], *, seed, timeout_s, workers, seconds) -> dict:
    """The figures; peak memory is each worker's own (a hung worker's read before the kill)."""
    ordered = [results[i] for i in sorted(results)]
    status = Counter(r["status"] for r in ordered)
    bad = Counter(b for r in ordered for b in r["bad"])
    crashes = Counter(f"{r['exc_type']} in {r['where']}" for r in ordered if r["status"] == "crash")
    per_class: dict[str, Counter] = {}
    for r in ordered:
        row = per_class.setdefault(f"{r['family']}/{r['cls']}", Counter())
        row["files"] += 1
        row[r["status"]] += 1
        row["silent_bad"] += bool(r["bad"])
        row["phi_hits"] += bool(r["phi"])
    examples = [{"file": r["file"], "class": f"{r['family']}/{r['cls']}", "status": r["status"],
                 "exc_type": r["exc_type"], "where": r["where"], "bad": r["bad"], "phi": r["phi"]}
                for r in ordered if r["status"] in ("crash", "hang") or r["bad"] or r["phi"]][:50]
    peak_kb = max([r["rss_kb"] for r in ordered] + [0])
    by_family: dict[str, float] = {}
    for r in ordered:
        by_family[r["family"]] = max(by_family.get(r["family"], 0.0), round(r["rss_kb"] / 1024, 1))
    return {
        "files": len(ordered), "seed": seed, "timeout_s": timeout_s, "workers": workers,
        "seconds": round(seconds, 1),
        "images": status["image"], "clean_errors": status["clean"], "crashes": status["crash"],
        "hangs": status["hang"],
        "crashes_by_type": dict(crashes.most_common()),
        "silent_bad": sum(bool(r["bad"]) for r in ordered),
        "non_finite": bad["non_finite"], "out_of_range": bad["out_of_range"],
        "constant_from_overflow": bad["constant_from_overflow"],
        "phi_hits": sum(bool(r["phi"]) for r in ordered),
        "planted_files": sum(r["planted"] for r in ordered),
        "runtime_warnings": sum(r["runtime_warnings"] for r in ordered),
        "other_warnings": sum(r["warnings"] - r["runtime_warnings"] for r in ordered),
        "warning_texts": sorted({t for r in ordered for t in r["warning_texts"]})[:20],
        "log_records": sum(r["log_records"] for r in ordered),
        "peak_worker_rss_mb": round(peak_kb / 1024, 1),
        "peak_rss_mb_by_family": dict(sorted(by_family.items())),
        "per_class": {k: dict(v) for k, v in sorted(per_class.items())},
        "examples": examples,
    }


def format_table(summary: dict) -> str:
    s = summary
    lines = [
        f"fuzz: {s['files']} files, seed {s['seed']}, {s['workers']} worker(s), {s['timeout_s']:g} s "
        f"per file, {s['seconds']:.0f} s",
        "",
        f"{'outcome':<40}{'files':>8}",
        f"{'images returned':<40}{s['images']:>8}",
        f"{'clean errors (DataError)':<40}{s['clean_errors']:>8}",
        f"{'crashes':<40}{s['crashes']:>8}",
    ]
    lines += [f"  {k:<38}{v:>8}" for k, v in s["crashes_by_type"].items()]
    lines += [
        f"{'hangs':<40}{s['hangs']:>8}",
        f"{'silent bad outputs':<40}{s['silent_bad']:>8}",
        f"  {'non-finite':<38}{s['non_finite']:>8}",
        f"  {'outside [0, 1]':<38}{s['out_of_range']:>8}",
        f"  {'constant from overflow':<38}{s['constant_from_overflow']:>8}",
        f"{'PHI hits (of ' + str(s['planted_files']) + ' files with planted PHI)':<40}{s['phi_hits']:>8}",
        f"{'NumPy RuntimeWarnings':<40}{s['runtime_warnings']:>8}",
        f"{'other warnings':<40}{s['other_warnings']:>8}",
        f"{'log records (WARNING and above)':<40}{s['log_records']:>8}",
        f"{'peak worker RSS (MB)':<40}{s['peak_worker_rss_mb']:>8}",
        *(f"  {family:<38}{mb:>8}" for family, mb in s.get("peak_rss_mb_by_family", {}).items()),
        "",
        f"{'mutation class':<32}{'files':>7}{'images':>8}{'clean':>7}{'crash':>7}{'hang':>6}{'bad':>5}{'phi':>5}",
    ]
    for name, row in s["per_class"].items():
        lines.append(f"{name:<32}{row.get('files', 0):>7}{row.get('image', 0):>8}{row.get('clean', 0):>7}"
                     f"{row.get('crash', 0):>7}{row.get('hang', 0):>6}{row.get('silent_bad', 0):>5}"
                     f"{row.get('phi_hits', 0):>5}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000, help="mutants to generate and decode")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same files")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="per-file limit; over it is a hang")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.files < 1 or args.timeout_s <= 0 or args.workers < 1:
        parser.error("--files and --workers must be >= 1 and --timeout-s > 0")
    summary = run(args.files, args.seed, args.timeout_s, args.workers, progress=True)
    print(format_table(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    failed = summary["crashes"] + summary["hangs"] + summary["silent_bad"] + summary["phi_hits"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
