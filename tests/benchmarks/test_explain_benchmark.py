"""benchmarks.explain: the rows it scores, on an untrained tiny model (the figures come from the
benchmark itself, not from here)."""

import numpy as np

from benchmarks import explain as B


def test_rows_cover_every_map_and_the_ceiling_is_the_masks_own():
    import zoo

    model = zoo.get_model("ichnet_small", input_shape=(64, 64, 3))
    rng = np.random.default_rng(0)
    x = rng.random((5, 64, 64, 3)).astype("float32")
    masks = np.zeros((5, 64, 64), bool)
    masks[:, 20:30, 8:40] = True
    masks[4] = False  # no lesion: not scored
    y = np.array([1, 1, 1, 0, 1], float)  # a negative slice: not scored either
    rows = B._faithfulness(model, x, y, masks, 0, ["gradcam", "layercam"], tolerance=4)
    maps = [(r["method"], r["layer"]) for r in rows]
    assert maps[0] == ("gradcam", "features (4x4)")
    assert ("layercam", "4 scales 4..32, product") in maps
    assert ("layercam", "4 scales 4..32, max") in maps
    assert ("gradcam", "4 scales 4..32, product") in maps
    for r in rows:
        assert r["n"] == 3
        assert 0.0 <= r["hit_rate"] <= r["hit_rate_tol"] <= 1.0
        assert 0.0 <= r["energy"] <= 1.0 and 0.0 <= r["ceiling"] <= 1.0
    for r in rows:
        r.update(model="ichnet_small", phantom="test", **{"class": "any"}, val_auroc=0.5,
                 train_s=float("nan"))
    text = B.table(rows)
    assert text.count("\n") == len(rows) + 1 and "| layercam | 4 scales 4..32, max |" in text
    # a mask on its own full-resolution grid is a perfect map; a one-pixel line on a coarse
    # grid is missed between cell centres
    assert B.resolution_ceiling(masks[:4], (64, 64)) == 1.0
    line = np.zeros((2, 64, 64), bool)
    line[:, 31, :] = True
    assert B.resolution_ceiling(line, (4, 4)) == 0.0
