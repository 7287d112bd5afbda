"""Training augmentation, from Keras core preprocessing layers: in the training step on the
device (the default), or in the tf.data pipeline on the CPU.

``build_augmentation(spec, seed=...)`` turns a spec into a callable on image batches
(float32 [B, H, W, C] in [0, 1]) made of ``keras.layers.RandomFlip``, ``RandomRotation``,
``RandomZoom`` and ``RandomContrast``; ``build_mix(mixup=..., cutmix=..., seed=...)`` wraps
``keras.layers.MixUp`` / ``keras.layers.CutMix`` for (images, labels) batches.

Spec forms: ``None`` / ``False`` / ``"none"`` (no augmentation); ``True`` / ``"default"``
(:data:`DEFAULTS`); a string ``"flip,rotation=15,zoom=0.1"`` (a key without a value takes its
default); a dict with the same keys; or any callable on image batches (used as given).

Where it runs: ``aug(images, batch_index=i, seed=s)`` gives the same output for the same
``(s, i)`` wherever it is called. ``make_dataset`` calls it in a parallel map (the CPU path,
``--augment-on cpu``); the trainer calls it inside the replicated train step (the device path,
``--augment-on device``) with the same seed and batch index, so both paths see the same batches.

Keys: ``flip`` ("horizontal" | "vertical" | "horizontal_and_vertical"), ``rotation``
(maximum degrees either way), ``zoom`` (maximum fraction in or out), ``contrast`` (maximum
fraction). The defaults suit axial head CT: left-right flips only (the head is near-symmetric
left to right, never top to bottom), small rotations and zooms with the outside filled with 0
(air after windowing), mild contrast changes, values kept in [0, 1].
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from pipelines.cache.format import derive_seed

DEFAULTS = {"flip": "horizontal", "rotation": 10.0, "zoom": 0.1, "contrast": 0.1}
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


def parse_augment(spec):
    """A spec -> None, a dict of settings, or the callable itself."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return dict(DEFAULTS)
    if callable(spec):
        return spec
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("", "none", "off", "false"):
            return None
        if text in ("default", "true", "on"):
            return dict(DEFAULTS)
        settings = {}
        for item in text.split(","):
            key, _, value = item.strip().partition("=")
            settings[key.strip()] = value.strip() if value else None
        spec = settings
    if not isinstance(spec, dict):
        raise ValueError(
            f"augment={spec!r} is not a spec; pass None, True, 'default', "
            "'flip,rotation=10,zoom=0.1,contrast=0.1', a dict or a callable."
        )
    unknown = sorted(set(spec) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"Unknown augmentation {unknown[0]!r}; the known ones are {', '.join(DEFAULTS)}."
        )
    settings = {}
    for key, value in spec.items():
        if value is None or value is True:
            value = DEFAULTS[key]
        if value is False:
            continue
        if key == "flip":
            if value not in FLIP_MODES:
                raise ValueError(f"flip={value!r} is not one of {', '.join(FLIP_MODES)}.")
        else:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{key}={value!r} is not a number.") from None
            limit = 180.0 if key == "rotation" else 1.0
            if not 0.0 <= value <= limit:
                raise ValueError(f"{key}={value} must be between 0 and {limit:g}.")
            if value == 0.0:
                continue
        settings[key] = value
    return settings


_SEED_MOD = 2**31 - 2  # Keras' TensorFlow backend folds seeds into int32 with this modulus


class _BatchSeed(keras.random.SeedGenerator):
    """Stateless seeds for one batch of one layer: ``[layer seed, batch index * 64 + draw]``
    (the layer seed and the batch index may be Python ints or int tensors).

    Keras' random layers draw their seeds from ``layer.generator.next()``; a normal
    SeedGenerator advances a variable, which only gives a reproducible stream when batches
    pass one at a time. This stand-in derives every draw from the batch index instead, so
    the augmentation map can run batches in parallel and still depend only on the seed.
    (No ``super().__init__``: there is no state to create.)
    """

    def __init__(self, layer_seed: int, batch_index):  # noqa: D107
        self._first = tf.math.floormod(tf.cast(layer_seed, tf.int64), _SEED_MOD)
        self._base = tf.math.floormod(tf.cast(batch_index, tf.int64) * 64, _SEED_MOD)
        self._draws = 0

    def next(self, ordered=True):
        self._draws += 1
        return tf.stack([self._first, tf.math.floormod(self._base + self._draws, _SEED_MOD)])


@contextlib.contextmanager
def seeds_from(layer, generator):
    """Within the block, the Keras random ``layer`` draws its seeds from ``generator``.

    The one place this module touches Keras internals: Keras 3's random preprocessing layers
    keep their ``keras.random.SeedGenerator`` in the private attribute ``layer.generator`` and
    call its ``next()`` for every draw. The swap bypasses Keras' attribute tracking (the stand-in
    is never saved or trained) and is undone on exit. RuntimeError naming the Keras version when
    the layer has no such attribute; ``tests/pipelines/test_augment.py`` also checks that the
    layers really draw from the swapped generator.
    """
    original = getattr(layer, "generator", None)
    if not isinstance(original, keras.random.SeedGenerator):
        raise RuntimeError(
            f"pipelines.augment ties augmentation to the batch index by swapping the private "
            f"seed generator `generator` of Keras random layers, and {type(layer).__name__} has "
            f"none in Keras {keras.__version__}; update pipelines.augment.seeds_from for this "
            "Keras version (or pass an augmentation callable of your own)."
        )
    object.__setattr__(layer, "generator", generator)  # untracked
    try:
        yield layer
    finally:
        object.__setattr__(layer, "generator", original)


def _stateless_call(layer, inputs, layer_seed: int, batch_index):
    """``layer(inputs, training=True)`` with its random draws tied to ``batch_index``."""
    with seeds_from(layer, _BatchSeed(layer_seed, batch_index)):
        return layer(inputs, training=True)


def stateless_ok() -> bool:
    """Whether the per-batch stateless seeding applies (Keras on the TensorFlow backend)."""
    return keras.backend.backend() == "tensorflow"


class Augmentation:
    """Keras preprocessing layers applied in order to an image batch.

    ``aug(images)`` uses the layers' own seeded generators (one batch after another);
    ``aug(images, batch_index=i)`` ties the randomness to ``(seed, i)`` so that a parallel
    ``tf.data`` map gives the same output whatever order the batches are computed in.
    ``aug(images, batch_index=i, seed=s)`` uses ``s`` (an int or an int tensor) in place of the
    seed it was built with: the train step passes each epoch's seed as a tensor, so one traced
    step serves every epoch.
    """

    def __init__(self, layers, seed: int = 0):
        self.layers = list(layers)
        self.seed = int(seed)

    def __call__(self, images, training=True, batch_index=None, seed=None):
        if seed is None:
            seed = self.seed
        elif not isinstance(seed, int):
            seed = tf.cast(seed, tf.int64)
        for k, layer in enumerate(self.layers):
            if batch_index is not None and training:
                images = _stateless_call(layer, images, seed + 7919 * (k + 1), batch_index)
            else:
                images = layer(images, training=training)
        return tf.clip_by_value(images, 0.0, 1.0)

    def __repr__(self):
        return f"Augmentation({', '.join(type(x).__name__ for x in self.layers)})"


def epoch_seed(seed: int, epoch: int) -> int:
    """The augmentation seed of epoch ``epoch`` of a run seeded ``seed`` (both paths use it)."""
    return derive_seed(seed, epoch, 3)


def build_augmentation(spec, *, seed: int = 0):
    """A callable on image batches, or None when ``spec`` asks for no augmentation."""
    settings = parse_augment(spec)
    if settings is None:
        return None
    if callable(settings):
        return settings
    layers = []
    if "flip" in settings:
        layers.append(keras.layers.RandomFlip(settings["flip"], seed=seed))
    if "rotation" in settings:
        layers.append(
            keras.layers.RandomRotation(
                settings["rotation"] / 360.0, fill_mode="constant", fill_value=0.0, seed=seed + 1
            )
        )
    if "zoom" in settings:
        layers.append(
            keras.layers.RandomZoom(
                settings["zoom"], fill_mode="constant", fill_value=0.0, seed=seed + 2
            )
        )
    if "contrast" in settings:
        layers.append(
            keras.layers.RandomContrast(settings["contrast"], value_range=(0.0, 1.0), seed=seed + 3)
        )
    return Augmentation(layers, seed=seed) if layers else None


def build_mix(*, mixup: float = 0.0, cutmix: float = 0.0, seed: int = 0):
    """fn(batch_index, images, labels, seed=None) -> (images, labels), or None when both are 0.

    MixUp's ``alpha`` and CutMix's ``factor`` are the Beta-distribution parameters. With both
    set, even batches get MixUp and odd batches CutMix. ``seed`` (an int or an int tensor)
    replaces the built one for a call: the train step passes each epoch's seed, so one traced
    step serves every epoch.
    """
    for name, value in (("mixup", mixup), ("cutmix", cutmix)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name}={value!r} must be a number >= 0 (0 turns it off).")
    mix = keras.layers.MixUp(alpha=float(mixup), seed=seed) if mixup > 0 else None
    cut = keras.layers.CutMix(factor=float(cutmix), seed=seed + 1) if cutmix > 0 else None
    if mix is None and cut is None:
        return None
    built_seed = seed

    def apply(layer, layer_seed, index, images, labels):
        data = {"images": images, "labels": tf.cast(labels, images.dtype)}
        if stateless_ok():
            out = _stateless_call(layer, data, layer_seed, index)
        else:
            out = layer(data, training=True)
        return tf.clip_by_value(out["images"], 0.0, 1.0), tf.cast(out["labels"], tf.float32)

    def mixer(index, images, labels, seed=None):
        """Deterministic in (seed, index): safe in a parallel map."""
        base = built_seed if seed is None else tf.cast(seed, tf.int64)
        if mix is not None and cut is not None:
            return tf.cond(
                tf.equal(index % 2, 0),
                lambda: apply(mix, base, index, images, labels),
                lambda: apply(cut, base + 1, index, images, labels),
            )
        if mix is not None:
            return apply(mix, base, index, images, labels)
        return apply(cut, base + 1, index, images, labels)

    return mixer
