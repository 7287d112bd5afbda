"""The one training loop, for every strategy (one device, MirroredStrategy, multi-worker).

Keras ``fit`` does not run under MultiWorkerMirroredStrategy in Keras 3 (keras-team/keras#20585),
so this is a custom loop: ``strategy.run`` inside a ``tf.function`` train step, batches from
``strategy.distribute_datasets_from_function``, the loss summed over each replica's examples and
divided by the *global* batch, so every strategy computes the same update.

Per epoch ``e`` the training stream is a function of ``(seed, e)`` only; a run resumed at step
``s`` of epoch ``e`` rebuilds that stream and skips its first ``s`` batches, which is what makes
a killed-and-resumed run end where an uninterrupted run ends.

Augmentation (``--augment-on device``, the default) runs inside the replicated step, on the
device that trains: the input pipeline only reads, decodes and batches, and tags each batch with
``[epoch seed, batch index]`` (its position in the pipeline's stream, counted before a resumed
epoch skips batches). The step augments with exactly the seed and index the tf.data map uses on
the CPU path (``--augment-on cpu``), so both paths, and a resumed run, see the same batches.
MixUp / CutMix (``--mixup``, ``--cutmix``) run in the step on either path, after augmentation,
seeded by the same tag, so they too are a function of (seed, epoch, batch index).

Early stopping (``--early-stop PATIENCE``): after each epoch the run stops when the scored
split's mean AUROC (the score that picks best.weights.h5) has not improved for PATIENCE epochs;
``--epochs`` stays the ceiling. The decision reads only the checkpointed state (completed
epochs and the best epoch), so a run resumed inside a patience window stops at the epoch an
uninterrupted run stops at, and every worker of a cluster takes it together. The exported model
holds the best epoch's weights, early stop or not.

Weight averaging (``--ema EPOCHS``, :mod:`zoo.training.ema`): each step also moves an
exponential moving average of the weights. Every evaluation, best.weights.h5 and the final
model are the averaged weights; the optimizer keeps stepping the raw ones.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipelines.augment import build_mix, epoch_seed
from zoo.models.medical import describe_line
from zoo.training.batchnorm import BatchNormCalibrator
from zoo.training.build import (
    OptimizerVariables,
    build_augmenter,
    build_backbone_optimizer,
    build_loss,
    build_model,
    build_optimizer,
    build_weight_average,
    class_weights_for,
    split_backbone,
    steps_per_epoch,
)
from zoo.training.checkpoint import TrainState
from zoo.training.config import TrainConfig, resolve_switch
from zoo.training.data import DataSource
from zoo.training.metrics import format_auroc_table, score, weights_digest
from zoo.training.recorder import Recorder
from zoo.training.strategy import (
    PEER_ERRORS,
    cluster_error,
    has_gpu,
    is_chief,
    strategy_name,
    worker_id,
)

__all__ = ["STILL_IMPROVING_EPOCHS", "Trainer", "fit"]

# a run that reaches --epochs with its best epoch among the last 1 + this many epochs is
# "still improving": more epochs would probably have helped
STILL_IMPROVING_EPOCHS = 2
# MixUp / CutMix draw from the batch's epoch seed plus this, apart from the augmentation's draws
MIX_SEED_OFFSET = 104_729


def log_line(chief: bool, strategy, message: str) -> None:
    """Print ``message``; a worker other than the chief prefixes its id."""
    if chief:
        print(message, flush=True)
    else:
        print(f"[{worker_id(strategy)}] {message}", flush=True)


class Trainer:
    """One training run: the model, optimizer, loss and checkpoint state, and what a step, an
    evaluation and an epoch end do. :func:`fit` is the loop that calls them.

    The parts are built by :mod:`zoo.training.build`; what the run leaves behind (history.csv,
    logs/, best.weights.h5, metrics.json) is written by its :class:`Recorder`. Every worker
    builds a Trainer and runs every method (collective ops need all of them); only the chief's
    recorder writes into ``run_dir``.
    """

    def __init__(self, cfg: TrainConfig, source: DataSource, *, strategy, run_dir,
                 model_fn: Callable, weights: dict | None = None):
        self.cfg, self.source, self.strategy = cfg, source, strategy
        self.weights = weights  # what the model starts from (zoo.models.medical.describe)
        self.chief = is_chief(strategy)
        self.run_dir = Path(run_dir)
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = cfg.batch_size
        self.steps = steps_per_epoch(cfg, source, self.replicas)
        self.labels, self.split = source.labels, cfg.eval_split
        self.mixed = resolve_switch(cfg.mixed_precision, has_gpu())
        self.jit = resolve_switch(cfg.jit_compile, has_gpu())
        self.class_weights = class_weights_for(cfg, source)
        self.loss_fn = build_loss(cfg, source, self.class_weights)
        self.model = build_model(cfg, source, strategy, model_fn, mixed=self.mixed)
        self.head_vars, self.backbone_vars = split_backbone(cfg, self.model, mixed=self.mixed,
                                                            log=self.log)
        self.schedule, self.optimizer = build_optimizer(cfg, self.steps, strategy, self.head_vars,
                                                        mixed=self.mixed)
        self.backbone_optimizer = build_backbone_optimizer(cfg, self.steps, strategy,
                                                           self.backbone_vars, log=self.log)
        self.ema = build_weight_average(cfg, self.model, self.steps, strategy)
        optimizers = OptimizerVariables([self.optimizer, self.backbone_optimizer, self.ema])
        self.state = TrainState(self.model, optimizers, self.run_dir / "checkpoints",
                                strategy=strategy, max_to_keep=cfg.keep_checkpoints)
        self.calibrate = BatchNormCalibrator(self.model) if cfg.bn_calibration_batches else None
        self.augmenter = build_augmenter(cfg)
        self.mixer = build_mix(mixup=float(cfg.mixup or 0), cutmix=float(cfg.cutmix or 0))
        self._loss_and_grads = (tf.function(self._forward_backward, jit_compile=True,
                                            reduce_retracing=True)
                                if self.jit else self._forward_backward)
        self.recorder = Recorder(self.run_dir, self.labels, chief=self.chief, strategy=strategy)
        self.patience = int(cfg.early_stop or 0)
        self.stopped_early = False
        self.rate = 0.0            # images/s of the latest epoch, so far
        self.epoch_seconds = 0.0   # training time of the latest epoch, so far
        self._t_start = self._t_epoch = time.perf_counter()
        self._bar = None

    def log(self, message: str) -> None:
        log_line(self.chief, self.strategy, message)

    def resume(self) -> tuple[int, int]:
        """Restore the latest checkpoint if there is one (history.csv is cut back to the epochs it
        completed; a run without one starts a new history), announce the run, and return the
        ``(epoch, step)`` to start from."""
        cfg, labels = self.cfg, self.labels
        if self.state.restore():
            epoch0, step0 = self.state.position()
            self.log(f"Resuming from {self.state.latest()}: epoch {epoch0 + 1}/{cfg.epochs}, "
                     f"step {step0}/{self.steps}.")
            self.recorder.keep_history(epoch0)  # rows of epochs the checkpoint has not completed go
        else:
            self.recorder.reset_history()
        self.log(f"Training {self.model.name} ({self.model.count_params():,} parameters) on "
                 f"{self.source.input_shape} inputs, {len(labels)} labels ({self.source.activation}); "
                 f"strategy {strategy_name(self.strategy)} with {self.replicas} replica(s), global "
                 f"batch {self.global_batch}, {self.steps} steps/epoch.")
        if self.weights is not None:
            self.log(describe_line(self.weights))
        if cfg.origins.get("model_kwargs"):  # architecture settings the recipe added
            shown = ", ".join(f"{k}={v}" for k, v in cfg.model_kwargs.items())
            self.log(f"Architecture {shown} ({cfg.origins['model_kwargs']}; --model-kwargs overrides).")
        where = "off" if self.cfg.augment in (False, None, "none") else (
            "on the device" if self.augmenter is not None else "in tf.data (CPU)")
        self.log(f"Precision {self.model.dtype_policy.name}, XLA {'on' if self.jit else 'off'}, "
                 f"augmentation {where}.")
        if self.class_weights is not None:
            self.log("Class weights: " + ", ".join(f"{n}={w:.3g}" for n, w in zip(labels, self.class_weights)))
        self._t_start = time.perf_counter()
        epoch0 = self.state.position()[0]
        self.stopped_early = epoch0 < cfg.epochs and self.patience_exhausted()
        if self.stopped_early:
            self.log(f"This run stopped early after epoch {epoch0} (--early-stop {self.patience}); "
                     "nothing more to train.")
        return self.state.position()

    def begin_epoch(self, epoch: int, skip: int = 0):
        """An iterator over the epoch's global batches, its first ``skip`` batches left out (the
        stream is a function of seed and epoch only, so a resumed epoch continues exactly)."""
        cfg, steps, global_batch = self.cfg, self.steps, self.global_batch

        on_device = self.augmenter is not None
        tagged = on_device or self.mixer is not None
        aug_seed = epoch_seed(cfg.seed, epoch)

        def dataset_fn(ctx):
            per_replica = ctx.get_per_replica_batch_size(global_batch)
            local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            ds = self.source.train_dataset(epoch=epoch, batch_size=per_replica, seed=cfg.seed,
                                           input_context=ctx,
                                           augment=False if on_device else cfg.augment)
            if tagged:  # tag each batch with [epoch seed, index]: counted before the skip
                ds = ds.enumerate().map(
                    lambda i, batch: (batch[0], batch[1],
                                      tf.stack([tf.constant(aug_seed, tf.int64), i])))
            return ds.skip(skip * local).take((steps - skip) * local)

        iterator = iter(self.strategy.distribute_datasets_from_function(dataset_fn))
        if self.chief and cfg.verbose:
            print(f"Epoch {epoch + 1}/{cfg.epochs}", flush=True)
        self._bar = keras.utils.Progbar(steps, verbose=cfg.verbose if self.chief else 0,
                                        stateful_metrics=["loss", "img/s", "lr"], unit_name="step")
        if skip:
            self._bar.update(skip)
        self._t_epoch, self._done, self.epoch_seconds = time.perf_counter(), 0, 0.0
        return iterator

    @tf.function
    def train_step(self, iterator):
        """One optimisation step on the next global batch, every replica on its share; returns
        the loss summed over replicas (each replica's loss is already divided by the global
        batch, so the sum is the global mean)."""
        batch = next(iterator)
        per_replica = self.strategy.run(self._replica_step, args=tuple(batch))
        if self.ema is not None:
            self.ema.update()
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def augment(self, x, key):
        """The device path's augmentation of one replica's batch ``x``; ``key`` is the batch's
        ``[epoch seed, batch index]`` tag (see :meth:`begin_epoch`)."""
        return self.augmenter(x, training=True, batch_index=key[1], seed=key[0])

    def _replica_step(self, x, y, key=None):
        if key is not None and self.augmenter is not None:
            x = self.augment(x, key)
        if key is not None and self.mixer is not None:  # MixUp / CutMix, after augmentation
            x, y = self.mixer(key[1], x, y, seed=key[0] + MIX_SEED_OFFSET)
        loss, grads = self._loss_and_grads(x, y)
        n = len(self.head_vars)
        self.optimizer.apply_gradients(zip(grads[:n], self.head_vars))
        if self.backbone_optimizer is not None:  # --backbone-lr-mult: its own learning rate
            self.backbone_optimizer.apply_gradients(zip(grads[n:], self.backbone_vars))
        return loss

    def _forward_backward(self, x, y):
        """The replica's loss and gradients: XLA-compiled with ``--jit-compile`` on (the
        augmentation before and the cross-replica gradient sum after stay outside XLA)."""
        model, optimizer = self.model, self.optimizer
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            loss = tf.reduce_sum(self.loss_fn(y, probs)) / self.global_batch
            if model.losses:
                loss += tf.add_n(model.losses) / self.replicas
            scaled = optimizer.scale_loss(loss)
        return loss, tape.gradient(scaled, self.head_vars + self.backbone_vars)

    def on_step_end(self, epoch: int, step: int, loss) -> None:
        """Check the loss, count it into the checkpointed epoch state, show progress, log
        TensorBoard scalars every 10 steps, and save a mid-epoch checkpoint when due."""
        loss = float(loss)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"The training loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                "lower --lr or check the data."
            )
        state, steps = self.state, self.steps
        state.loss_sum.assign_add(loss)
        state.step.assign(step + 1)
        self._done += 1
        self.rate = self._done * self.global_batch / max(time.perf_counter() - self._t_epoch, 1e-9)
        lr = self.current_lr()
        self._bar.update(step + 1, [("loss", float(state.loss_sum.numpy()) / (step + 1)),
                                    ("img/s", self.rate), ("lr", lr)])
        global_step = int(self.optimizer.iterations.numpy())
        if global_step % 10 == 0 or step + 1 == steps:
            self.recorder.step_scalars(global_step, loss=loss, lr=lr, rate=self.rate)
        if (step + 1) % self.cfg.checkpoint_steps == 0 and step + 1 < steps:
            state.save()
        self.epoch_seconds = time.perf_counter() - self._t_epoch

    @tf.function(reduce_retracing=True)
    def eval_step(self, x):
        """The model's predictions for one batch, in inference mode."""
        return self.model(x, training=False)

    def predict(self, split: str):
        """``(y_true, y_prob)`` as float32 arrays over ``split``, in inference mode."""
        ys, ps = [], []
        for batch in self.source.eval_dataset(split, batch_size=max(self.global_batch, 64)):
            ps.append(np.asarray(self.eval_step(batch[0]), dtype=np.float32))
            ys.append(np.asarray(batch[1], dtype=np.float32))
        return np.concatenate(ys), np.concatenate(ps)

    def evaluate(self) -> dict:
        """Scores on the evaluation split: ``{"loss", "auroc_mean", "auroc": {label: value},
        "examples"}`` (an AUROC is None when the split has one class of that label), of the
        averaged weights under ``--ema``. Batch-norm statistics are first recalibrated on
        training batches when the config asks for it."""
        with self.averaged():
            return self._evaluate()

    def _evaluate(self) -> dict:
        if self.cfg.bn_calibration_batches:
            # shuffled (and source- or class-balanced where the run samples so), unsharded and
            # unaugmented: the same batches on every worker. File order would calibrate on the
            # first few hundred rows, which in a corpus or a class-sorted folder is one class.
            data = self.source.train_dataset(epoch=int(self.state.epoch.numpy()), seed=self.cfg.seed + 1,
                                             batch_size=max(self.global_batch, 32))
            self.calibrate(data, self.cfg.bn_calibration_batches)
        y, p = self.predict(self.split)
        val_loss = float(np.mean(self.loss_fn(tf.constant(y), tf.constant(p)).numpy()))
        return score(self.labels, y, p, val_loss, groups=getattr(self.source, "label_groups", None))

    def averaged(self):
        """A block in which the model holds the weights that are evaluated and kept: the
        moving average under ``--ema`` (what the block does to them, batch-norm
        recalibration, stays in the average), else the model's own."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def on_epoch_end(self, epoch: int, scores: dict) -> None:
        """Log the epoch, write its TensorBoard scalars and history.csv row, keep the weights
        (the averaged ones under ``--ema``) when the mean validation AUROC beats the best so
        far, and checkpoint the epoch."""
        state = self.state
        train_loss = float(state.loss_sum.numpy()) / self.steps
        mean = scores["auroc_mean"]
        self.log(f"epoch {epoch + 1}: train loss {train_loss:.4f}, {self.split} loss "
                 f"{scores['loss']:.4f}, {self.split} AUROC {'n/a' if mean is None else f'{mean:.4f}'}, "
                 f"{self.rate:.1f} images/s")
        self.recorder.epoch_scalars(epoch, train_loss, scores)
        if mean is not None and mean > float(state.best.numpy()):
            state.best.assign(mean)
            state.best_epoch.assign(epoch + 1)
            with self.averaged():
                self.recorder.save_best(self.model)
        state.epoch.assign(epoch + 1)
        state.step.assign(0)
        state.loss_sum.assign(0.0)
        self.stopped_early = epoch + 1 < self.cfg.epochs and self.patience_exhausted()
        last = self.stopped_early or epoch + 1 >= self.cfg.epochs
        self.recorder.history_row(epoch, train_loss, scores, lr=self.current_lr(),
                                  seconds=self.epoch_seconds, rate=self.rate,
                                  stopping=self.ending() if last else self.patience_state())
        if last:
            self.announce_ending()
        state.save()

    def patience_exhausted(self) -> bool:
        """True when the scored split's mean AUROC has not improved for ``--early-stop`` epochs.

        A function of the checkpointed state only (completed epochs, best epoch), so a resumed
        run decides as an uninterrupted one. Every worker computes it and the replicas sum
        their votes: one that stops stops all, and no worker is left waiting in a collective.
        """
        if self.patience <= 0:
            return False
        vote = tf.constant(float(self.state.epochs_since_best() >= self.patience))
        return float(self._sum_over_replicas(vote)) > 0

    @tf.function
    def _sum_over_replicas(self, value):
        per_replica = self.strategy.run(lambda: tf.identity(value))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def patience_state(self) -> dict:
        """The best epoch so far (None while no epoch had a defined score) and the completed
        epochs since it, as history.csv records them each epoch."""
        best = int(self.state.best_epoch.numpy())
        return {"best_epoch": best if best > 0 else None,
                "epochs_since_best": self.state.epochs_since_best()}

    def ending(self) -> dict:
        """How the run ended, as history.csv's last row and metrics.json record it.

        ``stopped_early``: early stopping ended it before ``--epochs``. ``epochs_run``: the
        completed epochs. ``best_epoch``: the epoch of best.weights.h5 (None when no epoch had
        a defined score). ``still_improving``: the run reached the ``--epochs`` ceiling (did not
        stop early) with its best epoch the last one or one of the
        :data:`STILL_IMPROVING_EPOCHS` before it, i.e. ``epochs_run - best_epoch <= 2``: the
        validation score was still rising, and more epochs would probably have helped.
        """
        facts = self.patience_state()
        epochs_run = int(self.state.epoch.numpy())
        best = facts["best_epoch"]
        facts.update(
            epochs_run=epochs_run,
            stopped_early=bool(self.stopped_early),
            still_improving=(not self.stopped_early and epochs_run >= self.cfg.epochs
                             and best is not None
                             and epochs_run - best <= STILL_IMPROVING_EPOCHS),
        )
        return facts

    def announce_ending(self) -> None:
        """One clear console line when the run stopped early, or reached the ceiling while the
        validation score was still improving."""
        end, split = self.ending(), self.split
        if end["stopped_early"]:
            self.log(f"Early stopping after epoch {end['epochs_run']} of at most {self.cfg.epochs}: "
                     f"no better {split} AUROC than epoch {end['best_epoch']}'s "
                     f"{float(self.state.best.numpy()):.4f} for {self.patience} epochs "
                     f"(--early-stop {self.patience}); the best epoch's weights are kept.")
        elif end["still_improving"]:
            self.log(f"Reached --epochs {self.cfg.epochs} with the {split} AUROC still improving "
                     f"(best at epoch {end['best_epoch']} of {end['epochs_run']}); more epochs "
                     "would probably help.")

    def current_lr(self) -> float:
        """The head optimizer's learning rate at its current iteration."""
        return float(self.schedule(self.optimizer.iterations))

    def finish(self) -> dict:
        """Evaluate the final weights and return the run's metrics (the chief writes them to
        metrics.json): final and best-epoch AUROCs, sizes, throughput, the weights digest."""
        cfg, state, labels = self.cfg, self.state, self.labels
        final = self.evaluate()   # under --ema: the average, batch norm recalibrated for it
        if self.ema is not None:  # the run's final model is that evaluated average
            self.ema.assign_to_model()
        digest = weights_digest(self.model)
        best_epoch = int(state.best_epoch.numpy())
        metrics = {
            "model": cfg.model,
            "labels": list(labels),
            "eval_split": self.split,
            "epochs": cfg.epochs,
            "steps_per_epoch": self.steps,
            "global_batch_size": self.global_batch,
            "replicas": self.replicas,
            "strategy": strategy_name(self.strategy),
            "final": final,
            "best": {
                "epoch": best_epoch if best_epoch > 0 else None,
                "auroc_mean": float(state.best.numpy()) if best_epoch > 0 else None,
                "auroc": self.recorder.epoch_auroc(self.recorder.history(), best_epoch),
            },
            "early_stop": self.patience,
            **self.ending(),
            "val_auroc": final["auroc"],
            "val_auroc_mean": final["auroc_mean"],
            "train_images_per_sec": round(self.rate, 2),
            "train_seconds": round(time.perf_counter() - self._t_start, 2),
            "weights_sha256": digest,
            "class_weights": self.class_weights,
            "precision": self.model.dtype_policy.name,
            "jit_compile": self.jit,
            "augment_on": self.cfg.augment_on,
            "weights": self.weights,
        }
        self.log(format_auroc_table(final, self.split))
        self.log(f"final weights sha256 {digest}")
        self.recorder.write_metrics(metrics)
        return metrics

    def close(self) -> None:
        """Close the recorder (a non-chief worker's private folder goes with it)."""
        self.recorder.close()


def fit(cfg: TrainConfig, source: DataSource, *, strategy, run_dir, model_fn: Callable,
        weights: dict | None = None):
    """Train ``model_fn(input_shape, num_classes, activation)`` on ``source``; returns
    ``(model, metrics)``. ``weights`` describes what the model starts from (a
    :func:`zoo.models.medical.describe` record): logged when the run opens, and recorded in
    metrics.json as ``weights``.

    Writes (chief only) into ``run_dir``: checkpoints/, logs/ (TensorBoard), history.csv,
    best.weights.h5 and metrics.json. The model holds the final weights (best.weights.h5 the
    best ones, which ``zoo.training.run`` saves and exports). Ends at ``--epochs``, or earlier
    when ``--early-stop`` runs out of patience.
    """
    trainer = Trainer(cfg, source, strategy=strategy, run_dir=run_dir, model_fn=model_fn,
                      weights=weights)
    try:
        epoch0, step0 = trainer.resume()
        for epoch in range(epoch0, cfg.epochs):
            if trainer.stopped_early:  # by resume(), or by the previous epoch's end
                break
            skip = step0 if epoch == epoch0 else 0
            iterator = trainer.begin_epoch(epoch, skip)
            for step in range(skip, trainer.steps):
                trainer.on_step_end(epoch, step, trainer.train_step(iterator))
            trainer.on_epoch_end(epoch, trainer.evaluate())
        return trainer.model, trainer.finish()
    except PEER_ERRORS as err:  # a worker died: one sentence, not a collective op's traceback
        lost = cluster_error(strategy, err, trainer.state.latest())
        if lost is None:
            raise
        raise lost from None
    finally:
        trainer.close()
