"""``make_dataset``: a prepared cache -> ``tf.data`` (sharding, shuffling, balance, augmentation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from pipelines import augment as augmentation
from pipelines import cells, preprocessing
from pipelines.cache.format import (
    MANIFEST_FILE,
    derive_seed,
    parse_batch,
    parse_image_size,
    read_info,
    shard_files,
)

__all__ = ["make_dataset"]


def _split_table(cache: Path, split: str, labels) -> pd.DataFrame:
    table = cells.read_csv(cache / MANIFEST_FILE, dtype={"id": str, "shard": str})
    return table[table["split"] == split]


def _group_of(labels_row: np.ndarray, task: str) -> int:
    if task == "multi-label" or labels_row.shape[-1] == 1:
        return int(labels_row[0] > 0.5)
    return int(np.argmax(labels_row))


def make_dataset(
    cache,
    split: str,
    *,
    batch_size: int,
    training: bool = False,
    image_size=None,
    augment=None,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    seed: int = 0,
    epoch: int = 0,
    input_context=None,
    balanced: bool = False,
    repeat: bool = False,
    with_ids: bool = False,
    drop_remainder: bool = False,
    shuffle_buffer: int = 1024,
) -> tf.data.Dataset:
    """TFRecords -> ``tf.data.Dataset`` of ``(images, labels)`` (or ``+ ids`` with with_ids).

    images: float32 [B, H, W, C] in [0, 1]; labels: float32 [B, K].

    Pipeline: shard files -> (by worker: files when there are at least as many files as input
    pipelines, else records, always before decoding) -> interleaved reads -> [training:
    shuffle | balanced: equal-weight sampling over classes] -> batch -> parse + decode ->
    optional resize -> [training: Keras augmentation layers, MixUp / CutMix] -> prefetch.

    Args:
        batch_size: the batch this dataset yields. Under tf.distribute with an input_context,
            pass ``input_context.get_per_replica_batch_size(global_batch)``.
        training: shuffle, and apply ``augment``, ``mixup``, ``cutmix`` (they are no-ops
            otherwise, like the Keras layers at inference).
        image_size: N or (H, W) to resize to (bilinear, antialiased); None = cache size.
        augment: None/False, True/"default", a spec ("flip,rotation=10,zoom=0.1"), a dict, or
            a callable on image batches; see ``pipelines.augment``. This is the CPU path; the
            trainer's default passes None here and augments inside its train step instead,
            with the same seed and batch index (``--augment-on device``).
        mixup, cutmix: MixUp alpha / CutMix factor; both > 0 alternates them by batch.
        seed, epoch: the order and the augmentation depend only on these, so a resumed run
            that passes its epoch sees the same data as an uninterrupted one.
        input_context: ``tf.distribute.InputContext``; this pipeline keeps its share.
        balanced: True or "class": sample classes with equal probability (multi-label and
            single-output tasks: positive vs negative of the first label, e.g. "any";
            multi-class: argmax class). "source": for a corpus (``pipelines.corpus``), sample
            its sources with equal probability, so a large source does not drown a small one.
            An epoch keeps the split's length (the minority groups are oversampled).
        repeat: repeat forever (each pass reshuffled, deterministically).
        with_ids: also yield ``{"id": bytes [B], "patient_id": bytes [B]}``.
        drop_remainder: drop a last partial batch.
        shuffle_buffer: records in the shuffle buffer (serialized, so H*W*C bytes each).
    """
    cache = Path(cache)
    info = read_info(cache)
    files = shard_files(cache, split, info)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    labels = tuple(info["labels"])
    table = _split_table(cache, split, labels)
    if len(table) == 0:
        raise ValueError(f"The split {split!r} of the cache {cache} has no examples.")
    if balanced not in (False, None, True, "class", "source"):
        raise ValueError(f"balanced={balanced!r} must be False, True / 'class' or 'source'.")
    if balanced == "source" and "label_groups" not in info:
        raise ValueError(
            f"balanced='source' needs a corpus built by pipelines.corpus; {cache} has no sources "
            "(use balanced=True for classes)."
        )

    ds, local = _records(files, table, training=training, seed=seed, epoch=epoch,
                         input_context=input_context)
    ds = _ordered(ds, local, info, training=training, balanced=balanced, repeat=repeat,
                  seed=seed, epoch=epoch, shuffle_buffer=shuffle_buffer)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = _decoded(ds, info, image_size)
    if training:
        ds = _augmented(ds, augment=augment, mixup=mixup, cutmix=cutmix, seed=seed, epoch=epoch)
    if not with_ids:
        ds = ds.map(lambda x, y, ids: (x, y))
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _records(files, table, *, training, seed, epoch, input_context):
    """The shard files -> serialized records of this input pipeline's share: by files when
    there are at least as many files as pipelines, else by records, always before decoding.
    Returns the dataset and this pipeline's ``(rows, count)``: its manifest rows (exact when
    sharded by files) and how many records it reads."""
    pipes, pipe_id = 1, 0
    if input_context is not None:
        pipes, pipe_id = input_context.num_input_pipelines, input_context.input_pipeline_id
    by_files = pipes > 1 and len(files) >= pipes
    if by_files:
        files = files[pipe_id::pipes]
        local = table[table["shard"].isin([Path(f).name for f in files])]
        local_count = len(local)
    else:
        local = table
        local_count = len(range(pipe_id, len(table), pipes))

    ds = tf.data.Dataset.from_tensor_slices(files)
    if training and len(files) > 1:
        ds = ds.shuffle(len(files), seed=derive_seed(seed, epoch, 1), reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=8 * 2**20),
        cycle_length=min(len(files), 8),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if pipes > 1 and not by_files:
        ds = ds.shard(pipes, pipe_id)
    return ds, (local, local_count)


def _ordered(ds, local, info, *, training, balanced, repeat, seed, epoch, shuffle_buffer):
    """Shuffle (training) or equal-weight sampling (``balanced``), then repeat if asked."""
    local, local_count = local
    buffer = max(1, min(shuffle_buffer, local_count))
    if balanced:
        groups = info["label_groups"] if balanced == "source" else None
        ds = _balanced(ds, local, labels=tuple(info["labels"]), task=info["task"], buffer=buffer,
                       seed=seed, epoch=epoch, groups=groups)
        if not repeat:
            ds = ds.take(local_count)
    elif training:
        ds = ds.shuffle(buffer, seed=derive_seed(seed, epoch, 2), reshuffle_each_iteration=True)
    if repeat and not balanced:
        ds = ds.repeat()
    return ds


def _decoded(ds, info, image_size):
    """Batches of serialized records -> ``(images, labels, ids)``, resized through the cache's
    preprocessing spec when ``image_size`` differs from the cache's."""
    num_labels = len(info["labels"])
    height, width = info["image_size"]
    shape = (height, width, int(info["channels"]))
    out_size = shape[:2] if image_size is None else parse_image_size(image_size)
    spec = preprocessing.from_cache_info(info)

    def decode(serialized):
        images, y, ids = parse_batch(serialized, image_shape=shape, num_labels=num_labels)
        if tuple(out_size) != tuple(shape[:2]):
            images = preprocessing.tf_finish(images, spec.at_size(out_size))
            images = tf.clip_by_value(images, 0.0, 1.0)
        return images, y, ids

    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _augmented(ds, *, augment, mixup, cutmix, seed, epoch):
    """The training-only steps on decoded batches: augmentation, then MixUp / CutMix."""
    augmenter = augmentation.build_augmentation(augment, seed=augmentation.epoch_seed(seed, epoch))
    mixer = augmentation.build_mix(mixup=mixup, cutmix=cutmix, seed=derive_seed(seed, epoch, 4))
    if augmenter is not None or mixer is not None:
        ds = ds.enumerate()
    if isinstance(augmenter, augmentation.Augmentation) and augmentation.stateless_ok():
        # each batch's randomness comes from (seed, epoch, batch index): parallel and
        # still deterministic
        ds = ds.map(
            lambda i, b: (i, (augmenter(b[0], batch_index=i), b[1], b[2])),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    elif augmenter is not None:
        # a callable of the caller's (or another Keras backend): one batch at a time, so
        # seeded generators advance in batch order
        ds = ds.map(lambda i, b: (i, (augmenter(b[0], training=True), b[1], b[2])))
    if mixer is not None:
        ds = ds.map(
            lambda i, b: (i, (*mixer(i, b[0], b[1]), b[2])),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    if augmenter is not None or mixer is not None:
        ds = ds.map(lambda i, b: b)
    return ds


def _balanced(ds, local, *, labels, task, buffer, seed, epoch, groups=None):
    """Equal-weight sampling over the classes (or, with ``groups``, the label index -> source
    index of a corpus, the sources) present: filter per group, repeat, sample."""
    values = local[list(labels)].to_numpy(dtype=np.float32)
    present = sorted({_group_of(v, task) for v in values})
    if groups is not None:
        table = tf.constant(groups, tf.int64)
        present = sorted({int(groups[int(np.argmax(v))]) for v in values})
        if len(present) < 2:
            raise ValueError("balanced='source' needs at least two sources in the split; use balanced=False.")
    if len(present) < 2:
        raise ValueError(
            f"balanced=True needs at least two classes in the split, but every example is in "
            f"class {present[0] if present else '-'}; use balanced=False."
        )
    num_labels = len(labels)
    multi = task == "multi-label" or num_labels == 1
    spec = {"label": tf.io.FixedLenFeature([num_labels], tf.float32)}

    def group(serialized):
        label = tf.io.parse_single_example(serialized, spec)["label"]
        if groups is not None:
            return tf.gather(table, tf.argmax(label, output_type=tf.int64))
        if multi:
            return tf.cast(label[0] > 0.5, tf.int64)
        return tf.argmax(label, output_type=tf.int64)

    streams = []
    for k in present:
        stream = ds.filter(lambda s, k=k: tf.equal(group(s), k))
        stream = stream.shuffle(
            buffer, seed=derive_seed(seed, epoch, 10 + k), reshuffle_each_iteration=True
        )
        streams.append(stream.repeat())
    weights = [1.0 / len(streams)] * len(streams)
    return tf.data.Dataset.sample_from_datasets(
        streams, weights=weights, seed=derive_seed(seed, epoch, 5)
    )
