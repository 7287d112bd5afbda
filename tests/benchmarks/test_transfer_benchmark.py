"""benchmarks.transfer --quick on tiny sources the test writes: corpus, pretrain, transfer, report."""

from __future__ import annotations

import csv

import numpy as np
import yaml

from benchmarks import transfer


def _npz(path, seed, classes, rgb=False, n=(40, 12, 16)):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        y = np.arange(count) % classes
        shape = (count, 28, 28, 3) if rgb else (count, 28, 28)
        x = rng.integers(0, 80, shape).astype(np.uint8)
        x[y == 1, 8:20, 8:20] += 150  # a learnable blob
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y.reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)


def test_transfer_cli_quick_smoke(tmp_path):
    _npz(tmp_path / "alphamnist.npz", 0, 2)
    _npz(tmp_path / "betamnist.npz", 1, 3, rgb=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"channels": 1, "sources": [
        {"name": "alpha", "dataset": "medmnist", "data_dir": str(tmp_path / "alphamnist.npz")},
        {"name": "beta", "dataset": "medmnist", "data_dir": str(tmp_path / "betamnist.npz")},
    ]}))
    out = tmp_path / "out"
    rc = transfer.main(["--quick", "--spec", str(spec), "--downstream", "alpha", "--fractions", "1.0",
                        "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "transfer.csv")))
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["start"] for r in ok} == {"scratch", "corpus fine-tune", "corpus probe"}
    assert {r["status"] for r in rows if r["start"] == "imagenet"} == {"not available here"}
    assert len(ok) == 2 * 3  # seeds x rows
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in ok)
    md = (out / "transfer.md").read_text()
    assert "corpus fine-tune" in md and "±" in md and "not available here" in md
    assert (out / "transfer.png").stat().st_size > 0 and (out / "transfer-cam.png").stat().st_size > 0
    backbone = tmp_path / "work" / "backbones" / "ichnet_small-spec-32-no-alpha-e1x2"
    assert (backbone / "backbone.weights.h5").is_file() and (backbone / "backbone.json").is_file()
    corpus = tmp_path / "work" / "corpora" / "spec-32-no-alpha"
    assert set(np.unique(np.loadtxt(corpus / "manifest.csv", dtype=str, delimiter=",", skiprows=1, usecols=-3))) == {"beta"}
