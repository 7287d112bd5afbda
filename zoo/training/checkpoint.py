"""Resumable training state: model and optimizer variables plus the loop's counters.

The state is a ``tf.train.Checkpoint`` of

* every model variable (``model.variables``: weights, batch-norm statistics and the dropout
  seed-generator state, so a resumed run draws the same dropout masks),
* every optimizer variable (moments, the iteration counter that drives the LR schedule, the
  loss scale under mixed precision),
* ``epoch`` (the epoch in progress), ``step`` (batches of it already consumed), ``loss_sum``
  (the epoch's running loss, so history.csv is the same after a resume) and ``best`` (the best
  validation AUROC so far, with ``best_epoch``). ``epoch`` and ``best_epoch`` are also early
  stopping's patience state (:meth:`TrainState.epochs_since_best`), so a resumed run stops
  where an uninterrupted one does.

Saved through a ``tf.train.CheckpointManager`` at every epoch end and every
``checkpoint_steps`` steps. In a multi-worker run every worker calls :meth:`save` (saving may
synchronise), but only the chief writes into the run directory; the others write to a private
temporary directory that is deleted straight away. Every worker restores from the chief's
directory (a shared filesystem, as in any multi-worker TensorFlow setup).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf

from zoo.training.strategy import is_chief, worker_id

__all__ = ["CheckpointError", "TrainState"]


class CheckpointError(ValueError):
    """A checkpoint could not be written (disk full, folder gone); the previous one is intact.

    A ValueError so that train.py reports it as one sentence (exit 2), like other errors a
    user can fix.
    """


class TrainState:
    def __init__(self, model, optimizer, directory, *, strategy, max_to_keep=2):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_sum")
        self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best")
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
        self.checkpoint = tf.train.Checkpoint(
            model=list(model.variables), optimizer=list(optimizer.variables),
            epoch=self.epoch, step=self.step, loss_sum=self.loss_sum, best=self.best,
            best_epoch=self.best_epoch,
        )
        self.directory = os.fspath(directory)
        self.strategy = strategy
        self.chief = is_chief(strategy)
        self.max_to_keep = max_to_keep
        if self.chief:
            self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=max_to_keep)

    def latest(self) -> str | None:
        return tf.train.latest_checkpoint(self.directory)

    def restore(self) -> bool:
        """Restore the chief's latest checkpoint if there is one; True when it did."""
        path = self.latest()
        if path is None:
            return False
        self.checkpoint.restore(path).assert_existing_objects_matched()
        return True

    def save(self) -> None:
        if self.chief:
            try:
                self.manager.save(checkpoint_number=None)
            except (OSError, tf.errors.OpError) as err:
                # the manager names a checkpoint in its state file only once it is complete,
                # so the last one listed there is still whole
                reason = getattr(err, "strerror", None) or str(err).rsplit(";", 1)[-1].split("[")[0]
                previous = self.latest()
                kept = (f"the previous checkpoint {previous} is intact; free space and run the same "
                        "command to resume from it") if previous else "no earlier checkpoint exists"
                raise CheckpointError(
                    f"Could not write a checkpoint into {self.directory} ({reason.strip() or type(err).__name__}); "
                    f"{kept}."
                ) from None
            return
        tmp = tempfile.mkdtemp(prefix=f"medzoo-ckpt-{worker_id(self.strategy)}-")
        try:
            tf.train.CheckpointManager(self.checkpoint, tmp, max_to_keep=1).save()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def epochs_since_best(self) -> int:
        """Completed epochs since the best one; all completed epochs while no epoch has had a
        defined score (``best_epoch`` is -1 then)."""
        return int(self.epoch.numpy()) - max(int(self.best_epoch.numpy()), 0)

    def position(self) -> tuple[int, int]:
        return int(self.epoch.numpy()), int(self.step.numpy())
