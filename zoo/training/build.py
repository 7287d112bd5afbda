"""What a Trainer is made of: steps per epoch, loss, model, optimizers and augmenter, built
from the config and the data source (the "task" of TF Model Garden's trainer/task split).

Each builder is a plain function of the config, so the Trainer's constructor reads as a list
of parts and the loop module holds only the loop.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from pipelines.augment import Augmentation, build_augmentation
from zoo.models.backbone import backbone_layers
from zoo.training.config import ConfigError, TrainConfig
from zoo.training.data import DataSource
from zoo.training.ema import WeightAverage, ema_decay
from zoo.training.losses import balanced_class_weights, make_loss
from zoo.training.optim import WarmupSchedule, make_optimizer
from zoo.training.strategy import has_gpu

__all__ = [
    "OptimizerVariables",
    "build_augmenter",
    "build_backbone_optimizer",
    "build_loss",
    "build_model",
    "build_optimizer",
    "build_weight_average",
    "class_weights_for",
    "split_backbone",
    "steps_per_epoch",
]


def steps_per_epoch(cfg: TrainConfig, source: DataSource, replicas: int) -> int:
    """Global batches per epoch; a clear error when the batch does not split over the replicas
    or the data cannot fill one batch, or the evaluation split is empty."""
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
    if source.num_examples(cfg.eval_split) == 0:
        raise ConfigError(f"The {cfg.eval_split!r} split is empty; raise --val-fraction or "
                          "pick another --eval-split.")
    return steps


def class_weights_for(cfg: TrainConfig, source: DataSource):
    """The config's class weights, ``"balanced"`` resolved on the training labels."""
    if cfg.class_weights == "balanced":
        return balanced_class_weights(source.split_labels("train"), source.activation)
    return cfg.class_weights


def build_loss(cfg: TrainConfig, source: DataSource, class_weights):
    return make_loss(cfg.loss, activation=source.activation, num_classes=len(source.labels),
                     class_weights=class_weights, label_smoothing=cfg.label_smoothing,
                     gamma=cfg.focal_gamma, groups=getattr(source, "label_groups", None))


def build_model(cfg: TrainConfig, source: DataSource, strategy, model_fn: Callable, *,
                mixed: bool):
    """The model under the strategy, seeded, in mixed precision when asked (float16 with loss
    scaling on GPUs, bfloat16 on CPUs); the global policy is restored afterwards."""
    policy = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16" if has_gpu() else "mixed_bfloat16")
    try:
        with strategy.scope():
            keras.utils.set_random_seed(cfg.seed)
            return model_fn(source.input_shape, len(source.labels), source.activation)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def split_backbone(cfg: TrainConfig, model, *, mixed: bool, log: Callable[[str], None]):
    """(head variables, backbone variables): the backbone is every layer up to ``features``.

    ``--freeze-backbone`` (or a multiplier of 0) freezes it (a linear probe: batch norm runs
    in inference mode too); another ``--backbone-lr-mult`` gives it its own optimizer whose
    learning rate is ``lr x mult`` on the same schedule. Otherwise one optimizer for all.
    """
    mult = float(cfg.backbone_lr_mult)
    if not cfg.freeze_backbone and mult == 1.0:
        return list(model.trainable_variables), []
    layers = backbone_layers(model)
    if cfg.freeze_backbone or mult == 0.0:
        for layer in layers:
            layer.trainable = False
        log(f"Backbone frozen ({len(layers)} layers up to 'features'); training the head only.")
        return list(model.trainable_variables), []
    if mixed and has_gpu():
        raise ConfigError("--backbone-lr-mult with --mixed-precision on a GPU is not supported; drop one of them.")
    ids = {id(v) for layer in layers for v in layer.trainable_variables}
    backbone = [v for v in model.trainable_variables if id(v) in ids]
    head = [v for v in model.trainable_variables if id(v) not in ids]
    return head, backbone


def build_optimizer(cfg: TrainConfig, steps: int, strategy, variables, *, mixed: bool):
    """``(schedule, optimizer)`` for the head (or the whole model), built on ``variables``."""
    with strategy.scope():
        schedule = WarmupSchedule(cfg.lr, steps * cfg.epochs, round(cfg.warmup_epochs * steps),
                                  cfg.schedule)
        optimizer = make_optimizer(cfg.optimizer, schedule, weight_decay=cfg.weight_decay,
                                   mixed_float16=mixed and has_gpu())
        optimizer.build(variables)
    return schedule, optimizer


def build_backbone_optimizer(cfg: TrainConfig, steps: int, strategy, variables, *,
                             log: Callable[[str], None]):
    """The backbone's own optimizer (``lr x backbone_lr_mult``, same schedule), or None."""
    if not variables:
        return None
    with strategy.scope():
        schedule = WarmupSchedule(cfg.lr * float(cfg.backbone_lr_mult), steps * cfg.epochs,
                                  round(cfg.warmup_epochs * steps), cfg.schedule)
        optimizer = make_optimizer(cfg.optimizer, schedule, weight_decay=cfg.weight_decay)
        optimizer.build(variables)
    log(f"Backbone learning rate: {cfg.lr:g} x {float(cfg.backbone_lr_mult):g}.")
    return optimizer


def build_augmenter(cfg: TrainConfig):
    """The Keras augmentation layers for the device path, or None (CPU path, or none asked).

    Built in float32 whatever the model's precision: images stay float32 until the model's
    first layer casts them."""
    if cfg.augment_on != "device":
        return None
    augmenter = build_augmentation(cfg.augment, seed=0)  # the seed comes per batch
    if augmenter is not None and not isinstance(augmenter, Augmentation):
        raise ConfigError("--augment-on device takes an augmentation spec, not a callable; "
                          "pass --augment-on cpu to run a callable in the tf.data map.")
    return augmenter


def build_weight_average(cfg: TrainConfig, model, steps: int, strategy):
    """The weights' moving average over ``cfg.ema`` epochs (:mod:`zoo.training.ema`), or None."""
    if not cfg.ema:
        return None
    with strategy.scope():
        return WeightAverage(model, ema_decay(cfg.ema, steps))


class OptimizerVariables:
    """What the checkpoint needs of the optimizers (and of the weight average): their
    variables, together."""

    def __init__(self, optimizers):
        self.variables = [v for opt in optimizers if opt is not None for v in opt.variables]
