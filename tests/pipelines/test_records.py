"""pipelines.cache.prepare: the TFRecord cache (round trip, resume, quarantine, privacy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from pipelines.cache import PrepareError, make_dataset, prepare, read_info
from pipelines.datasets import Adapter

H, W = 12, 10


class FakeAdapter(Adapter):
    """A test double with the adapter interface over .npy files (exact uint8 levels)."""

    name = "fake"
    labels = ("any", "other")
    task = "multi-label"

    def __init__(self, n=16, patients=8, official_split=False, fail_at=None, crash=OSError):
        self.n, self.patients, self.official_split = n, patients, official_split
        self.fail_at = fail_at  # raise `crash` on this load call (0-based), to stop a run
        self.crash = crash
        self.loaded: list[str] = []

    def read_manifest(self, data_dir, **options):
        rows = []
        for i in range(self.n):
            p = i % self.patients
            row = {
                "id": f"img{i:03d}",
                "path": f"img{i:03d}.npy",
                "slice": -1,
                "patient_id": f"DOE^JANE {p}",
                "study_id": f"1.2.840.{p}",
                "series_id": f"1.2.840.{p}.1",
                "any": int(i % 4 == 0),
                "other": int(i % 3 == 0),
            }
            if self.official_split:
                row["split"] = ("train", "train", "val", "test")[p % 4]
            rows.append(row)
        return pd.DataFrame(rows)

    def load(self, row, data_dir, windows):
        if self.fail_at is not None and len(self.loaded) == self.fail_at:
            raise self.crash("simulated crash")
        self.loaded.append(row["id"])
        return np.load(Path(data_dir) / row["path"])

    def channels(self, windows):
        return len(windows)


def pixels(i: int, channels: int = 3) -> np.ndarray:
    """Image i: distinct uint8 levels / 255, so the cache must return them exactly."""
    rng = np.random.default_rng(i)
    return (rng.integers(0, 256, size=(H, W, channels)) / 255.0).astype(np.float32)


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(16):
        np.save(folder / f"img{i:03d}.npy", pixels(i))
    return folder


def run(adapter, data_dir, out, **kwargs):
    kwargs.setdefault("image_size", (H, W))
    kwargs.setdefault("shard_size", 3)
    kwargs.setdefault("progress", False)
    return prepare(adapter, data_dir, out, **kwargs)


def read_split(cache, split):
    images, labels, ids, patients = [], [], [], []
    for x, y, extra in make_dataset(cache, split, batch_size=4, with_ids=True):
        images.append(x.numpy())
        labels.append(y.numpy())
        ids += [v.decode() for v in extra["id"].numpy()]
        patients += [v.decode() for v in extra["patient_id"].numpy()]
    return np.concatenate(images), np.concatenate(labels), ids, patients


def test_round_trip_pixels_labels_ids(data_dir, tmp_path):
    adapter = FakeAdapter()
    cache = run(adapter, data_dir, tmp_path / "cache")
    info = read_info(cache)
    assert info["labels"] == ["any", "other"] and info["task"] == "multi-label"
    assert info["image_size"] == [H, W] and info["channels"] == 3
    assert sum(info["splits"].values()) == 16 and info["quarantined"] == 0
    manifest = pd.read_csv(cache / "manifest.csv", dtype={"id": str})
    assert list(manifest.columns[:5]) == ["id", "patient_id", "study_id", "series_id", "slice"]
    assert {"split", "shard"} <= set(manifest.columns)
    for split, count in info["splits"].items():
        files = sorted(p.name for p in cache.glob(f"{split}-*.tfrecord"))
        assert files == sorted(info["shards"][split]) and len(files) == -(-count // 3)
        images, labels, ids, patients = read_split(cache, split)
        assert len(ids) == count == (manifest["split"] == split).sum()
        for image, label, example_id, patient in zip(images, labels, ids, patients):
            i = int(example_id[3:])
            np.testing.assert_allclose(image, pixels(i), atol=1e-6)
            assert label.tolist() == [float(i % 4 == 0), float(i % 3 == 0)]
            row = manifest[manifest["id"] == example_id].iloc[0]
            assert row["patient_id"] == patient and row["split"] == split
            assert (cache / row["shard"]).is_file()


def test_patient_ids_are_pseudonymised_and_nothing_identifying_is_written(data_dir, tmp_path):
    cache = run(FakeAdapter(), data_dir, tmp_path / "cache")
    manifest = pd.read_csv(cache / "manifest.csv", dtype=str)
    pseudonyms = manifest.groupby(manifest["id"].str[3:].astype(int) % 8)["patient_id"].nunique()
    assert (pseudonyms == 1).all()  # one pseudonym per patient
    assert manifest["patient_id"].nunique() == 8
    assert manifest["patient_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert manifest["study_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert not (cache / ".progress").exists()  # the salt went with it
    for path in cache.iterdir():
        data = path.read_bytes()
        assert b"DOE^JANE" not in data and b"1.2.840" not in data, path.name


def test_resize_to_image_size(data_dir, tmp_path):
    cache = run(FakeAdapter(), data_dir, tmp_path / "cache", image_size=8)
    x, _ = next(iter(make_dataset(cache, "train", batch_size=2)))
    assert x.shape == (2, 8, 8, 3) and x.dtype == tf.float32
    x, _ = next(iter(make_dataset(cache, "train", batch_size=2, image_size=(6, 4))))
    assert x.shape == (2, 6, 4, 3)
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0


def test_official_split_is_kept(data_dir, tmp_path):
    adapter = FakeAdapter(official_split=True)
    cache = run(adapter, data_dir, tmp_path / "cache")
    manifest = pd.read_csv(cache / "manifest.csv", dtype={"id": str})
    expected = {f"img{i:03d}": ("train", "train", "val", "test")[(i % 8) % 4] for i in range(16)}
    assert dict(zip(manifest["id"], manifest["split"])) == expected


def test_strict_stop_leaves_no_salt_and_no_shards(data_dir, tmp_path):
    out = tmp_path / "cache"
    with pytest.raises(PrepareError, match="simulated crash"):
        run(FakeAdapter(fail_at=5), data_dir, out, strict=True)
    assert not (out / ".progress").exists() and not list(out.glob("*.tfrecord"))
    assert not list(out.glob(".*"))  # no shard temp file, no worker piece file


def test_resume_skips_finished_shards(data_dir, tmp_path):
    out = tmp_path / "cache"
    crashing = FakeAdapter(fail_at=5, crash=KeyboardInterrupt)  # Ctrl-C or a crash mid-run
    with pytest.raises(KeyboardInterrupt, match="simulated crash"):
        run(crashing, data_dir, out)
    assert not (out / "dataset.json").exists()
    with pytest.raises(FileNotFoundError, match="run `python -m pipelines.prepare`"):
        read_info(out)
    finished = sorted(out.glob("*.tfrecord"))
    assert len(finished) == 1  # shard 0 (3 images) done, shard 1 stopped part-way
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*.part"))
    stamp = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in finished}
    first_shard_ids = crashing.loaded[:3]

    with pytest.raises(PrepareError, match="other settings"):
        run(FakeAdapter(), data_dir, out, image_size=8)

    again = FakeAdapter()
    run(again, data_dir, out)
    assert len(again.loaded) == 16 - 3
    assert not set(first_shard_ids) & set(again.loaded)
    for path, (mtime, data) in stamp.items():
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data

    fresh = run(FakeAdapter(), data_dir, tmp_path / "fresh")
    for split in read_info(out)["splits"]:
        a, b = read_split(out, split), read_split(fresh, split)
        assert a[2] == b[2] and np.array_equal(a[0], b[0])
    assert json.loads((out / "dataset.json").read_text())["splits"] == read_info(fresh)["splits"]

    idle = FakeAdapter()
    run(idle, data_dir, out)  # finished cache: nothing to do
    assert idle.loaded == []


def test_corrupt_file_is_quarantined_or_fails_fast_with_strict(data_dir, tmp_path):
    (data_dir / "img005.npy").write_bytes(b"not a numpy file")
    cache = run(FakeAdapter(), data_dir, tmp_path / "cache")
    info = read_info(cache)
    assert info["quarantined"] == 1 and sum(info["splits"].values()) == 15
    quarantine = pd.read_csv(cache / "quarantine.csv")
    assert quarantine["path"].tolist() == ["img005.npy"]
    assert "img005" not in set(pd.read_csv(cache / "manifest.csv")["id"])
    assert quarantine["reason"].iloc[0]  # the reason is recorded

    with pytest.raises(PrepareError, match=r"img005\.npy .*without --strict"):
        run(FakeAdapter(), data_dir, tmp_path / "strict", strict=True)


def test_bad_arguments_get_clear_errors(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(FakeAdapter(), tmp_path / "nowhere", tmp_path / "cache")
    with pytest.raises(ValueError, match="image_size"):
        run(FakeAdapter(), data_dir, tmp_path / "cache", image_size=0)
    with pytest.raises(ValueError, match="workers"):
        run(FakeAdapter(), data_dir, tmp_path / "cache", workers=0)
