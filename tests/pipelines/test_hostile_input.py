"""Hostile or corrupt files: each defect class the fuzzer found is a DataError, never a value leak.

Every case names the file and the tag or field at fault and never echoes a header value; no
NumPy RuntimeWarning (or pydicom warning quoting a value) escapes the readers.
"""

import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pipeline_files import write_dicom, write_nifti, write_png
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from pipelines import dicom, nifti, preprocessing
from pipelines.dicom import header as dicom_header
from pipelines.manifest import DataError

CT = preprocessing.Preprocessing(kind="ct", size=(8, 8), channels=3, windows="brain,subdural,bone")


@pytest.fixture(autouse=True)
def no_warnings():
    """Any warning inside a test (RuntimeWarning, pydicom's value-quoting UserWarning) fails it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _plant(path, keyword: str, text: bytes, vr: str | None = None):
    """Rewrite ``path`` with ``text`` as the raw value of ``keyword`` (no validation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        tag = Tag(keyword)
        vr = vr or pydicom.datadict.dictionary_VR(tag)
        text = text + b" " if len(text) % 2 else text
        ds._dict[tag] = RawDataElement(tag, vr, len(text), text, 0, False, True)
        ds.save_as(path)
    return path


def _ct(tmp_path, name="x.dcm", **kwargs):
    stored = np.array([[-1000, 0], [40, 3000]], dtype=np.int16)
    return write_dicom(tmp_path / name, stored, **kwargs)


def _error(call, *names, never=()):
    with pytest.raises(DataError) as info:
        call()
    text = str(info.value)
    for name in names:
        assert str(name) in text, (name, text)
    for value in never:
        assert value not in text, (value, text)
    return text


# --------------------------------------------------------------------------- rescale defects
def test_slope_zero_is_an_error_not_one(tmp_path):
    path = _ct(tmp_path, slope=0.0)
    _error(lambda: dicom.read_hu(path), path, "RescaleSlope", "is 0")


@pytest.mark.parametrize("value", [b"inf", b"-inf", b"NaN"])
@pytest.mark.parametrize("keyword", ["RescaleSlope", "RescaleIntercept"])
def test_non_finite_slope_or_intercept(tmp_path, keyword, value):
    path = _plant(_ct(tmp_path), keyword, value, "DS")
    _error(lambda: dicom.read_hu(path), path, keyword, "not a finite number")
    _error(lambda: preprocessing.load_file(path, CT), path, keyword)


@pytest.mark.parametrize("keyword,value", [("RescaleIntercept", b"1e38"), ("RescaleSlope", b"1e38"),
                                           ("RescaleIntercept", b"-3.4e38")])
def test_overflowing_rescale_is_an_error_not_a_constant_image(tmp_path, keyword, value):
    path = _plant(_ct(tmp_path), keyword, value, "DS")
    _error(lambda: dicom.read_hu(path), path, "overflow", "RescaleSlope / RescaleIntercept")
    _error(lambda: preprocessing.load_file(path, CT), path, "overflow")


def test_slope_that_overflows_only_in_float32_is_caught(tmp_path):
    # 3000 * 1e35 = 3e38: finite in float64 and in float32, but far beyond any modality
    path = _plant(_ct(tmp_path), "RescaleSlope", b"1e35", "DS")
    _error(lambda: dicom.read_hu(path), path, "overflow")


def test_ordinary_rescale_still_reads(tmp_path):
    path = _ct(tmp_path, slope=0.5, intercept=-10.0)
    np.testing.assert_array_equal(dicom.read_hu(path), np.array([[-510, -10], [10, 1490]], np.float32))


# --------------------------------------------------------------------------- no value leaks
@pytest.mark.parametrize("keyword", ["RescaleIntercept", "RescaleSlope", "WindowCenter", "Rows",
                                     "NumberOfFrames"])
@pytest.mark.parametrize("secret", [b"Doe^Jane", b"MRN123456"])
def test_identifying_text_in_a_numeric_tag_is_never_echoed(tmp_path, caplog, keyword, secret):
    path = _plant(_ct(tmp_path, window=(40, 80)), keyword, secret, "LO" if keyword == "Rows" else None)
    caplog.set_level(logging.DEBUG)
    if keyword == "WindowCenter":  # the spec's windows are used, so the image still reads
        assert preprocessing.load_file(path, CT).shape == (8, 8, 3)
        ds = dicom_header.read_dataset(path)
        _error(lambda: dicom.stored_windows(ds, path), path, "WindowCenter", never=(secret.decode(),))
    else:
        text = _error(lambda: preprocessing.load_file(path, CT), path, keyword, never=(secret.decode(),))
        assert "DICOM header element" in text
    assert secret.decode() not in caplog.text


def test_header_scan_drops_a_name_in_a_numeric_field(tmp_path):
    path = _plant(_ct(tmp_path), "RescaleIntercept", b"Doe^Jane", "DS")
    header = dicom.read_header_safe(path)
    assert "rescale_intercept" not in header and "Doe^Jane" not in repr(header)
    assert header["rows"] == 2


def test_unknown_vr_in_read_header_safe_is_a_data_error(tmp_path):
    path = _ct(tmp_path)
    data = bytearray(path.read_bytes())
    # Rows (0028,0010) US -> an unknown VR "ZZ"
    pos = data.find(b"\x28\x00\x10\x00US")
    data[pos + 4:pos + 6] = b"ZZ"
    path.write_bytes(bytes(data))
    text = _error(lambda: dicom.read_header_safe(path), path, "Rows", "unknown value representation")
    assert "Traceback" not in text
    _error(lambda: dicom.read_hu(path), path, "Rows")


def test_wrong_value_length_in_read_header_safe_is_a_data_error(tmp_path):
    path = _ct(tmp_path)
    data = bytearray(path.read_bytes())
    pos = data.find(b"\x28\x00\x10\x00US")
    data[pos + 6:pos + 8] = struct.pack("<H", 3)  # a US value of 3 bytes
    data[pos + 8:pos + 10] = b"\x02\x00"
    data.insert(pos + 10, 0)
    path.write_bytes(bytes(data))
    try:
        dicom.read_header_safe(path)
    except DataError as err:
        assert str(path) in str(err)


# --------------------------------------------------------------------------- frames and bombs
@pytest.mark.parametrize("frames", [b"0", b"-1", b"1.5", b"abc"])
def test_odd_number_of_frames(tmp_path, frames):
    path = _plant(_ct(tmp_path), "NumberOfFrames", frames, "IS")
    _error(lambda: dicom.read_hu(path), path, "NumberOfFrames")


def _no_decoding(monkeypatch):
    import pydicom.pixels

    def refuse(*args, **kwargs):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", refuse)


def test_dicom_bomb_refused_before_decoding(tmp_path, monkeypatch):
    path = _ct(tmp_path)
    for keyword, value in (("Rows", b"65535"), ("Columns", b"65535"), ("NumberOfFrames", b"1000")):
        _plant(path, keyword, value, "IS")
    _no_decoding(monkeypatch)
    _error(lambda: dicom.read_hu(path, frame=0), path, "limit of", "refused before decoding", "max_pixels")
    _error(lambda: dicom.read_frames(path), path, "refused before decoding")


def test_max_pixels_is_a_keyword(tmp_path):
    path = _ct(tmp_path)
    _error(lambda: dicom.read_hu(path, max_pixels=3), path, "limit of 3")
    assert dicom.read_hu(path, max_pixels=4).shape == (2, 2)
    frames = write_dicom(tmp_path / "mf.dcm", np.zeros((3, 2, 2), np.int16))
    _error(lambda: dicom.read_frames(frames, max_pixels=11), frames, "limit of 11")
    assert dicom.read_frames(frames, max_pixels=12).shape == (3, 2, 2)
    assert dicom.MAX_PIXELS == preprocessing.MAX_PIXELS == 1 << 27


def _png_header(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [9000, 16000])
def test_png_bomb_refused_before_load(tmp_path, monkeypatch, side):
    from PIL import Image, ImageFile

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(side, side))

    def refuse(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    # 9000^2 is under Pillow's own bomb error but over our limit once it is lowered
    _error(lambda: preprocessing.read_pixels(path, max_pixels=50_000_000), path, "refused before decoding")


def test_pillow_bomb_error_is_a_data_error(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(65535, 65535))
    _error(lambda: preprocessing.read_pixels(path, max_pixels=1 << 40), path, "decompression-bomb")


def test_image_max_pixels_passes_through_decode_file(tmp_path):
    path = write_png(tmp_path / "p.png", np.zeros((4, 5), np.uint8))
    spec = preprocessing.Preprocessing(kind="image", size=(4, 4), channels=1)
    _error(lambda: preprocessing.decode_file(path, spec, max_pixels=19), path, "limit of 19")
    assert preprocessing.decode_file(path, spec, max_pixels=20).shape == (4, 5, 1)


# --------------------------------------------------------------------------- plugin message
def test_corrupt_compressed_data_does_not_blame_the_plugins(tmp_path):
    src = get_testdata_file("MR_small_jp2klossless.dcm")
    data = bytearray(Path(src).read_bytes())
    data[-200:-100] = b"\x00" * 100  # damage the JPEG 2000 codestream
    path = tmp_path / "j2k.dcm"
    path.write_bytes(bytes(data))
    try:
        dicom.read_hu(path)
    except DataError as err:
        assert "install" not in str(err) and str(path) in str(err)


def test_missing_plugin_is_named(tmp_path, monkeypatch):
    from pydicom.pixels.decoders import base

    class Missing:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0"]

    def broken(*args, **kwargs):
        raise RuntimeError("Unable to decode: no plugins available")

    import shutil

    path = tmp_path / "j2k.dcm"
    shutil.copy(get_testdata_file("MR_small_jp2klossless.dcm"), path)
    monkeypatch.setattr(base, "get_decoder", lambda uid: Missing())
    monkeypatch.setattr(pydicom.pixels, "pixel_array", broken)
    _error(lambda: dicom.read_hu(path), path, "JPEG 2000", "no decoder plugin", "install the pylibjpeg plugins",
           "pylibjpeg-openjpeg")


def test_unknown_transfer_syntax_is_named_not_echoed(tmp_path):
    import shutil

    path = tmp_path / "ts.dcm"
    shutil.copy(get_testdata_file("JPEG2000.dcm"), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"
        ds.save_as(path, enforce_file_format=False)
    _error(lambda: dicom.read_hu(path), path, "TransferSyntaxUID", never=("1.2.3.4.5.6", "install"))


# --------------------------------------------------------------------------- NIfTI
@pytest.mark.parametrize("slope,inter", [(np.inf, 0.0), (1e38, 0.0), (1.0, 1e38), (1.0, np.nan)])
def test_nifti_scaling_that_is_non_finite_or_overflows(tmp_path, slope, inter):
    path = write_nifti(tmp_path / "v.nii", np.full((4, 4, 2), 3000, np.int16))
    data = bytearray(path.read_bytes())
    data[112:120] = struct.pack("<ff", slope, inter)
    path.write_bytes(bytes(data))
    try:
        out = nifti.read_slice(path, 0)
    except DataError as err:
        assert str(path) in str(err) and "scl_" in str(err)
    else:  # nibabel ignores a non-finite slope (NIfTI: no scaling); the result must still be sane
        assert np.all(np.isfinite(out)) and np.abs(out).max() <= dicom.MAX_ABS_VALUE


def test_nifti_nan_voxel(tmp_path):
    vol = np.zeros((4, 4, 2), np.float32)
    vol[1, 1, 0] = np.nan
    path = write_nifti(tmp_path / "nan.nii", vol)
    _error(lambda: nifti.read_slice(path, 0), path, "non-finite")


def test_nifti_bomb_refused_before_reading(tmp_path):
    path = write_nifti(tmp_path / "big.nii", np.zeros((4, 4, 2), np.int16))
    data = bytearray(path.read_bytes())
    data[40:56] = struct.pack("<8h", 3, 32767, 32767, 1000, 1, 1, 1, 1)
    path.write_bytes(bytes(data))
    _error(lambda: nifti.read_slice(path, 0), path, "dim", "refused before reading")
    small = write_nifti(tmp_path / "small.nii", np.zeros((4, 4, 2), np.int16))
    _error(lambda: nifti.read_slice(small, 0, max_pixels=31), small, "limit of 31")
    assert nifti.read_slice(small, 0, max_pixels=32).shape == (4, 4)


def test_codestream_declaring_a_huge_image_is_refused_before_decoding(tmp_path, monkeypatch):
    # a flipped byte in a JPEG 2000 SIZ marker made openjpeg spin and take 2.4 GB (fuzz seed 0)
    data = bytearray(Path(get_testdata_file("693_J2KI.dcm")).read_bytes())
    pos = data.find(b"\xff\x4f\xff\x51")
    data[pos + 8:pos + 16] = struct.pack(">II", 60000, 60000)
    path = tmp_path / "siz.dcm"
    path.write_bytes(bytes(data))
    _no_decoding(monkeypatch)
    _error(lambda: dicom.read_hu(path), path, "Rows x Columns", "refused before decoding")


# --------------------------------------------------------------------------- deflate bombs
@pytest.fixture(scope="module")
def deflate_bomb(tmp_path_factory):
    """A 300 KB deflated DICOM that inflates to 300 MB (past the 256 MiB limit)."""
    from benchmarks.fuzz import deflate_bomb as make

    path = tmp_path_factory.mktemp("bomb") / "bomb.dcm"
    path.write_bytes(make(Path(get_testdata_file("CT_small.dcm")).read_bytes(), 300 * 2**20))
    return path


def test_deflate_bomb_is_refused_before_pydicom_inflates_it(deflate_bomb, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pydicom inflated the bomb")

    monkeypatch.setattr(zlib, "decompress", refuse)
    for read in (dicom.read_header_safe, dicom.read_hu, dicom.read_frames):
        _error(lambda read=read: read(deflate_bomb), deflate_bomb, "deflated dataset", "decompression bomb")


def test_deflated_file_within_the_limit_still_reads(tmp_path):
    path = _ct(tmp_path)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    assert dicom.read_header_safe(tmp_path / "deflated.dcm")["rows"] == 2
    np.testing.assert_array_equal(dicom.read_hu(tmp_path / "deflated.dcm"), dicom.read_hu(path))


def test_header_scan_quarantines_a_deflate_bomb(deflate_bomb):
    from pipelines.datasets import base

    (result,) = base.scan_headers([deflate_bomb])
    assert isinstance(result, str) and "decompression bomb" in result


# --------------------------------------------------------------------------- read_frames fields
@pytest.mark.parametrize("keyword", ["Rows", "Columns"])
def test_multi_frame_file_missing_rows_or_columns_is_a_data_error(tmp_path, keyword):
    path = write_dicom(tmp_path / "frames.dcm", np.zeros((3, 2, 2), np.int16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        del ds[keyword]
        ds.save_as(path)
    _error(lambda: dicom.read_frames(path), path, keyword)
    _error(lambda: dicom.read_hu(path, frame=1), path, keyword)


def test_tar_member_declaring_a_huge_size_is_refused_before_reading(tmp_path):
    import gzip
    import tarfile

    from pipelines.datasets import mednist

    member = tarfile.TarInfo("MedNIST/Hand/000000.jpeg")
    member.size = 300 * 2**20  # declared only: the header comes first, and the check with it
    tarball = tmp_path / "MedNIST.tar.gz"
    tarball.write_bytes(gzip.compress(member.tobuf() + b"\0" * 1024))
    _error(lambda: mednist.tar_images(tarball), tarball, "decompression bomb")


def test_npz_member_inflating_past_the_limit_is_refused_before_reading(tmp_path):
    import zipfile

    from pipelines.datasets import medmnist

    path = tmp_path / "pneumoniamnist.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.uint8))
    header["shape"] = (300 * 2**20,)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive, \
            archive.open("train_images.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        for _ in range(300):
            f.write(bytes(2**20))
    _error(lambda: medmnist.read_arrays(path), path, "train_images.npy", "decompression bomb")
