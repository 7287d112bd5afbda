"""Where the loop gets its batches: a prepared TFRecord cache, or arrays in memory.

A source answers the same few questions for the loop: labels, task, input shape, how many
training examples, the training labels (for balanced class weights), a training dataset for a
given epoch (the order is a function of seed and epoch only, so a resumed run can skip exactly
the batches it had consumed), and an evaluation dataset. :class:`DataSource` writes those
questions down as a ``typing.Protocol``: the Trainer is annotated with it, and any object that
answers them (a user's own source) trains without subclassing anything here.

Training datasets are built inside ``strategy.distribute_datasets_from_function``: they receive
the ``tf.distribute.InputContext``, shard by worker before decoding, and are batched with the
per-replica batch size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import tensorflow as tf

from pipelines import cells, preprocessing
from pipelines.cache import make_dataset, read_info

__all__ = ["DataSource", "CacheSource", "ArraySource", "activation_for"]


@runtime_checkable
class DataSource(Protocol):
    """What the Trainer reads: the questions every source answers (see the module docstring).

    Optional extras the loop uses when present: ``label_groups`` (a corpus: label -> source
    index, for the grouped loss), ``spec`` (the preprocessing spec the export serves) and
    ``balanced`` (the sampling that ``zoo.training.run`` sets).
    """

    labels: tuple
    task: str
    input_shape: tuple
    description: dict

    @property
    def activation(self) -> str:
        """``"sigmoid"`` or ``"softmax"``, from the task and the number of labels."""
        ...

    def num_examples(self, split: str) -> int:
        """Examples in ``split`` (0 when the source has no such split)."""
        ...

    def split_labels(self, split: str) -> np.ndarray:
        """The ``[N, K]`` float32 labels of ``split`` (balanced class weights read them)."""
        ...

    def train_dataset(self, *, epoch: int, batch_size: int, seed: int, input_context=None,
                      augment=False) -> tf.data.Dataset:
        """Endless batches of ``(images, labels)``, in an order that depends on ``(seed,
        epoch)`` only, sharded by ``input_context`` and batched per replica."""
        ...

    def eval_dataset(self, split: str, *, batch_size: int) -> tf.data.Dataset:
        """One pass over ``split`` in file order, as ``(images, labels)`` batches."""
        ...


def activation_for(task: str, num_labels: int) -> str:
    """sigmoid for multi-label (and one-column binary), softmax for multi-class/one-hot binary."""
    if task == "multi-class" or (task == "binary" and num_labels == 2):
        return "softmax"
    return "sigmoid"


class _Source:
    labels: tuple
    task: str
    input_shape: tuple
    description: dict

    @property
    def activation(self) -> str:
        return activation_for(self.task, len(self.labels))

    def num_examples(self, split: str) -> int:
        raise NotImplementedError

    def split_labels(self, split: str) -> np.ndarray:
        raise NotImplementedError

    def train_dataset(self, *, epoch, batch_size, seed, input_context=None, augment=False):
        """Batches of ``(images, labels)``, in an order that depends on ``(seed, epoch)`` only.

        ``augment`` is the CPU path (augmentation in the tf.data map); the trainer's device
        path passes False and augments the batches inside its train step."""
        raise NotImplementedError

    def eval_dataset(self, split: str, *, batch_size: int):
        raise NotImplementedError


class CacheSource(_Source):
    """A cache written by :func:`pipelines.cache.prepare` (dataset.json, manifest.csv, TFRecords)."""

    def __init__(self, cache_dir):
        self.cache_dir = Path(cache_dir)
        self.info = read_info(self.cache_dir)
        self.labels = tuple(self.info["labels"])
        self.task = self.info["task"]
        h, w = self.info["image_size"]
        self.input_shape = (int(h), int(w), int(self.info["channels"]))
        self.splits = {k: int(v) for k, v in self.info.get("splits", {}).items()}
        self.description = {
            "source": "cache",
            "cache_dir": os.fspath(self.cache_dir),
            "dataset": self.info.get("dataset"),
            "windows": self.info.get("windows"),
            "image_size": [int(h), int(w)],
            "channels": int(self.info["channels"]),
        }
        self._manifest = None
        self.spec = preprocessing.from_cache_info(self.info)
        self.label_groups = self.info.get("label_groups")  # a corpus: label -> source index
        self.balanced = False  # False, "class" or "source" (make_dataset's balanced)

    def num_examples(self, split):
        return self.splits.get(split, 0)

    def _manifest_df(self):
        if self._manifest is None:
            self._manifest = cells.read_csv(self.cache_dir / "manifest.csv")
        return self._manifest

    def split_labels(self, split):
        df = self._manifest_df()
        df = df[df["split"] == split]
        return df[list(self.labels)].to_numpy(dtype=np.float32)

    def train_dataset(self, *, epoch, batch_size, seed, input_context=None, augment=False):
        return make_dataset(
            self.cache_dir, "train", batch_size=batch_size, training=True, seed=seed, epoch=epoch,
            input_context=input_context, augment=augment or None, repeat=True, drop_remainder=True,
            balanced=self.balanced,
        )

    def eval_dataset(self, split, *, batch_size):
        return make_dataset(self.cache_dir, split, batch_size=batch_size, training=False)


class ArraySource(_Source):
    """Arrays in memory: ``splits = {"train": (x, y), "val": (x, y), ...}``.

    ``x`` is float32 ``[N, H, W, C]`` in [0, 1] (uint8 is divided by 255), ``y`` is ``[N, K]``.
    """

    def __init__(self, splits: dict, *, labels, task: str):
        self.arrays = {}
        for name, (x, y) in splits.items():
            x = np.asarray(x)
            x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
            if x.ndim == 3:
                x = x[..., None]
            y = np.asarray(y, dtype=np.float32)
            if y.ndim == 1:
                y = y[:, None]
            if len(x) != len(y):
                raise ValueError(f"Split {name!r} has {len(x)} images but {len(y)} label rows.")
            self.arrays[name] = (x, y)
        self.labels = tuple(labels)
        self.task = task
        self.input_shape = tuple(int(s) for s in self.arrays["train"][0].shape[1:])
        self.description = {"source": "arrays", "image_size": list(self.input_shape[:2]),
                            "channels": self.input_shape[2]}

    def num_examples(self, split):
        return len(self.arrays[split][0]) if split in self.arrays else 0

    def split_labels(self, split):
        return self.arrays[split][1]

    def train_dataset(self, *, epoch, batch_size, seed, input_context=None, augment=False):
        x, y = self.arrays["train"]
        n = len(x)

        def one_pass(i):
            # order = f(seed, epoch, pass) only: a resumed run rebuilds the same stream
            rng = np.random.default_rng([int(seed), int(epoch), int(i)])
            return rng.permutation(n)

        index = np.concatenate([one_pass(i) for i in range(4)])
        ds = tf.data.Dataset.from_tensor_slices(index)
        if input_context is not None and input_context.num_input_pipelines > 1:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        xt, yt = tf.constant(x), tf.constant(y)
        if augment:
            base = tf.constant([int(seed) * 1_000_003 + int(epoch), 0], tf.int64)

            def load(pos, i):
                # random horizontal flip, seeded by (seed, epoch, position in the stream)
                image = tf.image.stateless_random_flip_left_right(
                    tf.gather(xt, i), seed=base + tf.stack([tf.constant(0, tf.int64), pos]))
                return image, tf.gather(yt, i)

            ds = ds.enumerate().map(load)
        else:
            ds = ds.map(lambda i: (tf.gather(xt, i), tf.gather(yt, i)))
        return ds.batch(batch_size, drop_remainder=True).repeat().prefetch(2)

    def eval_dataset(self, split, *, batch_size):
        x, y = self.arrays[split]
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(2)
