"""The weight average (``--ema EPOCHS``): the averaging arithmetic against numpy, the swap in and
out of the model, that evaluation, best.weights.h5 and the final model are the averaged weights
while the checkpoint keeps the raw ones, that a run killed mid-epoch resumes to the same
averaged weights, and the config checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import tiny_two_label_source
from zoo.training import run
from zoo.training.config import ConfigError, TrainConfig
from zoo.training.ema import WeightAverage, ema_decay
from zoo.training.trainer import Trainer

LABELS = ("left", "top")


@pytest.fixture(scope="module")
def source():
    return tiny_two_label_source(0, LABELS)


def tiny_model(input_shape, num_classes, activation):
    return keras.Sequential([keras.Input(input_shape, name="image"),
                             keras.layers.Conv2D(2, 3, padding="same", name="conv"),
                             keras.layers.BatchNormalization(name="bn"),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(num_classes, activation=activation, name="predictions")],
                            name="tiny")


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_the_horizon_in_epochs_sets_the_per_step_decay():
    assert ema_decay(5, 17) == pytest.approx(1 - 1 / 85)
    assert ema_decay(2, 147) == pytest.approx(1 - 1 / 294)
    assert ema_decay(0.01, 10) == 0.0  # shorter than a step: no averaging at all
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(tiny_model((8, 8, 1), 2, "sigmoid"), 1.0)


def test_the_average_follows_the_weights_as_numpy_computes_it():
    model = tiny_model((8, 8, 1), 2, "sigmoid")
    average = WeightAverage(model, 0.9)
    kernel = model.get_layer("conv").kernel
    shadow = average.shadows[average.targets.index(kernel)]
    expected = np.array(kernel.numpy())
    rng = np.random.default_rng(1)
    for t in range(30):
        kernel.assign(rng.normal(size=kernel.shape).astype("float32"))
        average.update()
        decay = min(0.9, (1 + t) / (10 + t))  # the warm-up form, then the set decay
        expected = decay * expected + (1 - decay) * kernel.numpy()
        np.testing.assert_allclose(shadow.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert int(average.updates.numpy()) == 30
    # integer variables (the dropout seed state) are not averaged
    assert all(keras.backend.is_float_dtype(v.dtype) for v in average.targets)


def test_applied_swaps_the_average_in_and_keeps_what_the_block_did_to_it():
    model = tiny_model((8, 8, 1), 2, "sigmoid")
    average = WeightAverage(model, 0.5)
    raw = _weights(model)
    for v in model.variables:          # move the weights away from the average
        if keras.backend.is_float_dtype(v.dtype):
            v.assign(v + 1.0)
    moved = _weights(model)
    bn_mean = model.get_layer("bn").moving_mean
    with average.applied():
        for got, want in zip(_weights(model), raw):
            np.testing.assert_array_equal(got, want)   # the average (still the start)
        bn_mean.assign(np.full(bn_mean.shape, 7.0, "float32"))  # e.g. recalibration
    for got, want in zip(_weights(model), moved):
        np.testing.assert_array_equal(got, want)       # the model's own weights are back
    with average.applied():
        np.testing.assert_array_equal(bn_mean.numpy(), 7.0)  # the block's change stayed


class _Rising:
    """Trainer.evaluate scripted to improve every epoch, so the best epoch is the last."""

    def __init__(self):
        self.calls = 0

    def __call__(self, trainer):
        self.calls += 1
        mean = 0.5 + 0.01 * self.calls
        return {"loss": 0.5, "auroc_mean": mean, "examples": 8, "auroc": dict.fromkeys(LABELS, mean)}


def _config(tmp_path, **over):
    return {"model": "tiny", "dataset": "arrays", "epochs": 3, "batch_size": 8, "lr": 0.05,
            "steps_per_epoch": 2, "bn_calibration_batches": 0, "export": False, "verbose": 0,
            "output_dir": str(tmp_path / "run"), "ema": 1.0, **over}


def _checkpoint_model_weights(run_dir):
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    keys = sorted(k for k in reader.get_variable_to_shape_map()
                  if k.startswith("model/") and "VARIABLE_VALUE" in k)
    return {k: reader.get_tensor(k) for k in keys}


def test_evaluation_best_weights_and_final_model_are_the_average_the_checkpoint_the_raw(
        source, tmp_path, monkeypatch):
    seen, rising = [], _Rising()

    def evaluate(self):  # records the weights an evaluation sees
        with self.averaged():
            seen.append(_weights(self.model))
        return rising(self)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    metrics = run(_config(tmp_path), source=source, model_fn=tiny_model)
    assert metrics["best_epoch"] == 3 and metrics["epochs_run"] == 3
    best = tiny_model((8, 8, 1), 2, "sigmoid")
    best.load_weights(tmp_path / "run" / "best.weights.h5")
    final = keras.saving.load_model(tmp_path / "run" / "model.keras")
    for a, b, c in zip(best.get_weights(), final.get_weights(), seen[-1]):
        np.testing.assert_array_equal(a, b)   # the saved model is the best epoch's average
        np.testing.assert_array_equal(a, c)   # which is what the last evaluation saw
    raw = _checkpoint_model_weights(tmp_path / "run")
    kernel = best.get_layer("conv").kernel.numpy()
    raw_kernels = [v for v in raw.values() if v.shape == kernel.shape]
    assert raw_kernels and not np.allclose(raw_kernels[0], kernel)  # the checkpoint: raw weights

    # without --ema the kept weights are the raw ones
    monkeypatch.setattr(Trainer, "evaluate", lambda self: rising(self))
    run(_config(tmp_path / "plain", ema=0), source=source, model_fn=tiny_model)
    plain = tiny_model((8, 8, 1), 2, "sigmoid")
    plain.load_weights(tmp_path / "plain" / "run" / "best.weights.h5")
    raw = _checkpoint_model_weights(tmp_path / "plain" / "run")
    raw_kernels = [v for v in raw.values() if v.shape == kernel.shape]
    np.testing.assert_array_equal(raw_kernels[0], plain.get_layer("conv").kernel.numpy())


class _Killed(Exception):
    pass


def test_a_run_killed_mid_epoch_resumes_to_the_same_averaged_weights(source, tmp_path, monkeypatch):
    rising = _Rising()
    monkeypatch.setattr(Trainer, "evaluate", lambda self: rising(self))
    straight = run(_config(tmp_path / "a"), source=source, model_fn=tiny_model)
    real = Trainer.on_step_end

    def dies(self, epoch, step, loss):
        real(self, epoch, step, loss)
        if (epoch, step) == (1, 0):
            raise _Killed

    monkeypatch.setattr(Trainer, "on_step_end", dies)
    rising.calls = 0
    cfg = _config(tmp_path / "b", checkpoint_steps=1)
    with pytest.raises(_Killed):
        run(cfg, source=source, model_fn=tiny_model)
    monkeypatch.setattr(Trainer, "on_step_end", real)
    rising.calls = 1
    resumed = run(cfg, source=source, model_fn=tiny_model)
    assert resumed["weights_sha256"] == straight["weights_sha256"]


def test_the_config_and_the_recipe_check_the_horizon():
    assert TrainConfig(model="resnet18").ema == 0.0   # the default recipe: off
    for bad in (-1, True, "3"):
        with pytest.raises(ConfigError, match="--ema must be 0"):
            TrainConfig(model="ichnet", ema=bad).validate()
