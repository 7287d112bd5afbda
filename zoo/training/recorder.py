"""What a run leaves behind besides checkpoints: history.csv, TensorBoard logs, the best
weights and metrics.json.

The Trainer decides *what* happened (a step's loss, an epoch's scores, a new best); the
Recorder decides *where it goes*. Every worker of a cluster runs the same code path, so every
worker has a Recorder; only the chief's writes into the run directory, the others write their
TensorBoard events into a private temporary folder that :meth:`Recorder.close` deletes. The
history, the best weights and the metrics file are the chief's alone.

Every file is replaced atomically (``pipelines.fs``), so a run killed at any moment leaves the
previous complete file, never half of one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from pipelines import cells
from pipelines.fs import atomic_path, atomic_write_json
from zoo.training.strategy import worker_id

__all__ = ["Recorder", "history_fields", "read_history", "write_history", "write_scalar"]

BEST_WEIGHTS = "best.weights.h5"
HISTORY = "history.csv"
METRICS = "metrics.json"

# early stopping's columns: the patience state on every row; how the run ended on its last row
STOPPING_FIELDS = ("best_epoch", "epochs_since_best", "stopped_early", "still_improving")

# TensorBoard reads a tensor summary as a scalar when it carries the scalars plugin's metadata
SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def write_scalar(tag: str, value, step: int) -> None:
    """A TensorBoard scalar through the core ``tf.summary.write`` op (no tensorboard package
    needed to write; TensorBoard reads it as a scalar thanks to the plugin metadata)."""
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                     metadata=SCALAR_METADATA)


def history_fields(labels) -> list[str]:
    """history.csv's columns: one AUROC column per label, between the losses and the timing."""
    return (["epoch", "train_loss", "val_loss", "val_auroc_mean"]
            + [f"val_auroc_{name}" for name in labels] + ["lr", "seconds", "images_per_sec"]
            + list(STOPPING_FIELDS))


def read_history(path) -> list[dict]:
    """The rows of history.csv as dicts of strings; [] when there is none yet."""
    if not os.path.exists(path):
        return []
    return cells.read_rows(path)


def write_history(path, fields, rows) -> None:
    cells.write_csv(path, rows, fields)


class Recorder:
    """The run's files, as one worker writes them (see the module docstring)."""

    def __init__(self, run_dir, labels, *, chief: bool, strategy):
        self.chief = chief
        self.labels = tuple(labels)
        self.write_dir = (Path(run_dir) if chief else
                          Path(tempfile.mkdtemp(prefix=f"medzoo-{worker_id(strategy)}-")))
        self.write_dir.mkdir(parents=True, exist_ok=True)
        self.history_path = self.write_dir / HISTORY
        self.best_path = self.write_dir / BEST_WEIGHTS
        self.history_fields = history_fields(self.labels)
        self.train_writer = tf.summary.create_file_writer(os.fspath(self.write_dir / "logs" / "train"))
        self.val_writer = tf.summary.create_file_writer(os.fspath(self.write_dir / "logs" / "val"))

    # ---- history.csv -------------------------------------------------------------------
    def history(self) -> list[dict]:
        """The chief's history rows so far ([] on other workers, which keep none)."""
        return read_history(self.history_path) if self.chief else []

    def keep_history(self, epochs: int) -> None:
        """Cut history.csv back to its first ``epochs`` epochs (a resumed run drops the rows of
        epochs its checkpoint has not completed, written before it was killed)."""
        if self.chief:
            rows = [r for r in read_history(self.history_path) if int(r["epoch"]) <= epochs]
            write_history(self.history_path, self.history_fields, rows)

    def reset_history(self) -> None:
        """A run without a checkpoint starts a new history."""
        if self.chief and self.history_path.exists():
            self.history_path.unlink()

    def history_row(self, epoch: int, train_loss: float, scores: dict, *, lr: float,
                    seconds: float, rate: float, stopping: dict | None = None) -> None:
        """Write epoch ``epoch``'s row (0-based) into history.csv, replacing rows of this epoch
        and later ones. ``stopping`` fills the :data:`STOPPING_FIELDS` it names (None and
        absent ones stay empty; booleans as ``true``/``false``)."""
        if not self.chief:
            return
        mean = scores["auroc_mean"]
        row = {"epoch": epoch + 1, "train_loss": f"{train_loss:.6f}",
               "val_loss": f"{scores['loss']:.6f}",
               "val_auroc_mean": "" if mean is None else f"{mean:.6f}",
               "lr": f"{lr:.6g}", "seconds": f"{seconds:.2f}", "images_per_sec": f"{rate:.1f}"}
        for name, value in scores["auroc"].items():
            row[f"val_auroc_{name}"] = "" if value is None else f"{value:.6f}"
        for key, value in (stopping or {}).items():
            if key in STOPPING_FIELDS:
                row[key] = "" if value is None else str(value).lower()
        rows = [r for r in read_history(self.history_path) if int(r["epoch"]) < epoch + 1]
        write_history(self.history_path, self.history_fields, rows + [row])

    def epoch_auroc(self, history: list[dict], epoch: int) -> dict | None:
        """``{label: AUROC}`` of the 1-based ``epoch`` in ``history``; None without its row."""
        row = next((r for r in history if int(r["epoch"]) == epoch), None)
        if row is None:
            return None
        return {n: (float(row[f"val_auroc_{n}"]) if row[f"val_auroc_{n}"] else None)
                for n in self.labels}

    # ---- TensorBoard -------------------------------------------------------------------
    def step_scalars(self, global_step: int, *, loss: float, lr: float, rate: float) -> None:
        with self.train_writer.as_default():
            write_scalar("loss", loss, step=global_step)
            write_scalar("learning_rate", lr, step=global_step)
            write_scalar("images_per_sec", rate, step=global_step)

    def epoch_scalars(self, epoch: int, train_loss: float, scores: dict) -> None:
        """The epoch's validation scalars (at step ``epoch + 1``) and its training loss."""
        mean = scores["auroc_mean"]
        with self.val_writer.as_default():
            write_scalar("loss", scores["loss"], step=epoch + 1)
            if mean is not None:
                write_scalar("auroc_mean", mean, step=epoch + 1)
            for name, value in scores["auroc"].items():
                if value is not None:
                    write_scalar(f"auroc/{name}", value, step=epoch + 1)
        with self.train_writer.as_default():
            write_scalar("epoch_loss", train_loss, step=epoch + 1)
        self.train_writer.flush()
        self.val_writer.flush()

    # ---- best weights and metrics --------------------------------------------------------
    def save_best(self, model) -> None:
        """Keep ``model``'s weights as the best so far (the chief's best.weights.h5)."""
        if self.chief:
            with atomic_path(self.best_path) as tmp:
                model.save_weights(tmp)

    def write_metrics(self, metrics: dict) -> None:
        if self.chief:
            atomic_write_json(self.write_dir / METRICS, metrics)

    def close(self) -> None:
        """Flush the TensorBoard writers; a non-chief worker deletes its private folder."""
        self.train_writer.close()
        self.val_writer.close()
        if not self.chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)
