"""--augment-on device: the train step augments, with the same batches as the tf.data CPU path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from pipelines import augment
from pipelines.cache import make_dataset, prepare
from pipelines.datasets import Adapter
from tests.training.test_trainer import tiny_model
from zoo.training.config import ConfigError, TrainConfig
from zoo.training.data import CacheSource
from zoo.training.trainer import Trainer

SIZE = 24
SPEC = "flip,rotation=20,zoom=0.2,contrast=0.2"


class Squares(Adapter):
    """20 training and 8 validation images with a bright left half (flips are visible)."""

    name = "squares"
    labels = ("left", "top")
    task = "multi-label"

    def read_manifest(self, data_dir, **options):
        n = 28
        return pd.DataFrame({
            "id": [f"s{i:02d}" for i in range(n)], "path": [f"s{i:02d}.npy" for i in range(n)],
            "slice": -1, "patient_id": [f"p{i}" for i in range(n)],
            "study_id": [f"p{i}" for i in range(n)], "series_id": [f"p{i}" for i in range(n)],
            "left": [i % 2 for i in range(n)], "top": [(i // 2) % 2 for i in range(n)],
            "split": ["train"] * 20 + ["val"] * 8,
        })

    def load(self, row, data_dir, windows):
        return np.load(Path(data_dir) / row["path"])

    def channels(self, windows):
        return 1


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment_on")
    (root / "data").mkdir()
    rng = np.random.default_rng(0)
    for i in range(28):
        image = rng.uniform(0.2, 0.6, size=(SIZE, SIZE, 1)).astype(np.float32)
        image[:, : SIZE // 2] = 0.9
        np.save(root / "data" / f"s{i:02d}.npy", image)
    return prepare(Squares(), root / "data", root / "cache", image_size=SIZE, shard_size=6,
                   progress=False)


def _trainer(cache, tmp_path, **over):
    cfg = {"model": "tiny", "dataset": "squares", "epochs": 2, "batch_size": 4, "lr": 0.05,
           "export": False, "verbose": 0, "seed": 3, "augment": SPEC,
           "bn_calibration_batches": 0, **over}
    cfg = TrainConfig.coerce(cfg).validate()
    return Trainer(cfg, CacheSource(cache), strategy=tf.distribute.get_strategy(),
                   run_dir=tmp_path / "run", model_fn=tiny_model)


@pytest.mark.parametrize("epoch", [0, 1])
def test_the_device_path_augments_as_the_cpu_path_does(cache, epoch):
    seed = 3
    cpu = make_dataset(cache, "train", batch_size=4, training=True, augment=SPEC, seed=seed,
                       epoch=epoch)
    plain = make_dataset(cache, "train", batch_size=4, training=True, augment=None, seed=seed,
                         epoch=epoch)
    device = augment.build_augmentation(SPEC, seed=0)  # the seed comes with each call
    step = tf.function(lambda x, s, i: device(x, batch_index=i, seed=s))
    s = tf.constant(augment.epoch_seed(seed, epoch), tf.int64)
    for i, (a, b) in enumerate(zip(cpu, plain)):
        out = step(b[0], s, tf.constant(i, tf.int64))
        assert not np.allclose(out.numpy(), b[0].numpy())  # it did augment
        np.testing.assert_allclose(out.numpy(), a[0].numpy(), atol=1e-6)
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())


def test_tf_data_only_reads_and_the_step_augments_in_training_only(cache, tmp_path):
    trainer = _trainer(cache, tmp_path)
    assert trainer.augmenter is not None
    batch = next(iter(trainer.begin_epoch(1, skip=2)))
    assert len(batch) == 3  # images, labels, [epoch seed, batch index]
    assert batch[2].numpy().tolist() == [augment.epoch_seed(3, 1), 2]  # counted before the skip
    plain = list(make_dataset(cache, "train", batch_size=4, training=True, seed=3, epoch=1))
    np.testing.assert_array_equal(batch[0].numpy(), plain[2][0].numpy())  # not augmented
    cpu = list(make_dataset(cache, "train", batch_size=4, training=True, seed=3, epoch=1,
                            augment=SPEC))
    np.testing.assert_allclose(trainer.augment(batch[0], batch[2]).numpy(), cpu[2][0].numpy(),
                               atol=1e-6)

    calls = []
    real = trainer.augment
    trainer.augment = lambda x, key: (calls.append(1), real(x, key))[1]
    iterator = trainer.begin_epoch(0)
    assert np.isfinite(float(trainer.train_step(iterator)))
    assert calls, "the replicated train step did not augment"
    traced = len(calls)
    trainer.evaluate()
    assert len(calls) == traced  # evaluation sees the images as they are


def test_the_cpu_path_leaves_the_step_alone(cache, tmp_path):
    trainer = _trainer(cache, tmp_path, augment_on="cpu")
    assert trainer.augmenter is None
    batch = next(iter(trainer.begin_epoch(0)))
    assert len(batch) == 2
    cpu = next(iter(make_dataset(cache, "train", batch_size=4, training=True, seed=3, epoch=0,
                                 augment=SPEC)))
    np.testing.assert_allclose(batch[0].numpy(), cpu[0].numpy(), atol=1e-6)
    assert np.isfinite(float(trainer.train_step(trainer.begin_epoch(0))))


def test_augment_on_is_checked():
    with pytest.raises(ConfigError, match="--augment-on 'gpu' is not one of device, cpu"):
        TrainConfig(augment_on="gpu").validate()


def test_jit_compile_on_trains_the_same_step(cache, tmp_path):
    """XLA on (forced, on this CPU) gives a finite loss close to the plain step's."""
    losses = []
    for jit in ("off", "on"):
        trainer = _trainer(cache, tmp_path / jit, jit_compile=jit)
        assert trainer.jit == (jit == "on")
        losses.append(float(trainer.train_step(trainer.begin_epoch(0))))
    assert np.isfinite(losses).all()
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
