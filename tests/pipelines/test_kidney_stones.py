"""Stone / no-stone patches from the real kidney-stone CT set (pipelines.kidney_stones)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import kidney_stones as ks
from pipelines.manifest import DataError


@pytest.fixture(scope="module")
def kidney_root(tmp_path_factory, request):
    shared = request.getfixturevalue("shared_data")
    tarball = shared / ks.DEFAULT_ARCHIVE
    if not tarball.is_file():
        pytest.fail(f"{tarball} is missing from the shared data.")
    from pipelines.archive import extract_once

    return extract_once(tarball, tmp_path_factory.mktemp("kidney"))


def test_patches_pair_each_stone_with_a_stone_free_window_of_the_same_slice(kidney_root):
    out = ks.stone_patches(kidney_root, "test", size=32, ratio=1 / 8, seed=0)
    n = 2 * out["stones"]
    assert out["x"].shape == (n, 32, 32, 1) and out["x"].dtype == np.float32
    assert 0.0 <= out["x"].min() and out["x"].max() <= 1.0
    assert out["y"].tolist() == [1, 0] * out["stones"]
    pos, neg = out["mask"][out["y"] == 1], out["mask"][out["y"] == 0]
    assert pos.reshape(len(pos), -1).any(axis=1).all()  # every positive shows its stone
    assert not neg.any()  # no negative window touches a stone box
    assert (out["group"][0::2] == out["group"][1::2]).all()  # a pair comes from one slice
    # the set's test split: 224 stones, nearly all usable at this ratio
    assert out["stones"] + out["skipped"] == 224 and out["stones"] > 200
    # the stone is about ratio * size pixels: the mask holding the patch's own stone is small
    smallest = min(int(m.sum()) for m in pos)
    assert 1 <= smallest <= 4 * 4 * 2
    # pictures differ between a stone and its negative (not one window twice)
    assert np.abs(out["x"][0] - out["x"][1]).mean() > 0.01


def test_smaller_ratios_keep_fewer_stones_and_the_draw_is_seeded(kidney_root):
    wide = ks.stone_patches(kidney_root, "valid", size=32, ratio=1 / 16, seed=0)
    close = ks.stone_patches(kidney_root, "valid", size=32, ratio=1 / 4, seed=0)
    assert wide["stones"] < close["stones"] and wide["stones"] + wide["skipped"] == 325
    a = ks.stone_patches(kidney_root, "valid", size=32, ratio=1 / 4, seed=1, max_pairs=10)
    b = ks.stone_patches(kidney_root, "valid", size=32, ratio=1 / 4, seed=1, max_pairs=10)
    assert a["stones"] == 10 and np.array_equal(a["x"], b["x"])


def test_the_augmented_copies_of_a_slice_share_one_group_and_no_name_leaves(kidney_root):
    out = ks.stone_patches(kidney_root, "train", size=16, ratio=1 / 4, seed=0, max_pairs=400)
    assert set(out) == {"x", "y", "mask", "group", "stones", "skipped"}  # arrays and counts only
    assert out["group"].dtype.kind == "i" and out["group"].max() < 532  # 532 source slices
    name = "1-2-3-4_png_jpg.rf.abcdef.jpg"
    assert ks.source_of(name) == "1-2-3-4"
    assert ks.source_of("1-2-3-4_png_jpg.rf.012345.jpg") == ks.source_of(name)


def test_bad_inputs_are_one_sentence(tmp_path, kidney_root):
    with pytest.raises(FileNotFoundError, match="kidney-stone tarball"):
        ks.stone_patches(tmp_path / "nowhere", "test")
    with pytest.raises(DataError, match="holds no test/images"):
        ks.stone_patches(tmp_path, "test")
    with pytest.raises(ValueError, match="box-to-patch ratio"):
        ks.stone_patches(kidney_root, "test", ratio=2)
    with pytest.raises(ValueError, match="split must be one of"):
        ks.stone_patches(kidney_root, "validation")
    bad = tmp_path / "k" / "test"
    (bad / "images").mkdir(parents=True)
    (bad / "labels").mkdir()
    from PIL import Image

    Image.new("L", (40, 40)).save(bad / "images" / "a_png_jpg.rf.1.jpg")
    (bad / "labels" / "a_png_jpg.rf.1.txt").write_text("0 half 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match="not a YOLO label file"):
        ks.stone_patches(tmp_path / "k", "test")
