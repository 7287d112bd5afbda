"""Decode a dataset once into a TFRecord cache: ``python -m pipelines.prepare``.

The cache layout and the parent-side work (split, shard plan, writing, resume) live in
:func:`pipelines.records.prepare`. This module holds the command line and the decode step that
runs in the worker processes. It imports no TensorFlow, so spawned workers start in well under
a second and spend their time in pydicom / numpy.

Each image goes: ``adapter.load(row, data_dir, windows)`` (float32 (H, W, C) in [0, 1]) ->
resize to ``image_size`` (bilinear with antialiasing, Pillow; a plain resize that does not keep
the aspect ratio: CT slices and the public 2D datasets are square or near enough, and a
fixed grid is what the models take) -> uint8 (``round(x * 255)``).

Example::

    python -m pipelines.prepare --dataset synthetic --data-dir data/synthetic-head-ct \\
        --out cache/synthetic-256 --image-size 256 --workers 2
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types

import numpy as np

from pipelines import transforms

# --------------------------------------------------------------------------------------------
# Adapter references that survive pickling into a spawned process


class AdapterRef:
    """A picklable way back to a dataset adapter in another process.

    A registered name goes through ``pipelines.datasets.get_adapter``; a module is re-imported
    by its dotted name; any other object (a test double, a configured adapter instance) is
    pickled as it is.
    """

    def __init__(self, adapter):
        self.name = None
        self.module = None
        self.obj = None
        if isinstance(adapter, str):
            self.name = adapter
        elif isinstance(adapter, types.ModuleType):
            self.module = adapter.__name__
        else:
            self.obj = adapter

    def resolve(self):
        if self.name is not None:
            from pipelines.datasets import get_adapter

            return get_adapter(self.name)
        if self.module is not None:
            return importlib.import_module(self.module)
        return self.obj


# --------------------------------------------------------------------------------------------
# The decode step (runs in workers, or in-process with workers=1)


def decode_row(adapter, row, data_dir, windows, size, channels) -> np.ndarray:
    """One manifest row -> uint8 (H, W, C) at ``size``; raises ValueError naming the problem."""
    image = adapter.load(row, data_dir, windows)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"the adapter returned an array of shape {image.shape}, not (H, W, C)")
    if image.shape[-1] != channels:
        raise ValueError(
            f"the adapter returned {image.shape[-1]} channels where the cache has {channels}"
        )
    image = image.astype(np.float32, copy=False)
    if not np.all(np.isfinite(image)):
        raise ValueError("the decoded image has non-finite values (NaN or inf)")
    return transforms.to_uint8(transforms.resize(image, size))


def describe_error(error: BaseException) -> str:
    """A one-line reason for quarantine.csv (the exception's first line, with its type)."""
    problem = getattr(error, "problem", None)  # pipelines.manifest.DataError: path is separate
    if problem:
        return str(problem).splitlines()[0]
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class Row(dict):
    """A manifest row for ``adapter.load``: ``row["path"]``, ``row.path`` and ``row.get``.

    Much cheaper to make than a ``pandas.Series`` (which matters for tiny images).
    """

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


_WORKER: dict = {}


def init_worker(ref: AdapterRef, data_dir: str, windows, size, channels) -> None:
    """Pool initializer: resolve the adapter once per process."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _WORKER.update(
        adapter=ref.resolve(), data_dir=data_dir, windows=windows, size=size, channels=channels
    )


def work(task):
    """Pool task: (position, row dict) -> (position, uint8 bytes or None, error or None)."""
    position, row = task
    try:
        image = decode_row(
            _WORKER["adapter"],
            Row(row),
            _WORKER["data_dir"],
            _WORKER["windows"],
            _WORKER["size"],
            _WORKER["channels"],
        )
    except Exception as error:  # noqa: BLE001 - any failure of one file is that file's problem
        return position, None, describe_error(error)
    return position, image.tobytes(), None


# --------------------------------------------------------------------------------------------
# Command line


def _size(text: str):
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--image-size {text!r} is not a size; give N or HxW, e.g. 256 or 256x256."
        ) from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return tuple(parts)
    raise argparse.ArgumentTypeError(f"--image-size {text!r} is not N or HxW.")


def _option(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"--option {text!r} is not KEY=VALUE; write e.g. --option labels=normal,stone."
        )
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.prepare",
        description="Decode a dataset once into a sharded TFRecord cache "
        "(dataset.json, manifest.csv, <split>-NNNNN-of-NNNNN.tfrecord, quarantine.csv).",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset", required=True, help="adapter name, e.g. rsna, medmnist, synthetic"
    )
    data.add_argument("--data-dir", required=True, help="the dataset's root folder (as published)")
    data.add_argument(
        "--option",
        action="append",
        type=_option,
        default=[],
        metavar="KEY=VALUE",
        help="extra keyword for the adapter's read_manifest (repeatable)",
    )
    out = parser.add_argument_group("cache")
    out.add_argument("--out", required=True, help="cache folder to create or resume")
    out.add_argument("--image-size", type=_size, default=256, help="N or HxW (default 256)")
    out.add_argument(
        "--windows",
        default=None,
        help="CT windows as channels: names or center/width, e.g. brain,subdural,bone "
        "or 40/80,80/200 (default brain,subdural,bone; ignored by 8-bit image datasets)",
    )
    out.add_argument(
        "--shard-size", type=int, default=None, help="examples per shard (default: ~64 MiB)"
    )
    split = parser.add_argument_group("split (an official split shipped with the data is kept)")
    split.add_argument("--val-fraction", type=float, default=0.15)
    split.add_argument("--test-fraction", type=float, default=0.15)
    split.add_argument("--seed", type=int, default=0)
    run = parser.add_argument_group("run")
    run.add_argument("--workers", type=int, default=1, help="decode processes (default 1)")
    run.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable file instead of quarantining it",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from pipelines.records import PrepareError, prepare

    try:
        prepare(
            args.dataset,
            args.data_dir,
            args.out,
            image_size=args.image_size,
            windows=args.windows,
            workers=args.workers,
            strict=args.strict,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            seed=args.seed,
            progress=not args.quiet,
            shard_size=args.shard_size,
            options=dict(args.option) or None,
        )
    except (PrepareError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
