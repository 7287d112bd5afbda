"""MixUp / CutMix in the train step (``--mixup``, ``--cutmix``, recipe fields ``mixup`` and
``cutmix``): the step trains on the batch blended as ``pipelines.augment.build_mix`` blends it
with the batch's [epoch seed, index] tag, on the device and the CPU augmentation paths alike, so
the blend is a function of (seed, epoch, batch index); evaluation sees plain images; bad values
and a pretraining corpus are refused in one sentence."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import augment
from tests.training.test_augment_on_device import SPEC, _trainer, cache  # noqa: F401 (fixture)
from zoo.recipes import Recipe
from zoo.training.config import ConfigError, TrainConfig
from zoo.training.trainer import MIX_SEED_OFFSET


def _fed(trainer, batch):
    """The (images, labels) the replica step hands to the loss for ``batch``."""
    seen = []
    real = trainer._loss_and_grads
    trainer._loss_and_grads = lambda x, y: (seen.append((x.numpy(), y.numpy())), real(x, y))[1]
    try:
        trainer._replica_step(*batch)
    finally:
        trainer._loss_and_grads = real
    return seen[0]


@pytest.mark.parametrize("augment_on", ["device", "cpu"])
def test_the_step_trains_on_the_batch_blended_from_its_tag(cache, tmp_path, augment_on):  # noqa: F811
    trainer = _trainer(cache, tmp_path, mixup=0.4, augment_on=augment_on)
    batch = next(iter(trainer.begin_epoch(1, skip=1)))
    assert len(batch) == 3  # tagged on both paths once a blend is asked for
    x, y = _fed(trainer, batch)

    images = batch[0]
    if augment_on == "device":
        images = trainer.augment(images, batch[2])
    mixer = augment.build_mix(mixup=0.4)
    want_x, want_y = mixer(batch[2][1], images, batch[1], seed=batch[2][0] + MIX_SEED_OFFSET)
    np.testing.assert_allclose(x, want_x.numpy(), atol=1e-6)
    np.testing.assert_allclose(y, want_y.numpy(), atol=1e-6)
    labels = batch[1].numpy()
    assert not np.allclose(y, labels)                         # the labels were blended
    assert np.all((y >= 0) & (y <= 1))
    np.testing.assert_allclose(y.mean(), labels.mean(), atol=0.26)  # convex mixes of the batch
    assert x.min() >= 0.0 and x.max() <= 1.0

    other = _trainer(cache, tmp_path / "again", mixup=0.4, augment_on=augment_on)
    again = _fed(other, next(iter(other.begin_epoch(1, skip=1))))
    np.testing.assert_array_equal(again[1], y)                 # a function of the tag only


def test_without_a_blend_the_labels_reach_the_loss_as_they_are(cache, tmp_path):  # noqa: F811
    trainer = _trainer(cache, tmp_path)
    assert trainer.mixer is None
    batch = next(iter(trainer.begin_epoch(0)))
    _, y = _fed(trainer, batch)
    np.testing.assert_array_equal(y, batch[1].numpy())


def test_cutmix_and_mixup_together_alternate_by_batch(cache, tmp_path):  # noqa: F811
    trainer = _trainer(cache, tmp_path, mixup=0.4, cutmix=1.0, augment="none")
    batches = list(trainer.begin_epoch(0))[:2]
    for batch in batches:
        x, y = _fed(trainer, batch)
        layer_seed = batch[2][0] + MIX_SEED_OFFSET
        index = int(batch[2][1])
        only = (augment.build_mix(mixup=0.4) if index % 2 == 0 else augment.build_mix(cutmix=1.0))
        want_x, _ = only(batch[2][1], batch[0], batch[1], seed=layer_seed)
        np.testing.assert_allclose(x, want_x.numpy(), atol=1e-6)
    trainer.evaluate()  # evaluation runs on plain images (no tag, no blend)


def test_a_whole_run_with_mixup_is_reproducible(cache, tmp_path):  # noqa: F811
    from zoo.training import run
    from zoo.training.data import CacheSource

    def cfg(out):
        return {"model": "tiny", "dataset": "squares", "epochs": 2, "batch_size": 4, "lr": 0.05,
                "export": False, "verbose": 0, "seed": 3, "augment": SPEC, "mixup": 0.4,
                "bn_calibration_batches": 0, "output_dir": str(out)}

    from tests.training.test_trainer import tiny_model
    a = run(cfg(tmp_path / "a"), source=CacheSource(cache), model_fn=tiny_model)
    b = run(cfg(tmp_path / "b"), source=CacheSource(cache), model_fn=tiny_model)
    assert a["weights_sha256"] == b["weights_sha256"]
    plain = run({**cfg(tmp_path / "c"), "mixup": 0}, source=CacheSource(cache), model_fn=tiny_model)
    assert plain["weights_sha256"] != a["weights_sha256"]


def test_bad_blend_values_are_one_sentence():
    assert TrainConfig(model="resnet18").mixup == 0.0 and TrainConfig(model="ichnet").cutmix == 0.0
    for flag, bad in (("mixup", -0.2), ("cutmix", True), ("mixup", "0.2")):
        with pytest.raises(ConfigError, match=f"--{flag} must be 0 .off. or a positive Beta"):
            TrainConfig(model="ichnet", **{flag: bad}).validate()
    with pytest.raises(ConfigError, match="set them to 0 for pretraining"):
        TrainConfig(model="ichnet", pretrain="corpus", mixup=0.2).validate()
    for bad in (-1, True):
        with pytest.raises(ValueError, match="Recipe mixup must be 0"):
            Recipe(mixup=bad)
    with pytest.raises(ValueError, match="mixup=-1 must be a number >= 0"):
        augment.build_mix(mixup=-1)
    assert augment.build_mix() is None
