"""Decode a dataset once into a TFRecord cache: ``python -m pipelines.prepare``.

The command line only: flags -> :func:`pipelines.cache.prepare` (the cache format, the writer
and the decode workers live in :mod:`pipelines.cache`).

Example::

    python -m pipelines.prepare --dataset synthetic --data-dir data/synthetic-head-ct \\
        --out cache/synthetic-256 --image-size 256 --workers 2
    python -m pipelines.prepare ... --runner beam --workers 2          # Beam, DirectRunner
    python -m pipelines.prepare ... --runner beam \\
        --beam-options "--runner=FlinkRunner --flink_master=host:8081 --environment_type=LOOPBACK"
"""

from __future__ import annotations

import argparse
import sys

from pipelines.cache.jobs import PrepareError
from pipelines.cli import (
    OutputError,
    check_writable,
    disk_full_message,
    is_disk_full,
    quiet_tf_startup,
)
from pipelines.fs import FolderLocked


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
        help="an option of the adapter's read_manifest (repeatable), e.g. channels=3 for colour "
        "folder/csv pictures (1 grey, the default; auto: colour if any picture is); an option "
        "the adapter lacks is refused with the list of its options",
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
        "--runner",
        choices=("pool", "beam"),
        default="pool",
        help="pool: worker processes on this machine (default); beam: an Apache Beam pipeline "
        "(pip install -e '.[beam]'), the DirectRunner with --workers processes unless "
        "--beam-options says otherwise",
    )
    run.add_argument(
        "--beam-options",
        default=None,
        metavar="'--runner=FlinkRunner ...'",
        help="Beam pipeline options as one quoted string, e.g. '--runner=DataflowRunner "
        "--project=P --region=R --temp_location=gs://B/tmp'",
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable file instead of quarantining it",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    run.add_argument(
        "--keep-path-ids",
        action="store_true",
        help="csv/folder datasets: keep the file paths as ids in the cache and quarantine.csv "
        "(off by default: paths often hold MRNs or UIDs, so row keys are stored instead)",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tf_startup()  # before the writer loads TF: no C++ start-up lines (MEDZOO_DEBUG=1 shows them)
    from pipelines.cache.writer import prepare  # imports TensorFlow, so only after the line above

    try:
        check_writable(args.out, "--out")
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
            runner=args.runner,
            beam_options=args.beam_options,
            keep_path_ids=args.keep_path_ids,
        )
    except (PrepareError, OutputError, ValueError, FileNotFoundError, FolderLocked) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if not is_disk_full(error):
            raise
        print(f"error: {disk_full_message(error, args.out)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
