"""The Trainer's methods one at a time, on arrays and a tiny model, and the BN-layer walk."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

import zoo
from zoo.training.batchnorm import batchnorm_layers
from zoo.training.config import TrainConfig
from zoo.training.data import ArraySource
from zoo.training.metrics import weights_digest
from zoo.training.trainer import Trainer, fit

LABELS = ("left", "top")


def _arrays(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=(n, 2)).astype("float32")
    x = rng.normal(0.3, 0.08, size=(n, 16, 16, 1)).astype("float32")
    x[:, :, :8] += 0.25 * y[:, 0, None, None, None]
    x[:, :8] += 0.25 * y[:, 1, None, None, None]
    return np.clip(x, 0, 1), y


@pytest.fixture(scope="module")
def source():
    return ArraySource({"train": _arrays(32, 0), "val": _arrays(24, 1)}, labels=LABELS,
                       task="multi-label")


def tiny_model(input_shape, num_classes, activation):
    return keras.Sequential([
        keras.Input(input_shape, name="image"),
        keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.AveragePooling2D(4),
        keras.layers.Flatten(),
        keras.layers.Dense(num_classes, activation=activation, name="predictions"),
    ], name="tiny")


def _trainer(source, tmp_path, **over):
    cfg = {"model": "tiny", "dataset": "arrays", "epochs": 3, "batch_size": 8, "lr": 0.05,
           "export": False, "verbose": 0, "seed": 1, "bn_calibration_batches": 2, **over}
    cfg = TrainConfig.coerce(cfg).validate()
    return Trainer(cfg, source, strategy=tf.distribute.get_strategy(), run_dir=tmp_path / "run",
                   model_fn=tiny_model)


def _scores(mean):
    return {"loss": 0.5, "auroc_mean": mean, "examples": 24,
            "auroc": {name: mean for name in LABELS}}


def _history(trainer):
    with open(trainer.recorder.history_path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_step_changes_the_weights_and_returns_a_finite_loss(source, tmp_path):
    trainer = _trainer(source, tmp_path)
    before = [w.copy() for w in trainer.model.get_weights()]
    iterator = trainer.begin_epoch(0)
    loss = float(trainer.train_step(iterator))
    assert np.isfinite(loss) and loss > 0
    assert int(trainer.optimizer.iterations.numpy()) == 1
    after = trainer.model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    trainer.close()


def test_on_step_end_counts_the_loss_and_stops_on_a_non_finite_one(source, tmp_path):
    trainer = _trainer(source, tmp_path)
    trainer.begin_epoch(0)
    trainer.on_step_end(0, 0, 0.75)
    assert trainer.state.position() == (0, 1)
    assert float(trainer.state.loss_sum.numpy()) == pytest.approx(0.75)
    with pytest.raises(FloatingPointError, match="epoch 1, step 2; lower --lr"):
        trainer.on_step_end(0, 1, float("nan"))
    trainer.close()


def test_evaluate_returns_per_label_auroc_of_the_validation_predictions(source, tmp_path):
    trainer = _trainer(source, tmp_path)
    scores = trainer.evaluate()
    assert set(scores) == {"loss", "auroc_mean", "auroc", "examples"}
    assert scores["examples"] == 24 and np.isfinite(scores["loss"])
    y, p = trainer.predict("val")                      # calibrated BN: same predictions again
    for k, name in enumerate(LABELS):                  # against sklearn directly
        assert scores["auroc"][name] == pytest.approx(roc_auc_score(y[:, k], p[:, k]), abs=1e-6)
    assert scores["auroc_mean"] == pytest.approx(np.mean(list(scores["auroc"].values())))
    trainer.close()


def test_on_epoch_end_writes_history_and_keeps_best_weights_only_when_auroc_improves(source, tmp_path):
    trainer = _trainer(source, tmp_path)
    best = trainer.recorder.write_dir / "best.weights.h5"
    trainer.on_epoch_end(0, _scores(0.6))
    assert [int(r["epoch"]) for r in _history(trainer)] == [1]
    assert best.is_file() and int(trainer.state.best_epoch.numpy()) == 1
    kept = best.read_bytes()

    trainer.model.layers[0].kernel.assign(trainer.model.layers[0].kernel * 2.0)
    trainer.on_epoch_end(1, _scores(0.5))               # worse: best weights stay
    trainer.on_epoch_end(2, _scores(None))              # undefined AUROC: best weights stay
    rows = _history(trainer)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert rows[1]["val_auroc_left"] == "0.500000" and rows[2]["val_auroc_mean"] == ""
    assert best.read_bytes() == kept and int(trainer.state.best_epoch.numpy()) == 1
    assert trainer.state.position() == (3, 0)           # the epoch is checkpointed as done
    assert trainer.state.latest() is not None

    trainer.on_epoch_end(3, _scores(0.7))               # better: best weights replaced
    assert best.read_bytes() != kept and int(trainer.state.best_epoch.numpy()) == 4
    assert float(trainer.state.best.numpy()) == pytest.approx(0.7)
    trainer.close()


def test_fit_returns_the_model_and_the_metrics(source, tmp_path):
    cfg = TrainConfig.coerce({"model": "tiny", "dataset": "arrays", "epochs": 1, "batch_size": 8,
                              "export": False, "verbose": 0}).validate()
    model, metrics = fit(cfg, source, strategy=tf.distribute.get_strategy(),
                         run_dir=tmp_path / "run", model_fn=tiny_model)
    assert isinstance(model, keras.Model) and "_model" not in metrics
    assert metrics["weights_sha256"] == weights_digest(model)
    assert (tmp_path / "run" / "metrics.json").is_file()


def _missed(model, found):
    """BN layers' moving means among the model's variables that ``found`` does not hold."""
    means = {id(v) for v in model.variables if v.name == "moving_mean"}
    return len(means - {id(layer.moving_mean) for layer in found}), len(means)


def test_batchnorm_layers_finds_every_bn_layer_of_a_registered_model():
    model = zoo.get_model("rensenet_small", input_shape=(64, 64, 1))
    found = batchnorm_layers(model)
    missed, total = _missed(model, found)
    assert total > 1 and missed == 0, (
        f"batchnorm_layers missed {missed} of the {total} BatchNormalization layers of "
        f"rensenet_small under Keras {keras.__version__}: the private Layer._flatten_layers "
        "it relies on has changed; update zoo.training.batchnorm.batchnorm_layers.")
    assert len({id(layer) for layer in found}) == len(found) == total


class _WithBatchNorm(keras.layers.Layer):
    """A custom layer holding a BN sublayer, as the zoo's paper blocks do."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = keras.layers.BatchNormalization(name="block_bn")

    def build(self, input_shape):
        self.bn.build(input_shape)

    def call(self, x, training=None):
        return self.bn(x, training=training)


def test_batchnorm_layers_finds_bn_layers_in_nested_models_and_custom_layers():
    inner = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 1),
                              keras.layers.BatchNormalization(name="inner_bn")], name="inner")
    block = _WithBatchNorm(name="block")
    outer_bn = keras.layers.BatchNormalization(name="outer_bn")
    x = keras.Input((8, 8, 2))
    model = keras.Model(x, outer_bn(block(inner(x))))
    found = batchnorm_layers(model)
    assert {id(layer) for layer in found} == {id(inner.layers[-1]), id(block.bn), id(outer_bn)}
    assert len(found) == 3


def test_batchnorm_layers_says_what_to_do_when_keras_drops_its_private_walk():
    with pytest.raises(RuntimeError, match=r"no longer has the private Layer._flatten_layers.*"
                                           r"--bn-calibration-batches 0"):
        batchnorm_layers(object())


def test_with_the_weight_average_the_final_model_is_the_one_evaluated(source, tmp_path, monkeypatch):
    """finish() with --ema: the model it leaves (and the digest it records) holds the averaged
    weights with the batch-norm statistics recalibrated for them, i.e. what its evaluation saw."""
    seen = []
    real = Trainer._evaluate

    def recording(self):
        scores = real(self)
        seen.append([np.array(w) for w in self.model.get_weights()])
        return scores

    monkeypatch.setattr(Trainer, "_evaluate", recording)
    trainer = _trainer(source, tmp_path, ema=1.0)
    epoch0, _ = trainer.resume()
    iterator = trainer.begin_epoch(epoch0)
    for step in range(trainer.steps):
        trainer.on_step_end(epoch0, step, trainer.train_step(iterator))
    metrics = trainer.finish()
    for got, want in zip(trainer.model.get_weights(), seen[-1]):
        np.testing.assert_array_equal(got, want)
    assert metrics["weights_sha256"] == weights_digest(trainer.model)
    trainer.close()
