"""benchmarks.transfer --quick on tiny sources the test writes: corpus, pretrain, transfer, report.

Nothing from ../shared/data is read, so the test runs (and cannot skip) anywhere.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
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


def _png_shape(path):
    """(height, width) of a PNG file, read back (a real image, not just bytes)."""
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return matplotlib.image.imread(path).shape[:2]


def test_transfer_cli_quick_smoke(tmp_path):
    _npz(tmp_path / "alphamnist.npz", 0, 2)
    _npz(tmp_path / "betamnist.npz", 1, 3, rgb=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"channels": 1, "sources": [
        {"name": "alpha", "dataset": "medmnist", "data_dir": str(tmp_path / "alphamnist.npz")},
        {"name": "beta", "dataset": "medmnist", "data_dir": str(tmp_path / "betamnist.npz"),
         "licence": "CC0", "citation": "the test"},
    ]}))
    out = tmp_path / "out"
    rc = transfer.main(["--quick", "--spec", str(spec), "--downstream", "alpha", "--fractions", "1.0",
                        "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    assert rc == 0

    # one CSV row per (seed, start); the ImageNet row says why it is missing
    rows = list(csv.DictReader(open(out / "transfer.csv")))
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["start"] for r in ok} == {"scratch", "corpus fine-tune", "corpus probe"}
    assert {r["status"] for r in rows if r["start"] == "imagenet"} == {"not available here"}
    assert sorted((r["seed"], r["start"]) for r in ok) == sorted(
        (str(s), start) for s in range(2) for start in ("scratch", "corpus fine-tune", "corpus probe"))
    for r in ok:
        for k in ("accuracy", "balanced_accuracy", "auroc"):
            assert float(r[f"{k}_lo"]) <= float(r[k]) <= float(r[f"{k}_hi"]), (k, r)
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and r["train_images"] == "40"

    # the table: every start, mean ± sd with CIs, the command
    md = (out / "transfer.md").read_text()
    assert md.count("| alpha | ichnet_small | 100% |") == 4
    assert "corpus fine-tune" in md and "corpus probe" in md and "±" in md and "not available here" in md
    assert "python -m benchmarks.transfer --quick" in md
    summary = json.loads((out / "transfer.json").read_text())["summary"]
    assert {r["start"]: r["seeds"] for r in summary} == {"scratch": 2, "corpus fine-tune": 2, "corpus probe": 2,
                                                         "imagenet": 0}

    # the plot and the CAM panel are real images (2 rows x 4 test images in the panel)
    h, w = _png_shape(out / "transfer.png")
    assert h > 100 and w > 100
    h, w = _png_shape(out / "transfer-cam.png")
    assert h > 200 and w > 200

    # the corpus: alpha (downstream) left out, beta in it, its card written
    corpus = tmp_path / "work" / "corpora" / "spec-32-no-alpha"
    manifest = np.loadtxt(corpus / "manifest.csv", dtype=str, delimiter=",", skiprows=1, usecols=-3)
    assert set(np.unique(manifest)) == {"beta"}
    card = json.loads((corpus / "corpus_card.json").read_text())
    assert card["excluded"] == ["alpha"] and not card["sources"]["alpha"]["in_corpus"]
    assert card["sources"]["beta"]["images"] == len(manifest) and card["sources"]["beta"]["licence"] == "CC0"
    assert "beta" in (corpus / "corpus_card.md").read_text()

    # the backbone, and the leak refusal: fine-tuning it on beta (a corpus source) is refused
    (backbone,) = (tmp_path / "work" / "backbones").glob("ichnet_small-spec-32-no-alpha-e1x2-*")
    assert (backbone / "backbone.weights.h5").is_file() and (backbone / "backbone.json").is_file()
    from zoo.models.backbone import read_metadata
    from zoo.training.transfer import LeakError, check_leak

    meta = read_metadata(backbone / "backbone.weights.h5")
    check_leak(meta, "medmnist", str(tmp_path / "alphamnist.npz"))  # left out: allowed
    with pytest.raises(LeakError, match="beta"):
        check_leak(meta, "medmnist", str(tmp_path / "betamnist.npz"))


def test_transfer_refuses_unknown_downstream(tmp_path):
    _npz(tmp_path / "alphamnist.npz", 0, 2)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"sources": [
        {"name": "alpha", "dataset": "medmnist", "data_dir": str(tmp_path / "alphamnist.npz")}]}))
    with pytest.raises(SystemExit, match="'gamma' is not a source"):
        transfer.main(["--quick", "--spec", str(spec), "--downstream", "gamma", "--work-dir", str(tmp_path / "w"),
                       "--out", str(tmp_path / "out")])
    assert not (tmp_path / "w").exists() and not (tmp_path / "out").exists()


def test_a_backbone_is_reused_only_for_the_same_settings_and_corpus(tmp_path, monkeypatch):
    """The backbone cache key holds every pretraining setting and the corpus card."""
    import zoo.training
    from benchmarks import transfer

    made = []

    def fake_run(config):
        made.append(config)
        out = Path(config["output_dir"])
        out.mkdir(parents=True)
        (out / "backbone.weights.h5").write_bytes(b"stand-in for the test of the cache key")

    monkeypatch.setattr(zoo.training, "run", fake_run)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "corpus_card.json").write_text('{"images": 10}')
    args = transfer.build_parser().parse_args(["--models", "ichnet_small"])
    first = transfer.pretrain(args, corpus, "ichnet_small", tmp_path)
    assert transfer.pretrain(args, corpus, "ichnet_small", tmp_path) == first and len(made) == 1
    for change in (["--lr", "0.01"], ["--batch-size", "32"], ["--pretrain-epochs", "3"]):
        other = transfer.build_parser().parse_args(["--models", "ichnet_small", *change])
        assert transfer.pretrain(other, corpus, "ichnet_small", tmp_path) != first, change
    (corpus / "corpus_card.json").write_text('{"images": 11}')  # the corpus was rebuilt
    rebuilt = transfer.pretrain(args, corpus, "ichnet_small", tmp_path)
    assert rebuilt != first and len(made) == 5
    with pytest.raises(FileNotFoundError, match="--report-only"):
        transfer.pretrain(transfer.build_parser().parse_args(["--lr", "0.5"]), corpus,
                          "ichnet_small", tmp_path, train=False)
