"""Early stopping on the scored split's mean AUROC, on arrays and a tiny model, with the scores
scripted per epoch so the stopping epoch is known exactly: where it stops, what history.csv and
metrics.json record, that the saved model holds the best epoch's weights, and that a run killed
inside the patience window resumes to stop at the same epoch."""

import csv
import json

import keras
import numpy as np
import pytest

from tests.helpers import tiny_two_label_source
from zoo.training import run
from zoo.training.trainer import Trainer

LABELS = ("left", "top")
# best at epoch 2; with patience 3, epochs 3, 4 and 5 do not beat it: stop after epoch 5
AUROCS = [0.60, 0.70, 0.65, 0.66, 0.69, 0.95, 0.96, 0.97]


@pytest.fixture(scope="module")
def source():
    return tiny_two_label_source(0, LABELS)


def tiny_model(input_shape, num_classes, activation):
    return keras.Sequential([keras.Input(input_shape, name="image"),
                             keras.layers.Conv2D(2, 3, padding="same", name="conv"),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(num_classes, activation=activation, name="predictions")],
                            name="tiny")


@pytest.fixture()
def scripted(monkeypatch):
    """Trainer.evaluate returns AUROCS[completed epochs] (the final evaluation: the last one)."""
    def evaluate(self):
        mean = AUROCS[min(int(self.state.epoch.numpy()), len(AUROCS) - 1)]
        return {"loss": 0.5, "auroc_mean": mean, "examples": 8, "auroc": dict.fromkeys(LABELS, mean)}

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def _config(tmp_path, **over):
    return {"model": "tiny", "dataset": "arrays", "epochs": 8, "batch_size": 8, "lr": 0.01,
            "steps_per_epoch": 2, "bn_calibration_batches": 0, "export": False, "verbose": 0,
            "output_dir": str(tmp_path / "run"), "early_stop": 3, **over}


def _history(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_stops_after_patience_epochs_without_improvement_and_keeps_the_best_weights(
        source, tmp_path, scripted, capsys):
    metrics = run(_config(tmp_path), source=source, model_fn=tiny_model)
    run_dir = tmp_path / "run"
    rows = _history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [r["epochs_since_best"] for r in rows] == ["0", "0", "1", "2", "3"]
    assert rows[-1]["best_epoch"] == "2" and rows[-1]["stopped_early"] == "true"
    assert rows[-1]["still_improving"] == "false" and rows[0]["stopped_early"] == ""
    saved = json.loads((run_dir / "metrics.json").read_text())
    for facts in (metrics, saved):
        assert (facts["stopped_early"], facts["best_epoch"], facts["epochs_run"]) == (True, 2, 5)
        assert facts["still_improving"] is False and facts["early_stop"] == 3
    assert "Early stopping after epoch 5 of at most 8" in capsys.readouterr().out
    # the saved model holds the best epoch's weights
    best = tiny_model((8, 8, 1), 2, "sigmoid")
    best.load_weights(run_dir / "best.weights.h5")
    final = keras.saving.load_model(run_dir / "model.keras")
    for a, b in zip(final.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the same command again: the run has stopped, nothing more is trained
    again = run(_config(tmp_path), source=source, model_fn=tiny_model)
    assert again["epochs_run"] == 5 and again["weights_sha256"] == metrics["weights_sha256"]
    assert len(_history(run_dir)) == 5


def test_without_early_stop_the_ceiling_is_reached_and_still_improving_is_said(
        source, tmp_path, scripted, capsys):
    metrics = run(_config(tmp_path, early_stop=0), source=source, model_fn=tiny_model)
    assert (metrics["stopped_early"], metrics["epochs_run"], metrics["best_epoch"]) == (False, 8, 8)
    assert metrics["still_improving"] is True
    assert "Reached --epochs 8 with the val AUROC still improving" in capsys.readouterr().out
    assert _history(tmp_path / "run")[-1]["still_improving"] == "true"


class _Killed(Exception):
    pass


def test_a_run_killed_inside_the_patience_window_stops_at_the_same_epoch(
        source, tmp_path, scripted, monkeypatch):
    straight = run(_config(tmp_path / "a"), source=source, model_fn=tiny_model)
    real = Trainer.on_step_end

    def dies_in_epoch_4(self, epoch, step, loss):  # after epoch 3 ended (one epoch into patience)
        real(self, epoch, step, loss)
        if (epoch, step) == (3, 0):
            raise _Killed

    monkeypatch.setattr(Trainer, "on_step_end", dies_in_epoch_4)
    cfg = _config(tmp_path / "b", checkpoint_steps=1)
    with pytest.raises(_Killed):
        run(cfg, source=source, model_fn=tiny_model)
    assert len(_history(tmp_path / "b" / "run")) == 3
    monkeypatch.setattr(Trainer, "on_step_end", real)
    resumed = run(cfg, source=source, model_fn=tiny_model)
    for key in ("stopped_early", "best_epoch", "epochs_run", "still_improving"):
        assert resumed[key] == straight[key], key
    assert [r["epoch"] for r in _history(tmp_path / "b" / "run")] == ["1", "2", "3", "4", "5"]
