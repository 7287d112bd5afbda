"""The one training loop, for every strategy (one device, MirroredStrategy, multi-worker).

Keras ``fit`` does not run under MultiWorkerMirroredStrategy in Keras 3 (keras-team/keras#20585),
so this is a custom loop: ``strategy.run`` inside a ``tf.function`` train step, batches from
``strategy.distribute_datasets_from_function``, the loss summed over each replica's examples and
divided by the *global* batch, so every strategy computes the same update.

Per epoch ``e`` the training stream is a function of ``(seed, e)`` only; a run resumed at step
``s`` of epoch ``e`` rebuilds that stream and skips its first ``s`` batches, which is what makes
a killed-and-resumed run end where an uninterrupted run ends.
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

from zoo.training.checkpoint import TrainState
from zoo.training.config import ConfigError, TrainConfig
from zoo.training.losses import balanced_class_weights, make_loss
from zoo.training.metrics import format_auroc_table, score, weights_digest
from zoo.training.optim import WarmupSchedule, make_optimizer
from zoo.training.strategy import is_chief, strategy_name, worker_id

__all__ = ["fit"]


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


def _batchnorm_layers(model):
    found = model._flatten_layers(include_self=False, recursive=True)
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
        self.layers = _batchnorm_layers(model)

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
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def fit(cfg: TrainConfig, source, *, strategy, run_dir, model_fn) -> dict:
    """Train ``model_fn(input_shape, num_classes, activation)`` on ``source``; returns metrics.

    Writes (chief only) into ``run_dir``: checkpoints/, logs/ (TensorBoard), history.csv,
    best.weights.h5 and metrics.json. Returns the metrics dict with the trained ``model`` under
    the key ``"_model"`` (the caller removes it).
    """
    chief = is_chief(strategy)
    run_dir = Path(run_dir)
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.batch_size
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
    split = cfg.eval_split
    if source.num_examples(split) == 0:
        raise ConfigError(f"The {split!r} split is empty; raise --val-fraction or pick another --eval-split.")

    labels = source.labels
    num_classes = len(labels)
    activation = source.activation
    class_weights = cfg.class_weights
    if class_weights == "balanced":
        class_weights = balanced_class_weights(source.split_labels("train"), activation)
    loss_fn = make_loss(cfg.loss, activation=activation, num_classes=num_classes,
                        class_weights=class_weights, label_smoothing=cfg.label_smoothing,
                        gamma=cfg.focal_gamma)

    write_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix=f"medzoo-{worker_id(strategy)}-"))
    write_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _fit(cfg, source, strategy, run_dir, write_dir, chief, model_fn, loss_fn,
                    steps, global_batch, replicas, labels, activation, class_weights)
    finally:
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)


def _fit(cfg, source, strategy, run_dir, write_dir, chief, model_fn, loss_fn, steps, global_batch,
         replicas, labels, activation, class_weights):
    num_classes = len(labels)
    split = cfg.eval_split
    gpu = bool(tf.config.list_logical_devices("GPU"))
    mixed_float16 = cfg.mixed_precision and gpu
    policy = keras.mixed_precision.global_policy()
    if cfg.mixed_precision:  # float16 with loss scaling on GPUs, bfloat16 on CPUs
        keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")
    try:
        with strategy.scope():
            keras.utils.set_random_seed(cfg.seed)
            model = model_fn(source.input_shape, num_classes, activation)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    with strategy.scope():
        schedule = WarmupSchedule(cfg.lr, steps * cfg.epochs, round(cfg.warmup_epochs * steps),
                                  cfg.schedule)
        optimizer = make_optimizer(cfg.optimizer, schedule, weight_decay=cfg.weight_decay,
                                   mixed_float16=mixed_float16)
        optimizer.build(model.trainable_variables)
    state = TrainState(model, optimizer, run_dir / "checkpoints", strategy=strategy,
                       max_to_keep=cfg.keep_checkpoints)
    log = lambda message: _log(chief, strategy, message)  # noqa: E731

    history_path = write_dir / "history.csv"
    fields = _history_fields(labels)
    if state.restore():
        epoch0, step0 = state.position()
        log(f"Resuming from {state.latest()}: epoch {epoch0 + 1}/{cfg.epochs}, step {step0}/{steps}.")
        if chief:  # drop rows of epochs the checkpoint has not completed (killed in between)
            _write_history(history_path, fields,
                           [r for r in _read_history(history_path) if int(r["epoch"]) <= epoch0])
    elif chief and history_path.exists():
        history_path.unlink()

    log(f"Training {model.name} ({model.count_params():,} parameters) on {source.input_shape} "
        f"inputs, {len(labels)} labels ({activation}); strategy {strategy_name(strategy)} with "
        f"{replicas} replica(s), global batch {global_batch}, {steps} steps/epoch.")
    if class_weights is not None:
        log("Class weights: " + ", ".join(f"{n}={w:.3g}" for n, w in zip(labels, class_weights)))

    @tf.function
    def train_step(iterator):
        def step_fn(x, y):
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                loss = tf.reduce_sum(loss_fn(y, probs)) / global_batch
                if model.losses:
                    loss += tf.add_n(model.losses) / replicas
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        batch = next(iterator)
        per_replica = strategy.run(step_fn, args=(batch[0], batch[1]))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    @tf.function(reduce_retracing=True)
    def predict_step(x):
        return model(x, training=False)

    calibrate = BatchNormCalibrator(model)

    def evaluate():
        if cfg.bn_calibration_batches:
            calibrate(source.eval_dataset("train", batch_size=max(global_batch, 32)),
                      cfg.bn_calibration_batches)
        ys, ps = [], []
        for batch in source.eval_dataset(split, batch_size=max(global_batch, 64)):
            ps.append(np.asarray(predict_step(batch[0]), dtype=np.float32))
            ys.append(np.asarray(batch[1], dtype=np.float32))
        y, p = np.concatenate(ys), np.concatenate(ps)
        val_loss = float(np.mean(loss_fn(tf.constant(y), tf.constant(p)).numpy()))
        return score(labels, y, p, val_loss), y, p

    logs_dir = write_dir / "logs"
    train_writer = tf.summary.create_file_writer(os.fspath(logs_dir / "train"))
    val_writer = tf.summary.create_file_writer(os.fspath(logs_dir / "val"))

    t_start = time.perf_counter()
    rate = 0.0
    epoch0, step0 = state.position()
    for epoch in range(epoch0, cfg.epochs):
        skip = step0 if epoch == epoch0 else 0

        def dataset_fn(ctx, epoch=epoch, skip=skip):
            per_replica = ctx.get_per_replica_batch_size(global_batch)
            local = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            ds = source.train_dataset(epoch=epoch, batch_size=per_replica, seed=cfg.seed,
                                      input_context=ctx, augment=cfg.augment)
            return ds.skip(skip * local).take((steps - skip) * local)

        iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
        if chief and cfg.verbose:
            print(f"Epoch {epoch + 1}/{cfg.epochs}", flush=True)
        bar = keras.utils.Progbar(steps, verbose=cfg.verbose if chief else 0,
                                  stateful_metrics=["loss", "img/s", "lr"], unit_name="step")
        if skip:
            bar.update(skip)
        t0, done = time.perf_counter(), 0
        for step in range(skip, steps):
            loss = float(train_step(iterator))
            if not np.isfinite(loss):
                raise FloatingPointError(
                    f"The training loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                    "lower --lr or check the data."
                )
            state.loss_sum.assign_add(loss)
            state.step.assign(step + 1)
            done += 1
            rate = done * global_batch / max(time.perf_counter() - t0, 1e-9)
            lr = float(schedule(optimizer.iterations))
            bar.update(step + 1, [("loss", float(state.loss_sum.numpy()) / (step + 1)),
                                  ("img/s", rate), ("lr", lr)])
            global_step = int(optimizer.iterations.numpy())
            if global_step % 10 == 0 or step + 1 == steps:
                with train_writer.as_default():
                    _scalar("loss", loss, step=global_step)
                    _scalar("learning_rate", lr, step=global_step)
                    _scalar("images_per_sec", rate, step=global_step)
            if (step + 1) % cfg.checkpoint_steps == 0 and step + 1 < steps:
                state.save()

        seconds = time.perf_counter() - t0
        scores, _, _ = evaluate()
        train_loss = float(state.loss_sum.numpy()) / steps
        mean = scores["auroc_mean"]
        log(f"epoch {epoch + 1}: train loss {train_loss:.4f}, {split} loss {scores['loss']:.4f}, "
            f"{split} AUROC {'n/a' if mean is None else f'{mean:.4f}'}, {rate:.1f} images/s")
        with val_writer.as_default():
            _scalar("loss", scores["loss"], step=epoch + 1)
            if mean is not None:
                _scalar("auroc_mean", mean, step=epoch + 1)
            for name, value in scores["auroc"].items():
                if value is not None:
                    _scalar(f"auroc/{name}", value, step=epoch + 1)
        with train_writer.as_default():
            _scalar("epoch_loss", train_loss, step=epoch + 1)
        train_writer.flush()
        val_writer.flush()
        if mean is not None and mean > float(state.best.numpy()):
            state.best.assign(mean)
            state.best_epoch.assign(epoch + 1)
            if chief:
                tmp = write_dir / "best.tmp.weights.h5"
                model.save_weights(tmp)
                os.replace(tmp, write_dir / "best.weights.h5")
        if chief:
            row = {"epoch": epoch + 1, "train_loss": f"{train_loss:.6f}",
                   "val_loss": f"{scores['loss']:.6f}",
                   "val_auroc_mean": "" if mean is None else f"{mean:.6f}",
                   "lr": f"{float(schedule(optimizer.iterations)):.6g}",
                   "seconds": f"{seconds:.2f}", "images_per_sec": f"{rate:.1f}"}
            for name, value in scores["auroc"].items():
                row[f"val_auroc_{name}"] = "" if value is None else f"{value:.6f}"
            rows = [r for r in _read_history(history_path) if int(r["epoch"]) < epoch + 1]
            _write_history(history_path, fields, rows + [row])
        state.epoch.assign(epoch + 1)
        state.step.assign(0)
        state.loss_sum.assign(0.0)
        state.save()

    final, _, _ = evaluate()
    digest = weights_digest(model)
    history = _read_history(history_path) if chief else []
    best_epoch = int(state.best_epoch.numpy())
    best_row = next((r for r in history if int(r["epoch"]) == best_epoch), None)
    metrics = {
        "model": cfg.model,
        "labels": list(labels),
        "eval_split": split,
        "epochs": cfg.epochs,
        "steps_per_epoch": steps,
        "global_batch_size": global_batch,
        "replicas": replicas,
        "strategy": strategy_name(strategy),
        "final": final,
        "best": {
            "epoch": best_epoch if best_epoch > 0 else None,
            "auroc_mean": float(state.best.numpy()) if best_epoch > 0 else None,
            "auroc": ({n: (float(best_row[f"val_auroc_{n}"]) if best_row[f"val_auroc_{n}"] else None)
                       for n in labels} if best_row else None),
        },
        "val_auroc": final["auroc"],
        "val_auroc_mean": final["auroc_mean"],
        "train_images_per_sec": round(rate, 2),
        "train_seconds": round(time.perf_counter() - t_start, 2),
        "weights_sha256": digest,
        "class_weights": class_weights,
        "precision": model.dtype_policy.name,
    }
    log(format_auroc_table(final, split))
    log(f"final weights sha256 {digest}")
    if chief:
        tmp = write_dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2))
        os.replace(tmp, write_dir / "metrics.json")
    metrics["_model"] = model
    return metrics
