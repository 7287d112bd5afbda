"""The public face of the TFRecord cache: ``prepare`` writes it, ``make_dataset`` reads it.

::

    from pipelines.records import prepare, make_dataset
    cache = prepare("rsna", "/data/rsna", "cache/rsna", image_size=256, workers=2)
    train = make_dataset(cache, "train", batch_size=32, training=True, augment=True)

A stable import path for users and the README; the code lives in :mod:`pipelines.cache`
(``format``, ``writer``, ``decode``, ``reader``), which the rest of medzoo imports directly.
Nothing is defined here.
"""

from pipelines.cache.format import parse_batch, read_info, shard_files
from pipelines.cache.reader import make_dataset
from pipelines.cache.writer import PrepareError, prepare

__all__ = ["PrepareError", "prepare", "read_info", "make_dataset", "shard_files", "parse_batch"]
