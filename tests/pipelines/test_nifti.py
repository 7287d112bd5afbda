"""NIfTI slices with nibabel: stored slice order, in-plane orientation, scaling, rank errors."""

import nibabel as nib
import numpy as np
import pytest
from pipeline_files import write_nifti

from pipelines import nifti
from pipelines.manifest import DataError


def _volume():
    # value encodes (i, j, k) so every reorientation is checkable
    i, j, k = np.meshgrid(np.arange(4), np.arange(3), np.arange(5), indexing="ij")
    return (100 * k + 10 * j + i).astype(np.int16)


def test_raw_slice_is_third_axis_in_stored_order(tmp_path):
    path = write_nifti(tmp_path / "v.nii", _volume())
    for k in range(5):
        np.testing.assert_array_equal(nifti.read_slice(path, k, orient="raw"), _volume()[:, :, k])
    assert nifti.volume_shape(path) == (4, 3, 5)


def test_lps_orientation_from_the_affine(tmp_path):
    vol = _volume()
    # LAS affine (axis 0 toward patient left, axis 1 toward anterior)
    las = write_nifti(tmp_path / "las.nii", vol, np.diag([-0.5, 0.5, 5.0, 1.0]))
    out = nifti.read_slice(las, 2)
    # rows = axis 1 flipped (anterior at the top), columns = axis 0 (toward left)
    np.testing.assert_array_equal(out, vol[:, ::-1, 2].T)
    assert out.shape == (3, 4)
    assert nib.aff2axcodes(np.diag([-0.5, 0.5, 5.0, 1.0])) == ("L", "A", "S")
    # RAS: columns must be flipped too
    ras = write_nifti(tmp_path / "ras.nii", vol, np.diag([0.5, 0.5, 5.0, 1.0]))
    np.testing.assert_array_equal(nifti.read_slice(ras, 2), vol[::-1, ::-1, 2].T)
    # LPS already: only the transpose to (rows, columns)
    lps = write_nifti(tmp_path / "lps.nii", vol, np.diag([-0.5, -0.5, 5.0, 1.0]))
    np.testing.assert_array_equal(nifti.read_slice(lps, 2), vol[:, :, 2].T)


def test_scaling_gives_hu(tmp_path):
    img = nib.Nifti1Image(np.full((2, 2, 2), 1000, np.int16), np.eye(4))
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, str(tmp_path / "s.nii"))
    np.testing.assert_array_equal(nifti.read_slice(tmp_path / "s.nii", 0, orient="raw"), -24.0)


def test_gzip_and_trailing_singleton(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", _volume()[..., None])
    np.testing.assert_array_equal(nifti.read_slice(path, 1, orient="raw"), _volume()[:, :, 1])
    data, affine = nifti.read_volume(path)
    assert data.shape == (4, 3, 5) and affine.shape == (4, 4)


def test_wrong_rank_and_index(tmp_path):
    flat = write_nifti(tmp_path / "flat.nii", np.zeros((4, 4), np.int16))
    with pytest.raises(DataError, match=r"flat.nii: NIfTI has 2 dimension\(s\).*expected a 3-D volume"):
        nifti.read_slice(flat, 0)
    four = write_nifti(tmp_path / "four.nii", np.zeros((4, 4, 3, 2), np.int16))
    with pytest.raises(DataError, match="4 dimension"):
        nifti.volume_shape(four)
    ok = write_nifti(tmp_path / "ok.nii", _volume())
    with pytest.raises(DataError, match="slice 5 is out of range for a volume with 5 slices"):
        nifti.read_slice(ok, 5)


@pytest.mark.parametrize("name,dtype,slope,inter,affine", [
    ("ct.nii", np.int16, 1.0, -1024.0, np.diag([-0.5, 0.5, 5.0, 1.0])),   # fused: PhysioNet's form
    ("u8.nii", np.uint8, 1.0, 0.0, np.diag([0.5, 0.5, 5.0, 1.0])),        # fused
    ("sl.nii", np.int16, 0.5, -10.0, np.eye(4)),                           # scaled: read_slice path
    ("ct.nii.gz", np.int16, 1.0, -1024.0, np.eye(4)),                      # compressed: read_slice path
    ("f.nii", np.float32, 1.0, 0.0, np.eye(4)),
])
def test_read_windows_equals_read_slice_then_windows(tmp_path, name, dtype, slope, inter, affine):
    from pipelines import transforms

    rng = np.random.default_rng(1)
    lo, hi = (0, 255) if dtype == np.uint8 else (-1000, 3000)
    vol = rng.integers(lo, hi, (12, 10, 4)).astype(dtype)
    img = nib.Nifti1Image(vol, affine)
    img.header.set_slope_inter(slope, inter)
    nib.save(img, str(tmp_path / name))
    windows = "brain,subdural,bone,40.5/81"
    fused = name in ("ct.nii", "u8.nii")
    assert (nifti._fast_stored(tmp_path / name, 0, nifti.MAX_PIXELS) is not None) == fused
    for k in range(4):
        for orient in ("lps", "raw"):
            fast = nifti.read_windows(tmp_path / name, k, windows, orient=orient)
            slow = transforms.apply_windows(nifti.read_slice(tmp_path / name, k, orient=orient), windows)
            np.testing.assert_array_equal(fast, slow)
    with pytest.raises(DataError, match="out of range"):
        nifti.read_windows(tmp_path / name, 4)


def _ct(tmp_path, name, vol, inter=-1024.0, klass=nib.Nifti1Image, endianness=None):
    header = None if endianness is None else klass.header_class(endianness=endianness)
    img = klass(vol, np.diag([-0.5, 0.5, 5.0, 1.0]), header=header)
    img.set_data_dtype(vol.dtype)
    img.header.set_slope_inter(1.0, inter)
    nib.save(img, str(tmp_path / name))
    return tmp_path / name


def _slow(path, k, windows=None):
    from pipelines import transforms

    return transforms.apply_windows(nifti.read_slice(path, k), windows)


def test_fast_path_reads_what_is_on_disk_now(tmp_path):
    """The header plan is remembered by the header's bytes, never by the path: a file rewritten
    in place (same header, new voxels; or a new header) reads as its new self."""
    rng = np.random.default_rng(0)
    first = rng.integers(0, 2000, (16, 12, 3)).astype(np.int16)
    path = _ct(tmp_path, "v.nii", first)
    assert nifti._fast_stored(path, 1, nifti.MAX_PIXELS) is not None
    np.testing.assert_array_equal(nifti.read_windows(path, 1), _slow(path, 1))
    second = rng.integers(0, 2000, (16, 12, 3)).astype(np.int16)
    _ct(tmp_path, "v.nii", second)  # same header bytes, other voxels
    np.testing.assert_array_equal(nifti.read_windows(path, 1), _slow(path, 1))
    assert not np.array_equal(_slow(path, 1), nifti.read_windows(_ct(tmp_path, "w.nii", first), 1))
    _ct(tmp_path, "v.nii", second, inter=-1000.0)  # a new intercept: a new plan
    np.testing.assert_array_equal(nifti.read_windows(path, 2), _slow(path, 2))


@pytest.mark.parametrize("case", ["nifti2", "big-endian", "uint16"])
def test_fast_path_other_layouts_equal_read_slice(tmp_path, case):
    rng = np.random.default_rng(2)
    vol = rng.integers(0, 3000, (9, 7, 4))
    if case == "nifti2":
        path = _ct(tmp_path, "v.nii", vol.astype(np.int16), klass=nib.Nifti2Image)
    elif case == "uint16":
        path = _ct(tmp_path, "v.nii", vol.astype(np.uint16))
    else:
        path = _ct(tmp_path, "v.nii", vol.astype(np.int16), endianness=">")
        assert nib.load(str(path)).dataobj.dtype.byteorder == ">"
    assert nifti._fast_stored(path, 0, nifti.MAX_PIXELS) is not None
    for k in range(4):
        np.testing.assert_array_equal(nifti.read_windows(path, k, "brain,bone"), _slow(path, k, "brain,bone"))


def test_fast_path_leaves_every_error_to_read_slice(tmp_path):
    vol = np.arange(8 * 6 * 3, dtype=np.int16).reshape(8, 6, 3)
    path = _ct(tmp_path, "v.nii", vol)
    nifti.read_windows(path, 0)  # the plan is remembered
    with pytest.raises(DataError, match="limit of 10"):
        nifti.read_windows(path, 0, max_pixels=10)
    with pytest.raises(DataError, match="slice 3 is out of range"):
        nifti.read_windows(path, 3)
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # the last slice is cut short: only that slice is lost
    np.testing.assert_array_equal(nifti.read_windows(path, 1), _slow(path, 1))
    with pytest.raises(DataError, match="truncated or corrupt"):
        nifti.read_windows(path, 2)
    with pytest.raises(DataError, match="truncated or corrupt"):
        nifti.read_slice(path, 2)


def test_fast_path_does_not_block_on_a_fifo(tmp_path):
    import os
    import threading

    fifo = tmp_path / "pipe.nii"
    os.mkfifo(fifo)
    errors = []

    def read():
        try:
            nifti.read_windows(fifo, 0)
        except DataError as exc:
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "read_windows blocked opening a FIFO"
    assert errors and "not a file" in str(errors[0])
