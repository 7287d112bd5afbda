"""The pretraining corpus builder on small sources the test writes (pipelines.corpus)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.corpus import CorpusError, build_corpus, main
from pipelines.records import make_dataset, read_info


def write_npz(path, *, rgb=False, n=(12, 4, 4), classes=2, seed=0, shared=None):
    """A MedMNIST-style .npz; ``shared`` (uint8 28x28) is put at train 0 and train 1 (a
    within-source duplicate) and as test 0, so dedup and test exclusion can be checked."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, 28, 28, 3) if rgb else (count, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 255, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    if shared is not None:
        arrays["train_images"][1] = arrays["train_images"][0]  # within-source duplicate
        arrays["train_images"][2] = shared                    # across sources (see below)
    np.savez(path, **arrays)
    return arrays


def spec_file(tmp_path, sources, **top):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**top, "sources": sources}))
    return path


@pytest.fixture
def sources(tmp_path):
    common = np.random.default_rng(9).integers(0, 255, (28, 28), dtype=np.uint8)
    a = write_npz(tmp_path / "alpha.npz", shared=common)
    b = write_npz(tmp_path / "beta.npz", seed=1, classes=3)
    b["train_images"][0] = common  # the same image as alpha's train 2: across sources
    b["test_images"][0] = a["train_images"][5]  # one of alpha's training images is beta's test image
    np.savez(tmp_path / "beta.npz", **b)
    return [
        {"name": "alpha", "dataset": "medmnist", "data_dir": str(tmp_path / "alpha.npz"),
         "licence": "CC BY 4.0", "citation": "Alpha et al.", "modality": "X-ray"},
        {"name": "beta", "dataset": "medmnist", "data_dir": str(tmp_path / "beta.npz"),
         "licence": "CC0", "citation": "Beta et al.", "modality": "CT"},
    ]


def test_corpus_dedups_keeps_test_out_records_provenance_and_writes_the_card(tmp_path, sources):
    out = build_corpus(spec_file(tmp_path, sources), tmp_path / "corpus", image_size=32, progress=False)
    manifest = pd.read_csv(out / "manifest.csv")
    assert set(manifest["source"]) == {"alpha", "beta"}
    assert set(manifest["split"]) == {"train", "val"}  # never test
    assert not manifest["source_id"].str.startswith("test_").any()
    # alpha: 16 train+val, minus its within-source duplicate, minus the image equal to beta's
    # test image; beta: 16 minus the image equal to alpha's train 2 (across sources)
    assert (manifest["source"] == "alpha").sum() == 14
    assert (manifest["source"] == "beta").sum() == 15
    assert manifest["sha256"].is_unique
    labels = read_info(out)["labels"]
    assert labels == ["alpha/class_0", "alpha/class_1", "beta/class_0", "beta/class_1", "beta/class_2"]
    card = json.loads((out / "corpus_card.json").read_text())
    assert card["duplicates_dropped"] == 3
    assert card["sources"]["alpha"]["duplicates_dropped"] == {
        "duplicate_within_source": 1, "equal_to_a_test_image": 1}
    assert card["sources"]["beta"]["duplicates_dropped"] == {"duplicate_across_sources": 1}
    assert card["sources"]["beta"]["test_rows_left_out"] == 4
    assert card["per_modality"] == {"X-ray": 14, "CT": 15}
    assert card["sources"]["alpha"]["licence"] == "CC BY 4.0" and len(card["spec_sha256"]) == 64
    md = (out / "corpus_card.md").read_text()
    assert "Alpha et al." in md and "| beta | yes | 15 |" in md
    x, y = next(iter(make_dataset(out, "train", batch_size=4)))
    assert x.shape == (4, 32, 32, 1) and y.shape == (4, 5)
    assert not list(tmp_path.glob(".corpus.partial-*"))


def test_exclude_leaves_a_source_out_and_source_balanced_sampling(tmp_path, sources):
    out = build_corpus(spec_file(tmp_path, sources), tmp_path / "c", image_size=32,
                       exclude=["beta"], progress=False)
    manifest = pd.read_csv(out / "manifest.csv")
    assert set(manifest["source"]) == {"alpha"}
    card = json.loads((out / "corpus_card.json").read_text())
    assert card["sources"]["beta"]["in_corpus"] is False and card["excluded"] == ["beta"]
    both = build_corpus(spec_file(tmp_path, sources), tmp_path / "both", image_size=32, progress=False)
    ys = np.concatenate([y.numpy() for _, y in make_dataset(both, "train", batch_size=64,
                                                            training=True, balanced="source")])
    groups = np.asarray(read_info(both)["label_groups"])[ys.argmax(1)]
    assert set(groups) == {0, 1}
    # the shards are written in a seeded random order, not source by source and class by class
    # (a local shuffle buffer over sorted shards fed training one class after another)
    order = [int(np.argmax(y)) for _, y in make_dataset(both, "train", batch_size=1, training=False).unbatch()]
    runs = 1 + sum(a != b for a, b in zip(order, order[1:]))
    assert runs > len(set(order)) + 4, order
    with pytest.raises(ValueError, match="balanced='sauce' must be"):
        make_dataset(tmp_path / "c", "train", batch_size=4, balanced="sauce")


def test_rgb_and_grey_sources_need_a_channel_rule(tmp_path, sources):
    write_npz(tmp_path / "gamma.npz", rgb=True, seed=3)
    more = sources + [{"name": "gamma", "dataset": "medmnist", "data_dir": str(tmp_path / "gamma.npz")}]
    with pytest.raises(CorpusError, match="'alpha' .*'gamma' .*disagree on channels.*channels: 1"):
        build_corpus(spec_file(tmp_path, more), tmp_path / "x", image_size=32, progress=False)
    assert not (tmp_path / "x").exists()
    out = build_corpus(spec_file(tmp_path, more, channels=3), tmp_path / "rgb", image_size=32, progress=False)
    assert read_info(out)["channels"] == 3


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data_dir": "/no/such/file.npz"}, "data_dir '/no/such/file.npz' of source 'alpha' .* does not exist"),
        ({"dataset": "medmnsit"}, "Unknown dataset 'medmnsit'.*Did you mean medmnist"),
    ],
)
def test_bad_spec_is_one_sentence_and_a_nonzero_exit(tmp_path, sources, capsys, change, message):
    sources[0].update(change)
    spec = spec_file(tmp_path, sources)
    assert main(["--spec", str(spec), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0])
    assert not (tmp_path / "o").exists()
    assert main(["--spec", str(spec_file(tmp_path, sources[1:])), "--out", str(tmp_path / "o"),
                 "--exclude", "nobody", "--quiet"]) == 2
    assert "--exclude 'nobody' is not a source" in capsys.readouterr().err
