"""pipelines.cache.make_dataset: order, sharding, balance, augmentation, ids, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from pipelines import augment
from pipelines.cache import make_dataset, prepare, read_info
from pipelines.datasets import Adapter

SIZE = 8


class ToyAdapter(Adapter):
    """24 tiny images, two per patient, an official split; label "any" positive for 1 in 4."""

    name = "toy"
    labels = ("any", "other")
    task = "multi-label"

    def __init__(self, n=24):
        self.n = n

    def read_manifest(self, data_dir, **options):
        return pd.DataFrame(
            {
                "id": [f"x{i:02d}" for i in range(self.n)],
                "path": [f"x{i:02d}.npy" for i in range(self.n)],
                "slice": -1,
                "patient_id": [f"p{i // 2}" for i in range(self.n)],
                "study_id": [f"s{i // 2}" for i in range(self.n)],
                "series_id": [f"s{i // 2}" for i in range(self.n)],
                "any": [int(i % 4 == 0) for i in range(self.n)],
                "other": [int(i % 2 == 0) for i in range(self.n)],
                "split": ["train"] * (self.n - 4) + ["val"] * 4,
            }
        )

    def load(self, row, data_dir, windows):
        return np.load(Path(data_dir) / row["path"])

    def channels(self, windows):
        return 3


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Two caches of the same data: 7 small shards for train, and one shard per split."""
    root = tmp_path_factory.mktemp("make_dataset")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        image = rng.uniform(0.2, 0.8, size=(SIZE, SIZE, 3)).astype(np.float32)
        image[:, : SIZE // 2] = 0.9  # left half bright: a flip is visible
        np.save(data / f"x{i:02d}.npy", image)
    common = dict(image_size=SIZE, progress=False)
    many = prepare(ToyAdapter(), data, root / "many", shard_size=3, **common)
    one = prepare(ToyAdapter(), data, root / "one", shard_size=100, **common)
    return many, one


def ids_of(ds):
    out = []
    for batch in ds:
        out += [v.decode() for v in batch[2]["id"].numpy()]
    return out


def test_yields_float_images_and_labels(caches):
    many, _ = caches
    x, y = next(iter(make_dataset(many, "train", batch_size=4)))
    assert x.shape == (4, SIZE, SIZE, 3) and x.dtype == tf.float32
    assert y.shape == (4, 2) and y.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert sum(int(b[0].shape[0]) for b in make_dataset(many, "train", batch_size=3)) == 20
    sizes = [
        int(b[0].shape[0]) for b in make_dataset(many, "train", batch_size=3, drop_remainder=True)
    ]
    assert sizes == [3] * 6


def test_with_ids(caches):
    many, _ = caches
    batches = list(make_dataset(many, "val", batch_size=2, with_ids=True))
    assert all(len(b) == 3 and set(b[2]) == {"id", "patient_id"} for b in batches)
    ids = ids_of(batches)
    manifest = pd.read_csv(many / "manifest.csv", dtype=str).set_index("id")
    assert sorted(ids) == sorted(manifest.index[manifest["split"] == "val"])
    for b in batches:
        for i, p in zip(b[2]["id"].numpy(), b[2]["patient_id"].numpy()):
            assert manifest.loc[i.decode(), "patient_id"] == p.decode()


def test_order_is_deterministic_by_seed_and_epoch(caches):
    many, _ = caches

    def run(**kw):
        ds = make_dataset(many, "train", batch_size=4, training=True, with_ids=True, **kw)
        return ids_of(ds)

    first = run(seed=1, epoch=0)
    assert first == run(seed=1, epoch=0)
    assert sorted(first) == sorted(run(seed=1, epoch=1))
    assert first != run(seed=1, epoch=1)
    assert first != run(seed=2, epoch=0)
    plain = ids_of(make_dataset(many, "train", batch_size=4, with_ids=True))
    assert plain == ids_of(make_dataset(many, "train", batch_size=4, with_ids=True))


def test_augmented_batches_are_deterministic_by_seed_and_epoch(caches):
    many, _ = caches

    def images(**kw):
        ds = make_dataset(many, "train", batch_size=4, training=True, augment=True, **kw)
        return np.concatenate([x.numpy() for x, _ in ds])

    a = images(seed=3, epoch=0)
    np.testing.assert_array_equal(a, images(seed=3, epoch=0))
    assert not np.array_equal(a, images(seed=3, epoch=1))


@pytest.mark.parametrize("which", [0, 1])
def test_worker_sharding_is_disjoint_and_complete(caches, which):
    cache = caches[which]  # 0: 7 train files, shard by file; 1: one file, shard by record
    everything = ids_of(make_dataset(cache, "train", batch_size=4, with_ids=True))
    parts = []
    for i in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i)
        ds = make_dataset(
            cache,
            "train",
            batch_size=4,
            training=True,
            input_context=context,
            with_ids=True,
            seed=5,
        )
        parts.append(ids_of(ds))
    assert parts[0] and parts[1]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(everything)
    assert len(everything) == 20


def test_balanced_sampling_evens_out_the_first_label(caches):
    many, _ = caches
    manifest = pd.read_csv(many / "manifest.csv")
    train = manifest[manifest["split"] == "train"]
    assert train["any"].mean() == pytest.approx(0.25)
    ds = make_dataset(
        many, "train", batch_size=10, training=True, balanced=True, repeat=True, seed=0
    )
    labels = np.concatenate([y.numpy() for _, y in ds.take(40)])
    assert abs(labels[:, 0].mean() - 0.5) < 0.06
    epoch = make_dataset(many, "train", batch_size=4, training=True, balanced=True)
    assert sum(int(y.shape[0]) for _, y in epoch) == len(train)  # an epoch keeps its length


def test_augmentation_keeps_shape_and_range(caches):
    many, _ = caches
    plain = make_dataset(many, "train", batch_size=20, training=True, seed=0)
    aug = make_dataset(
        many,
        "train",
        batch_size=20,
        training=True,
        seed=0,
        augment="flip,rotation=20,zoom=0.2,contrast=0.3",
    )
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(aug))
    assert x1.shape == x0.shape and x1.dtype == tf.float32
    np.testing.assert_array_equal(y0.numpy(), y1.numpy())
    assert 0.0 <= float(tf.reduce_min(x1)) and float(tf.reduce_max(x1)) <= 1.0
    assert not np.allclose(x0.numpy(), x1.numpy())
    flips = make_dataset(
        many, "train", batch_size=20, training=True, seed=0, augment={"flip": True}
    )
    x2 = next(iter(flips))[0].numpy()
    mirrored = np.isclose(x2, x0.numpy()[:, :, ::-1]).all(axis=(1, 2, 3))
    same = np.isclose(x2, x0.numpy()).all(axis=(1, 2, 3))
    assert (mirrored | same).all() and mirrored.any() and same.any()
    evaluation = make_dataset(many, "train", batch_size=20, augment=True)  # not training: off
    np.testing.assert_array_equal(
        next(iter(evaluation))[0].numpy(),
        next(iter(make_dataset(many, "train", batch_size=20)))[0].numpy(),
    )


@pytest.mark.parametrize("kind", ["mixup", "cutmix", "both"])
def test_mixup_and_cutmix(caches, kind):
    many, _ = caches
    kw = {"mixup": 0.4 if kind != "cutmix" else 0.0, "cutmix": 1.0 if kind != "mixup" else 0.0}
    ds = make_dataset(many, "train", batch_size=10, training=True, seed=0, **kw)
    batches = list(ds)
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert x.shape == (20, SIZE, SIZE, 3) and y.shape == (20, 2)
    assert 0.0 <= x.min() and x.max() <= 1.0 and 0.0 <= y.min() and y.max() <= 1.0
    assert ((y > 0.01) & (y < 0.99)).any()  # some labels are mixed


def test_clear_errors(caches, tmp_path):
    many, _ = caches
    with pytest.raises(ValueError, match=r"no split 'tset'; it has train, val"):
        make_dataset(many, "tset", batch_size=2)
    with pytest.raises(FileNotFoundError, match="does not exist; create it with"):
        make_dataset(tmp_path / "nope", "train", batch_size=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no dataset.json"):
        read_info(tmp_path / "empty")
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(many, "train", batch_size=0)
    with pytest.raises(ValueError, match="Unknown augmentation 'blur'"):
        make_dataset(many, "train", batch_size=2, training=True, augment="flip,blur")
    with pytest.raises(ValueError, match="mixup"):
        make_dataset(many, "train", batch_size=2, training=True, mixup=-1.0)


def test_augment_spec_parsing():
    assert augment.parse_augment(None) is None and augment.parse_augment("none") is None
    assert augment.parse_augment(True) == augment.DEFAULTS
    assert augment.parse_augment("flip,rotation=15") == {"flip": "horizontal", "rotation": 15.0}
    assert augment.parse_augment({"zoom": 0}) == {}
    with pytest.raises(ValueError, match="flip='diagonal'"):
        augment.parse_augment({"flip": "diagonal"})
    with pytest.raises(ValueError, match="rotation=400.0 must be between 0 and 180"):
        augment.parse_augment("rotation=400")
    layers = augment.build_augmentation(True, seed=0).layers
    assert [type(x).__name__ for x in layers] == [
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomContrast",
    ]


def test_augmentation_is_tied_to_the_batch_index_not_to_the_thread_order():
    aug = augment.build_augmentation(True, seed=7)
    batches = tf.random.stateless_uniform((6, 4, SIZE, SIZE, 3), seed=(1, 2))

    def run(parallel):
        ds = tf.data.Dataset.from_tensor_slices(batches).enumerate()
        fn = lambda i, b: aug(b, batch_index=i)  # noqa: E731
        ds = ds.map(fn, num_parallel_calls=parallel, deterministic=True) if parallel else ds.map(fn)
        return np.stack([b.numpy() for b in ds])

    sequential = run(None)
    np.testing.assert_array_equal(sequential, run(tf.data.AUTOTUNE))
    np.testing.assert_array_equal(sequential, run(4))
    assert not np.allclose(sequential, batches.numpy())
    assert 0.0 <= sequential.min() and sequential.max() <= 1.0


def test_mixup_is_deterministic_by_seed(caches):
    many, _ = caches

    def run(seed):
        ds = make_dataset(
            many, "train", batch_size=5, training=True, seed=seed, mixup=0.4, cutmix=1.0
        )
        return np.concatenate([x.numpy() for x, _ in ds])

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))
