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
    loaded = nib.load(str(tmp_path / name))
    assert (nifti._stored_slice(loaded, name, (slice(None), slice(None), 0))[0] is not None) == fused
    for k in range(4):
        for orient in ("lps", "raw"):
            fast = nifti.read_windows(tmp_path / name, k, windows, orient=orient)
            slow = transforms.apply_windows(nifti.read_slice(tmp_path / name, k, orient=orient), windows)
            np.testing.assert_array_equal(fast, slow)
    with pytest.raises(DataError, match="out of range"):
        nifti.read_windows(tmp_path / name, 4)
