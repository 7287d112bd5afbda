"""prepare --runner beam writes the cache the process pool writes (Apache Beam, DirectRunner)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.datasets import Adapter

HAVE_BEAM = importlib.util.find_spec("apache_beam") is not None
needs_beam = pytest.mark.skipif(
    not HAVE_BEAM, reason="apache_beam is not installed (pip install -e '.[beam]')"
)


class Tiles(Adapter):
    """30 small images of 12 patients, one of them unreadable (for quarantine and --strict)."""

    name = "tiles"
    labels = ("a", "b")
    task = "multi-label"

    def read_manifest(self, data_dir, **options):
        n = 30
        return pd.DataFrame({
            "id": [f"t{k:02d}" for k in range(n)], "path": [f"t{k:02d}.npy" for k in range(n)],
            "slice": -1, "patient_id": [f"p{k % 12}" for k in range(n)],
            "study_id": [f"s{k % 12}" for k in range(n)], "series_id": [f"s{k % 12}" for k in range(n)],
            "a": [k % 2 for k in range(n)], "b": [(k // 3) % 2 for k in range(n)],
        })

    def load(self, row, data_dir, windows):
        return np.load(Path(data_dir) / row["path"])

    def channels(self, windows):
        return 3


@pytest.fixture(autouse=True)
def importable_by_beam_workers(monkeypatch):
    """Beam's worker processes unpickle Tiles by module name: give them this folder's path."""
    import os

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(dict.fromkeys(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("beam-data")
    rng = np.random.default_rng(0)
    for k in range(30):
        np.save(root / f"t{k:02d}.npy", rng.uniform(0, 1, (10, 12, 3)).astype(np.float32))
    (root / "t07.npy").write_bytes(b"not a numpy file")
    return root


def _contents(cache):
    """{id: (split, labels, pixels)} from the cache, and its quarantine list."""
    from pipelines.cache import make_dataset, read_info

    info = read_info(cache)
    manifest = pd.read_csv(cache / "manifest.csv", dtype={"id": str}).set_index("id")
    out = {}
    for split in info["splits"]:
        for x, y, ids in make_dataset(cache, split, batch_size=8, with_ids=True):
            for image, label, i in zip(x.numpy(), y.numpy(), ids["id"].numpy()):
                out[i.decode()] = (split, tuple(label), image)
    assert set(out) == set(manifest.index)
    for i, (split, label, _) in out.items():
        assert manifest.loc[i, "split"] == split
        assert tuple(float(manifest.loc[i, k]) for k in info["labels"]) == label
    quarantine = pd.read_csv(cache / "quarantine.csv")
    return out, sorted(Path(p).name for p in quarantine["path"]), info


@needs_beam
def test_beam_writes_the_cache_the_pool_writes(data, tmp_path):
    from pipelines.cache import prepare

    kw = dict(image_size=8, progress=False, shard_size=7, seed=3)
    pool = prepare(Tiles(), data, tmp_path / "pool", workers=2, **kw)
    beam = prepare(Tiles(), data, tmp_path / "beam", workers=2, runner="beam", **kw)
    a, qa, info_a = _contents(pool)
    b, qb, info_b = _contents(beam)
    assert qa == qb == ["t07.npy"]
    assert sorted(a) == sorted(b) and len(a) == 29
    for i in a:
        assert a[i][:2] == b[i][:2]
        np.testing.assert_array_equal(a[i][2], b[i][2])
    assert info_a["splits"] == info_b["splits"] and info_a["shards"] == info_b["shards"]
    assert info_b["prepare"]["runner"] == "beam"
    # pseudonyms come from each cache's own salt, but the grouping of rows by patient is kept
    for cache in (pool, beam):
        m = pd.read_csv(cache / "manifest.csv", dtype=str)
        assert m.groupby("patient_id")["split"].nunique().max() == 1


@needs_beam
def test_strict_stops_the_beam_pipeline_as_it_stops_the_pool(data, tmp_path):
    from pipelines.cache import PrepareError, prepare

    kw = dict(image_size=8, progress=False, strict=True)
    with pytest.raises(PrepareError, match=r"Could not decode t07.npy .*--strict") as pool_error:
        prepare(Tiles(), data, tmp_path / "pool", **kw)
    with pytest.raises(PrepareError, match=r"Could not decode t07.npy .*--strict") as beam_error:
        prepare(Tiles(), data, tmp_path / "beam", runner="beam",
                beam_options="--direct_running_mode=in_memory", **kw)
    assert str(pool_error.value) == str(beam_error.value)
    assert not (tmp_path / "beam" / "dataset.json").exists()


@pytest.mark.skipif(HAVE_BEAM, reason="checks the message shown when apache_beam is missing")
def test_without_beam_the_runner_says_how_to_install_it(data, tmp_path):
    from pipelines.cache import PrepareError, prepare

    with pytest.raises(PrepareError, match=r"pip install -e \"\.\[beam\]\""):
        prepare(Tiles(), data, tmp_path / "c", image_size=8, progress=False, runner="beam")
