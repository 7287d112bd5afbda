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
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from pipelines.fs import atomic_path, atomic_write_json
from pipelines.augment import Augmentation, build_augmentation, epoch_seed
from zoo.training.checkpoint import TrainState
from zoo.training.config import ConfigError, TrainConfig, resolve_switch
from zoo.training.losses import balanced_class_weights, make_loss
from zoo.training.metrics import format_auroc_table, score, weights_digest
from zoo.training.optim import WarmupSchedule, make_optimizer
from zoo.training.strategy import (
    PEER_ERRORS,
    cluster_error,
    is_chief,
    strategy_name,
    worker_id,
)

__all__ = ["Trainer", "fit", "batchnorm_layers"]


def _log(chief, strategy, message):
    if chief:
        print(message, flush=True)
    else:
        print(f"[{worker_id(strategy)}] {message}", flush=True)


def _scalar(tag, value, step):
    """A TensorBoard scalar through the core ``tf.summary.write`` op (no tensorboard package
    needed to write; TensorBoard reads it as a scalar thanks to the plugin metadata)."""
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=_SCALAR_META)


_SCALAR_META = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def _gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def batchnorm_layers(model) -> list:
    """Every ``BatchNormalization`` layer in ``model``, however deep: inside nested models and
    inside custom layers (a RenseBlock's sublayers).

    The one use of a private Keras API in the zoo: ``Layer._flatten_layers``. The public
    ``model.layers`` stops at a functional model's own layers and never enters a custom layer
    (it finds 1 of the 29 BN layers of rensenet_small), and Keras 3 has no public recursive
    walk. tests/training/test_trainer.py checks the result against the model's BN variables,
    so a change in Keras fails there, and here, with a message that says what to do.
    """
    try:
        found = list(model._flatten_layers(include_self=False, recursive=True))
    except (AttributeError, TypeError) as err:
        raise RuntimeError(
            f"Keras {keras.__version__} no longer has the private Layer._flatten_layers("
            f"include_self, recursive) that zoo.training.trainer.batchnorm_layers uses to find "
            f"the BatchNormalization layers to calibrate ({err}); update batchnorm_layers, or "
            "pass --bn-calibration-batches 0 meanwhile."
        ) from err
    return [layer for layer in found if isinstance(layer, keras.layers.BatchNormalization)]


class BatchNormCalibrator:
    """Precise batch-norm statistics: exact averages over training batches, not a lagging EMA.

    With few steps (small datasets, short schedules) and many BN layers, the EMA moving
    statistics (momentum 0.99) lag far behind the weights and inference-mode predictions are
    poor although training-mode ones are good. Before each evaluation we set every moving
    mean/variance to the plain average over ``batches`` training batches (batch i uses momentum
    i/(i+1)), as in "Rethinking 'Batch' in BatchNorm" (Wu and Johnson, 2021). The data is the
    unshuffled, unsharded training split, so every worker computes the same statistics.
    """

    def __init__(self, model):
        self.model = model
        self.layers = batchnorm_layers(model)

        @tf.function(reduce_retracing=True)
        def update(x, momentum):
            saved = [layer.momentum for layer in self.layers]
            for layer in self.layers:  # traced once: momentum is a tensor in the graph
                layer.momentum = momentum
            try:
                self.model(x, training=True)
            finally:
                for layer, value in zip(self.layers, saved):
                    layer.momentum = value

        self._update = update

    def __call__(self, dataset, batches: int) -> int:
        if not self.layers or batches <= 0:
            return 0
        done = 0
        for i, batch in enumerate(dataset.take(batches)):
            self._update(batch[0], tf.constant(i / (i + 1), tf.float32))
            done += 1
        return done


def _history_fields(labels):
    return (["epoch", "train_loss", "val_loss", "val_auroc_mean"]
            + [f"val_auroc_{name}" for name in labels] + ["lr", "seconds", "images_per_sec"])


def _read_history(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_history(path, fields, rows):
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


class _Variables:
    """What the checkpoint needs of the optimizers: their variables, together."""

    def __init__(self, optimizers):
        self.variables = [v for opt in optimizers for v in opt.variables]


class Trainer:
    """One training run: the model, optimizer, loss and checkpoint state, and what a step, an
    evaluation and an epoch end do. :func:`fit` is the loop that calls them.

    Every worker builds a Trainer and runs every method (collective ops need all of them); only
    the chief writes into ``run_dir`` (history.csv, logs/, best.weights.h5, metrics.json), the
    others write the same files into a private temporary folder that :meth:`close` deletes.
    """

    def __init__(self, cfg: TrainConfig, source, *, strategy, run_dir, model_fn):
        self.cfg, self.source, self.strategy = cfg, source, strategy
        self.chief = is_chief(strategy)
        self.run_dir = Path(run_dir)
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = cfg.batch_size
        self.steps = self._steps_per_epoch()
        self.labels, self.split = source.labels, cfg.eval_split
        self.class_weights = cfg.class_weights
        self.mixed = resolve_switch(cfg.mixed_precision, _gpu())
        self.jit = resolve_switch(cfg.jit_compile, _gpu())
        if self.class_weights == "balanced":
            self.class_weights = balanced_class_weights(source.split_labels("train"), source.activation)
        self.loss_fn = make_loss(cfg.loss, activation=source.activation, num_classes=len(self.labels),
                                 class_weights=self.class_weights, label_smoothing=cfg.label_smoothing,
                                 gamma=cfg.focal_gamma, groups=getattr(source, "label_groups", None))
        self.model = self._build_model(model_fn)
        self.head_vars, self.backbone_vars = self._split_backbone()
        self.schedule, self.optimizer = self._build_optimizer()
        self.backbone_optimizer = self._build_backbone_optimizer()
        optimizers = [self.optimizer] + ([self.backbone_optimizer] if self.backbone_optimizer else [])
        self.state = TrainState(self.model, _Variables(optimizers), self.run_dir / "checkpoints",
                                strategy=strategy, max_to_keep=cfg.keep_checkpoints)
        self.calibrate = BatchNormCalibrator(self.model) if cfg.bn_calibration_batches else None
        self.augmenter = self._build_augmenter()
        self._loss_and_grads = (tf.function(self._forward_backward, jit_compile=True,
                                            reduce_retracing=True)
                                if self.jit else self._forward_backward)
        self.write_dir = (self.run_dir if self.chief else
                          Path(tempfile.mkdtemp(prefix=f"medzoo-{worker_id(strategy)}-")))
        self.write_dir.mkdir(parents=True, exist_ok=True)
        self.history_path = self.write_dir / "history.csv"
        self.history_fields = _history_fields(self.labels)
        self.train_writer = tf.summary.create_file_writer(os.fspath(self.write_dir / "logs" / "train"))
        self.val_writer = tf.summary.create_file_writer(os.fspath(self.write_dir / "logs" / "val"))
        self.rate = 0.0            # images/s of the latest epoch, so far
        self.epoch_seconds = 0.0   # training time of the latest epoch, so far
        self._t_start = self._t_epoch = time.perf_counter()
        self._bar = None

    def _steps_per_epoch(self) -> int:
        cfg, source, replicas, global_batch = self.cfg, self.source, self.replicas, self.global_batch
        if global_batch % replicas:
            raise ConfigError(
                f"--batch-size {global_batch} is the global batch and must be divisible by the "
                f"{replicas} replicas; pass a multiple of {replicas}."
            )
        n_train = source.num_examples("train")
        steps = cfg.steps_per_epoch or n_train // global_batch
        if n_train == 0 or steps < 1:
            raise ConfigError(
                f"The training split has {n_train} examples, fewer than one global batch of "
                f"{global_batch}; lower --batch-size or add data."
            )
        if source.num_examples(cfg.eval_split) == 0:
            raise ConfigError(f"The {cfg.eval_split!r} split is empty; raise --val-fraction or "
                              "pick another --eval-split.")
        return steps

    def _build_model(self, model_fn):
        """The model under the strategy, seeded, in mixed precision when asked (float16 with loss
        scaling on GPUs, bfloat16 on CPUs); the global policy is restored afterwards."""
        cfg, source = self.cfg, self.source
        policy = keras.mixed_precision.global_policy()
        if self.mixed:
            keras.mixed_precision.set_global_policy("mixed_float16" if _gpu() else "mixed_bfloat16")
        try:
            with self.strategy.scope():
                keras.utils.set_random_seed(cfg.seed)
                return model_fn(source.input_shape, len(self.labels), source.activation)
        finally:
            keras.mixed_precision.set_global_policy(policy)

    def _split_backbone(self):
        """(head variables, backbone variables): the backbone is every layer up to ``features``.

        ``--freeze-backbone`` (or a multiplier of 0) freezes it (a linear probe: batch norm runs
        in inference mode too); another ``--backbone-lr-mult`` gives it its own optimizer whose
        learning rate is ``lr x mult`` on the same schedule. Otherwise one optimizer for all.
        """
        cfg, model = self.cfg, self.model
        mult = float(cfg.backbone_lr_mult)
        if not cfg.freeze_backbone and mult == 1.0:
            return list(model.trainable_variables), []
        from zoo.models.backbone import backbone_layers

        layers = backbone_layers(model)
        if cfg.freeze_backbone or mult == 0.0:
            for layer in layers:
                layer.trainable = False
            self.log(f"Backbone frozen ({len(layers)} layers up to 'features'); training the head only.")
            return list(model.trainable_variables), []
        if self.mixed and _gpu():
            raise ConfigError("--backbone-lr-mult with --mixed-precision on a GPU is not supported; drop one of them.")
        ids = {id(v) for layer in layers for v in layer.trainable_variables}
        backbone = [v for v in model.trainable_variables if id(v) in ids]
        head = [v for v in model.trainable_variables if id(v) not in ids]
        return head, backbone

    def _build_augmenter(self):
        """The Keras augmentation layers for the device path, or None (CPU path, or none asked).

        Built in float32 whatever the model's precision: images stay float32 until the model's
        first layer casts them."""
        if self.cfg.augment_on != "device":
            return None
        augmenter = build_augmentation(self.cfg.augment, seed=0)  # the seed comes per batch
        if augmenter is not None and not isinstance(augmenter, Augmentation):
            raise ConfigError("--augment-on device takes an augmentation spec, not a callable; "
                              "pass --augment-on cpu to run a callable in the tf.data map.")
        return augmenter

    def _build_optimizer(self):
        cfg, steps = self.cfg, self.steps
        with self.strategy.scope():
            schedule = WarmupSchedule(cfg.lr, steps * cfg.epochs, round(cfg.warmup_epochs * steps),
                                      cfg.schedule)
            optimizer = make_optimizer(cfg.optimizer, schedule, weight_decay=cfg.weight_decay,
                                       mixed_float16=self.mixed and _gpu())
            optimizer.build(self.head_vars)
        return schedule, optimizer

    def _build_backbone_optimizer(self):
        if not self.backbone_vars:
            return None
        cfg, steps = self.cfg, self.steps
        with self.strategy.scope():
            schedule = WarmupSchedule(cfg.lr * float(cfg.backbone_lr_mult), steps * cfg.epochs,
                                      round(cfg.warmup_epochs * steps), cfg.schedule)
            optimizer = make_optimizer(cfg.optimizer, schedule, weight_decay=cfg.weight_decay)
            optimizer.build(self.backbone_vars)
        self.log(f"Backbone learning rate: {cfg.lr:g} x {float(cfg.backbone_lr_mult):g}.")
        return optimizer

    def log(self, message):
        _log(self.chief, self.strategy, message)

    def resume(self) -> tuple[int, int]:
        """Restore the latest checkpoint if there is one (history.csv is cut back to the epochs it
        completed; a run without one starts a new history), announce the run, and return the
        ``(epoch, step)`` to start from."""
        cfg, labels = self.cfg, self.labels
        if self.state.restore():
            epoch0, step0 = self.state.position()
            self.log(f"Resuming from {self.state.latest()}: epoch {epoch0 + 1}/{cfg.epochs}, "
                     f"step {step0}/{self.steps}.")
            if self.chief:  # drop rows of epochs the checkpoint has not completed (killed in between)
                _write_history(self.history_path, self.history_fields,
                               [r for r in _read_history(self.history_path) if int(r["epoch"]) <= epoch0])
        elif self.chief and self.history_path.exists():
            self.history_path.unlink()
        self.log(f"Training {self.model.name} ({self.model.count_params():,} parameters) on "
                 f"{self.source.input_shape} inputs, {len(labels)} labels ({self.source.activation}); "
                 f"strategy {strategy_name(self.strategy)} with {self.replicas} replica(s), global "
                 f"batch {self.global_batch}, {self.steps} steps/epoch.")
        where = "off" if self.cfg.augment in (False, None, "none") else (
            "on the device" if self.augmenter is not None else "in tf.data (CPU)")
        self.log(f"Precision {self.model.dtype_policy.name}, XLA {'on' if self.jit else 'off'}, "
                 f"augmentation {where}.")
        if self.class_weights is not None:
            self.log("Class weights: " + ", ".join(f"{n}={w:.3g}" for n, w in zip(labels, self.class_weights)))
        self._t_start = time.perf_counter()
        return self.state.position()

    def begin_epoch(self, epoch: int, skip: int = 0):
        """An iterator over the epoch's global batches, its first ``skip`` batches left out (the
        stream is a function of seed and epoch only, so a resumed epoch continues exactly)."""
        cfg, steps, global_batch = self.cfg, self.steps, self.global_batch

        on_device = self.augmenter is not None
        aug_seed = epoch_seed(cfg.seed, epoch)

        def dataset_fn(ctx):
            per_replica = ctx.get_per_replica_batch_size(global_batch)
            local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            ds = self.source.train_dataset(epoch=epoch, batch_size=per_replica, seed=cfg.seed,
                                           input_context=ctx,
                                           augment=False if on_device else cfg.augment)
            if on_device:  # tag each batch with [epoch seed, index]: counted before the skip
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
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def augment(self, x, key):
        """The device path's augmentation of one replica's batch ``x``; ``key`` is the batch's
        ``[epoch seed, batch index]`` tag (see :meth:`begin_epoch`)."""
        return self.augmenter(x, training=True, batch_index=key[1], seed=key[0])

    def _replica_step(self, x, y, key=None):
        if key is not None:
            x = self.augment(x, key)
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
        lr = float(self.schedule(self.optimizer.iterations))
        self._bar.update(step + 1, [("loss", float(state.loss_sum.numpy()) / (step + 1)),
                                    ("img/s", self.rate), ("lr", lr)])
        global_step = int(self.optimizer.iterations.numpy())
        if global_step % 10 == 0 or step + 1 == steps:
            with self.train_writer.as_default():
                _scalar("loss", loss, step=global_step)
                _scalar("learning_rate", lr, step=global_step)
                _scalar("images_per_sec", self.rate, step=global_step)
        if (step + 1) % self.cfg.checkpoint_steps == 0 and step + 1 < steps:
            state.save()
        self.epoch_seconds = time.perf_counter() - self._t_epoch

    @tf.function(reduce_retracing=True)
    def _predict_step(self, x):
        return self.model(x, training=False)

    def predict(self, split: str):
        """``(y_true, y_prob)`` as float32 arrays over ``split``, in inference mode."""
        ys, ps = [], []
        for batch in self.source.eval_dataset(split, batch_size=max(self.global_batch, 64)):
            ps.append(np.asarray(self._predict_step(batch[0]), dtype=np.float32))
            ys.append(np.asarray(batch[1], dtype=np.float32))
        return np.concatenate(ys), np.concatenate(ps)

    def evaluate(self) -> dict:
        """Scores on the evaluation split: ``{"loss", "auroc_mean", "auroc": {label: value},
        "examples"}`` (an AUROC is None when the split has one class of that label). Batch-norm
        statistics are first recalibrated on training batches when the config asks for it."""
        if self.cfg.bn_calibration_batches:
            self.calibrate(self.source.eval_dataset("train", batch_size=max(self.global_batch, 32)),
                           self.cfg.bn_calibration_batches)
        y, p = self.predict(self.split)
        val_loss = float(np.mean(self.loss_fn(tf.constant(y), tf.constant(p)).numpy()))
        return score(self.labels, y, p, val_loss)

    def on_epoch_end(self, epoch: int, scores: dict) -> None:
        """Log the epoch, write its TensorBoard scalars and history.csv row, keep the weights
        when the mean validation AUROC beats the best so far, and checkpoint the epoch."""
        state = self.state
        train_loss = float(state.loss_sum.numpy()) / self.steps
        mean = scores["auroc_mean"]
        self.log(f"epoch {epoch + 1}: train loss {train_loss:.4f}, {self.split} loss "
                 f"{scores['loss']:.4f}, {self.split} AUROC {'n/a' if mean is None else f'{mean:.4f}'}, "
                 f"{self.rate:.1f} images/s")
        self._epoch_scalars(epoch, train_loss, scores)
        if mean is not None and mean > float(state.best.numpy()):
            state.best.assign(mean)
            state.best_epoch.assign(epoch + 1)
            if self.chief:
                with atomic_path(self.write_dir / "best.weights.h5") as tmp:
                    self.model.save_weights(tmp)
        if self.chief:
            self._history_row(epoch, train_loss, scores)
        state.epoch.assign(epoch + 1)
        state.step.assign(0)
        state.loss_sum.assign(0.0)
        state.save()

    def _epoch_scalars(self, epoch, train_loss, scores):
        mean = scores["auroc_mean"]
        with self.val_writer.as_default():
            _scalar("loss", scores["loss"], step=epoch + 1)
            if mean is not None:
                _scalar("auroc_mean", mean, step=epoch + 1)
            for name, value in scores["auroc"].items():
                if value is not None:
                    _scalar(f"auroc/{name}", value, step=epoch + 1)
        with self.train_writer.as_default():
            _scalar("epoch_loss", train_loss, step=epoch + 1)
        self.train_writer.flush()
        self.val_writer.flush()

    def _history_row(self, epoch, train_loss, scores):
        """Write the epoch's row into history.csv, replacing rows of this epoch and later ones."""
        mean = scores["auroc_mean"]
        row = {"epoch": epoch + 1, "train_loss": f"{train_loss:.6f}",
               "val_loss": f"{scores['loss']:.6f}",
               "val_auroc_mean": "" if mean is None else f"{mean:.6f}",
               "lr": f"{float(self.schedule(self.optimizer.iterations)):.6g}",
               "seconds": f"{self.epoch_seconds:.2f}", "images_per_sec": f"{self.rate:.1f}"}
        for name, value in scores["auroc"].items():
            row[f"val_auroc_{name}"] = "" if value is None else f"{value:.6f}"
        rows = [r for r in _read_history(self.history_path) if int(r["epoch"]) < epoch + 1]
        _write_history(self.history_path, self.history_fields, rows + [row])

    def finish(self) -> dict:
        """Evaluate the final weights and return the run's metrics (the chief writes them to
        metrics.json): final and best-epoch AUROCs, sizes, throughput, the weights digest."""
        cfg, state, labels = self.cfg, self.state, self.labels
        final = self.evaluate()
        digest = weights_digest(self.model)
        history = _read_history(self.history_path) if self.chief else []
        best_epoch = int(state.best_epoch.numpy())
        best_row = next((r for r in history if int(r["epoch"]) == best_epoch), None)
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
                "auroc": ({n: (float(best_row[f"val_auroc_{n}"]) if best_row[f"val_auroc_{n}"] else None)
                           for n in labels} if best_row else None),
            },
            "val_auroc": final["auroc"],
            "val_auroc_mean": final["auroc_mean"],
            "train_images_per_sec": round(self.rate, 2),
            "train_seconds": round(time.perf_counter() - self._t_start, 2),
            "weights_sha256": digest,
            "class_weights": self.class_weights,
            "precision": self.model.dtype_policy.name,
            "jit_compile": self.jit,
            "augment_on": self.cfg.augment_on,
        }
        self.log(format_auroc_table(final, self.split))
        self.log(f"final weights sha256 {digest}")
        if self.chief:
            atomic_write_json(self.write_dir / "metrics.json", metrics)
        return metrics

    def close(self) -> None:
        """Flush the TensorBoard writers; a non-chief worker deletes its private folder."""
        self.train_writer.close()
        self.val_writer.close()
        if not self.chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)


def fit(cfg: TrainConfig, source, *, strategy, run_dir, model_fn):
    """Train ``model_fn(input_shape, num_classes, activation)`` on ``source``; returns
    ``(model, metrics)``.

    Writes (chief only) into ``run_dir``: checkpoints/, logs/ (TensorBoard), history.csv,
    best.weights.h5 and metrics.json. The model holds the final weights (best.weights.h5 the
    best ones).
    """
    trainer = Trainer(cfg, source, strategy=strategy, run_dir=run_dir, model_fn=model_fn)
    try:
        epoch0, step0 = trainer.resume()
        for epoch in range(epoch0, cfg.epochs):
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
