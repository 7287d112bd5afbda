"""The custom loop in-process, on arrays and a tiny model: outputs of a run and its options."""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.training import run
from zoo.training.data import ArraySource

LABELS = ("left", "top")


def _arrays(n, seed):
    """Label k brightens one half of the image: easy to learn, so AUROC must get high."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=(n, 2)).astype("float32")
    x = rng.normal(0.3, 0.08, size=(n, 32, 32, 1)).astype("float32")
    x[:, :, :16] += 0.25 * y[:, 0, None, None, None]
    x[:, :16] += 0.25 * y[:, 1, None, None, None]
    return np.clip(x, 0, 1), y


@pytest.fixture(scope="module")
def source():
    return ArraySource({"train": _arrays(96, 0), "val": _arrays(48, 1)}, labels=LABELS,
                       task="multi-label")


def tiny_model(input_shape, num_classes, activation):
    return keras.Sequential([
        keras.Input(input_shape, name="image"),
        keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv"),
        keras.layers.BatchNormalization(momentum=0.5, name="bn"),
        keras.layers.ReLU(),
        keras.layers.Dropout(0.1),
        keras.layers.AveragePooling2D(8),          # 2x2 cells: keeps which half is bright
        keras.layers.Flatten(),
        keras.layers.Dense(num_classes, activation=activation, dtype="float32", name="predictions"),
    ], name="tiny")


def _config(tmp_path, **over):
    cfg = {"model": "tiny", "dataset": "arrays", "epochs": 4, "batch_size": 16, "lr": 0.05,
           "output_dir": str(tmp_path / "run"), "export": False, "verbose": 0, "seed": 1}
    cfg.update(over)
    return cfg


def _scalars(logdir):
    tags = {}
    for path in tf.io.gfile.glob(f"{logdir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    return tags


def test_run_writes_history_metrics_logs_and_best_weights(source, tmp_path):
    metrics = run(_config(tmp_path), source=source, model_fn=tiny_model)
    run_dir = tmp_path / "run"
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "val_loss", "val_auroc_mean", "val_auroc_left", "val_auroc_top",
            "images_per_sec"} <= set(rows[0])
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["val_auroc"] == metrics["val_auroc"]
    assert set(saved["val_auroc"]) == set(LABELS)
    assert saved["val_auroc_mean"] > 0.9, saved          # learnt the two halves
    assert saved["steps_per_epoch"] == 96 // 16
    assert saved["best"]["epoch"] in (1, 2, 3, 4)
    assert saved["best"]["auroc_mean"] == pytest.approx(
        max(float(r["val_auroc_mean"]) for r in rows), abs=1e-6)
    # TensorBoard scalars, readable without the tensorboard package
    train = _scalars(run_dir / "logs" / "train")
    val = _scalars(run_dir / "logs" / "val")
    assert {"loss", "learning_rate", "images_per_sec", "epoch_loss"} <= set(train)
    assert [s for s, _ in val["auroc_mean"]] == [1, 2, 3, 4]
    assert val["auroc/left"][-1][1] == pytest.approx(metrics["final"]["auroc"]["left"], abs=1e-5)
    # the best weights and the saved model (holding the best weights) load back
    best = tiny_model((32, 32, 1), 2, "sigmoid")
    best.load_weights(run_dir / "best.weights.h5")
    final = keras.saving.load_model(run_dir / "model.keras")
    x = source.arrays["val"][0][:4]
    np.testing.assert_allclose(final.predict(x, verbose=0), best.predict(x, verbose=0), atol=1e-6)
    assert (run_dir / "config.yaml").is_file()
    # running the finished command again resumes at the end and trains nothing more
    again = run(_config(tmp_path), source=source, model_fn=tiny_model)
    assert again["weights_sha256"] == metrics["weights_sha256"]
    assert again["val_auroc"] == metrics["val_auroc"]


def test_focal_balanced_smoothing_and_mixed_precision_train(source, tmp_path):
    metrics = run(_config(tmp_path, epochs=2, loss="focal", class_weights="balanced",
                          label_smoothing=0.1, mixed_precision=True, schedule="step",
                          optimizer="sgd", lr=0.05, augment=True),
                  source=source, model_fn=tiny_model)
    assert len(metrics["class_weights"]) == 2
    assert metrics["precision"] == "mixed_bfloat16"      # CPU: bfloat16 compute
    assert keras.mixed_precision.global_policy().name == "float32"   # restored afterwards
    with open(tmp_path / "run" / "history.csv") as f:
        losses = [float(r["train_loss"]) for r in csv.DictReader(f)]
    assert np.all(np.isfinite(losses)) and losses[1] < losses[0]


def test_changed_settings_refuse_to_resume_an_existing_run(source, tmp_path):
    run(_config(tmp_path, epochs=1), source=source, model_fn=tiny_model)
    with pytest.raises(ValueError, match="different lr; pass another --output-dir, or --fresh"):
        run(_config(tmp_path, epochs=1, lr=0.5), source=source, model_fn=tiny_model)
    fresh = run(_config(tmp_path, epochs=1, lr=0.5, fresh=True), source=source, model_fn=tiny_model)
    assert fresh["epochs"] == 1


def test_batch_larger_than_the_training_split_is_a_clear_error(source, tmp_path):
    with pytest.raises(ValueError, match="fewer than one global batch of 128; lower --batch-size"):
        run(_config(tmp_path, batch_size=128), source=source, model_fn=tiny_model)
