"""The ablation phantoms: lesion sizes and noise levels as asked, deterministic by seed."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.phantoms import small_lesion_set, speckle_set


def _extent(mask):
    rows, cols = np.where(mask.any(axis=1))[0], np.where(mask.any(axis=0))[0]
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_small_lesions_have_the_asked_diameters_and_masks():
    d = small_lesion_set(48, 48, diameters=(1, 2, 3, 5, 8), seed=3)
    assert d["x"].shape == (48, 48, 48, 1) and d["x"].dtype == np.float32
    assert 0.0 <= d["x"].min() and d["x"].max() <= 1.0
    assert d["y"].sum() == 24 and set(d["diameter"][d["y"] == 1]) == {1, 2, 3, 5, 8}
    for i in range(48):
        if d["y"][i]:
            assert _extent(d["mask"][i]) == (d["diameter"][i],) * 2  # one stone, that wide
            assert np.all(d["x"][i, ..., 0][d["mask"][i]] == 1.0)  # calcified: window top
        else:
            assert not d["mask"][i].any() and d["diameter"][i] == 0
        assert not (d["mask"][i] & d["distractor"][i]).any()
    # the distractors are on both classes, so "a bright spot" does not give the label away
    has = d["distractor"].reshape(48, -1).any(axis=1)
    assert has[d["y"] == 0].any() and has[d["y"] == 1].any()


def test_small_lesions_are_deterministic_and_refuse_bad_sizes():
    a, b = small_lesion_set(6, 40, seed=1), small_lesion_set(6, 40, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["x"], small_lesion_set(6, 40, seed=2)["x"])
    with pytest.raises(ValueError, match="diameters"):
        small_lesion_set(4, 32, diameters=(9,))


@pytest.mark.parametrize("noise", [0.05, 0.2])
def test_speckle_noise_level_is_the_asked_standard_deviation(noise):
    clean, noisy = speckle_set(16, 48, seed=0), speckle_set(16, 48, noise=noise, seed=0)
    assert np.array_equal(clean["y"], noisy["y"]) and noisy["noise"] == noise
    assert np.std(noisy["x"] - clean["x"]) == pytest.approx(noise, rel=0.05)


def test_speckle_classes_differ_in_echo_and_heterogeneity_and_are_deterministic():
    d = speckle_set(64, 48, seed=0)
    assert d["x"].shape == (64, 48, 48, 1) and 25 <= d["y"].sum() <= 39
    assert np.array_equal(d["x"], speckle_set(64, 48, seed=0)["x"])
    muscle = d["x"][:, 16:, :, 0]  # below the fascia
    mean = muscle.mean(axis=(1, 2))
    assert mean[d["y"] == 1].mean() > mean[d["y"] == 0].mean()  # raised echo intensity
    # heterogeneity at a coarse scale (4x4 block means), beyond the speckle
    blocks = muscle.reshape(64, 8, 4, 12, 4).mean(axis=(2, 4)).std(axis=(1, 2))
    assert blocks[d["y"] == 1].mean() > blocks[d["y"] == 0].mean()
    with pytest.raises(ValueError, match="noise"):
        speckle_set(2, 32, noise=-1.0)
