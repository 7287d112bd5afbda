"""benchmarks.explain: the rows it scores, on an untrained tiny model (the figures come from the
benchmark itself, not from here)."""

import numpy as np

from benchmarks import explain as B


def test_rows_cover_every_map_and_the_ceiling_is_the_masks_own():
    import keras

    import zoo

    # seeded: an unlucky random ichnet_small can give an all-zero map, whose energy is NaN
    keras.utils.set_random_seed(3)
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


def test_result_records_one_per_trained_model_with_its_variant():
    import argparse

    rows = [{"model": mdl, "phantom": ph, "class": "any", "val_auroc": 0.9, "train_s": 12.0,
             "method": "gradcam", "layer": "features (4x4)", "hit_rate": 0.25}
            for mdl, ph in (("ichnet", "head CT"), ("ichnet", "head CT"),
                            ("rensenet", "kidney stones"))]
    defaults = dict(size=256, patients=96, slices=8, kidney_n=320, epochs=10, batch=32, lr=2e-3,
                    augment="default", methods=["gradcam", "layercam"], pooling=None,
                    model_kwargs=None, tolerance=8, seed=0)
    args = argparse.Namespace(**{**defaults, "pooling": "lse", "seed": 1,
                                 "model_kwargs": {"output_stride": 8}})
    recs = B.result_records(rows, args, defaults, "python -m benchmarks.explain --pooling lse")
    assert [(r["model"], r["phantom"], len(r["rows"])) for r in recs] == [
        ("ichnet", "head CT", 2), ("rensenet", "kidney stones", 1)]
    assert recs[0]["variant"] == "pooling=lse-model_kwargs=output_stride=8"
    assert recs[0]["seed"] == 1 and recs[0]["val_auroc"] == 0.9
    assert recs[0]["rows"][0] == {"method": "gradcam", "layer": "features (4x4)", "hit_rate": 0.25}
    assert "patients" not in recs[1]["config"] and recs[1]["config"]["kidney_n"] == 320
    plain = B.result_records(rows[:1], argparse.Namespace(**defaults), defaults, "cmd")
    assert plain[0]["variant"] == "" and plain[0]["source"] == "measured with cmd"


def test_main_writes_a_result_file_per_trained_model(tmp_path, monkeypatch, capsys):
    import json

    rows = [{"model": "ichnet", "phantom": "head CT", "class": "any", "val_auroc": 1.0,
             "train_s": float("nan"), "method": "layercam", "layer": "4 scales 16..128, product",
             "n": 10, "hit_rate": 0.9, "hit_rate_tol": 1.0, "tolerance": 8, "energy": 0.5,
             "mask_area": 0.01, "ceiling": 1.0}]
    monkeypatch.setattr(B, "run", lambda args: rows)
    assert B.main(["--no-kidney", "--seed", "1", "--results-dir", str(tmp_path)]) == 0
    (path,) = tmp_path.iterdir()
    assert path.name == "explain-ichnet-head-ct-seed1.json"
    rec = json.loads(path.read_text())
    assert rec["command"].startswith("python -m benchmarks.explain --no-kidney --seed 1")
    assert rec["variant"] == "" and rec["train_s"] is None and rec["rows"][0]["hit_rate"] == 0.9
    assert B.main(["--no-kidney", "--size", "128", "--results-dir", str(tmp_path),
                   "--no-results"]) == 0
    assert len(list(tmp_path.iterdir())) == 1
