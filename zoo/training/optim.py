"""Optimizers and the learning-rate schedule (linear warmup, then constant, cosine or step decay)."""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = ["WarmupSchedule", "make_optimizer"]


@keras.saving.register_keras_serializable(package="zoo")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then ``kind`` decay to the end.

    ``cosine``: half cosine to 0 at ``total_steps``; ``step``: x0.1 at 60% and 85% of the steps;
    ``constant``: stays at ``peak``. The step is the optimizer's iteration counter, which the
    checkpoint saves, so a resumed run continues on the same curve.
    """

    def __init__(self, peak, total_steps, warmup_steps=0, kind="cosine"):
        self.peak = float(peak)
        self.total_steps = int(max(1, total_steps))
        self.warmup_steps = int(max(0, warmup_steps))
        self.kind = kind

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak, total, warm = self.peak, float(self.total_steps), float(self.warmup_steps)
        if self.kind == "cosine":
            progress = ops.clip((step - warm) / max(1.0, total - warm), 0.0, 1.0)
            decayed = 0.5 * peak * (1.0 + ops.cos(math.pi * progress))
        elif self.kind == "step":
            frac = step / total
            decayed = peak * ops.where(frac < 0.6, 1.0, ops.where(frac < 0.85, 0.1, 0.01))
        else:
            decayed = ops.convert_to_tensor(peak, "float32")
        if self.warmup_steps:
            ramp = peak * (step + 1.0) / warm
            return ops.where(step < warm, ramp, decayed)
        return decayed

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "kind": self.kind}


def make_optimizer(name: str, schedule, *, weight_decay: float = 0.0, mixed_float16: bool = False):
    if name == "adam":
        opt = keras.optimizers.Adam(schedule)
    elif name == "adamw":
        opt = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    elif name == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                   weight_decay=weight_decay or None)
    elif name == "rmsprop":
        opt = keras.optimizers.RMSprop(schedule, weight_decay=weight_decay or None)
    else:
        raise ValueError(f"Unknown optimizer {name!r}.")
    if mixed_float16:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
