"""The command line, ``python -m zoo.export``: a registered model or a training run directory in,
one export version out.

    python -m zoo.export --model ichnet --input-shape 96,96,3 --format savedmodel onnx
    python -m zoo.export --run-dir runs/ichnet --export-dir saved_models
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import zoo
from pipelines.cli import check_writable
from zoo.export.archive import FORMATS, export_saved_model
from zoo.export.signatures import MAX_BATCH
from zoo.models.weights import load_weights
from zoo.training.rundir import read_run


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"--input-shape must be H,W,C as three positive integers (e.g. 96,96,3), got {text!r}."
        )
    return shape


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.export",
        description="Export a model to saved_models/<name>/<version>/ for TF Serving (and ONNX).",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="registered model name (see zoo.list_models())")
    src.add_argument("--run-dir", type=Path, help="training run directory (config.yaml + weights)")
    parser.add_argument("--weights", type=Path, help="local .weights.h5 or .keras file")
    parser.add_argument("--input-shape", type=_parse_shape, metavar="H,W,C",
                        help="model input (default: the model's / the run's)")
    parser.add_argument("--labels", help="comma-separated class names (default: the model's / run's)")
    parser.add_argument("--name", help="served model name (default: the model name)")
    parser.add_argument("--export-dir", type=Path, default=Path("saved_models"),
                        help="TF Serving model root (default: saved_models)")
    parser.add_argument("--format", nargs="+", default=["savedmodel"], choices=FORMATS,
                        dest="formats", help="savedmodel (always) and/or onnx")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH,
                        help="the most images one serving request may hold; a larger batch is "
                        f"refused with InvalidArgument (default {MAX_BATCH})")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights} does not exist; pass a local .weights.h5 or .keras file.")
    try:
        check_writable(args.export_dir, "--export-dir")
        if args.run_dir is not None:
            if not args.run_dir.is_dir():
                parser.error(f"--run-dir {args.run_dir} is not a directory; pass a training run directory.")
            run = read_run(args.run_dir, weights=args.weights, input_shape=args.input_shape,
                           labels=labels)
            model, name, labels, config = run.model, run.model_name, list(run.labels), run.config
        else:
            if args.model not in zoo.list_models():
                zoo.model_info(args.model)  # raises the registry's message with close matches
            labels = labels or list(zoo.model_info(args.model, count_params=False).get("labels") or ())
            model = zoo.get_model(args.model, input_shape=args.input_shape,
                                  num_classes=len(labels) if labels else None)
            if args.weights is not None:
                load_weights(model, args.weights)
            name, config = args.model, None
        if not labels:
            parser.error("the model has no default labels; pass --labels a,b,c.")
        path = export_saved_model(model, args.export_dir, model_name=args.name or name,
                                  labels=labels, config=config, formats=args.formats,
                                  max_batch=args.max_batch)
    except (KeyError, ValueError, FileNotFoundError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(f"Exported {args.name or name} to {path}")
    for f in ("model.onnx",):
        if (path / f).is_file():
            print(f"  + {path / f}")
    print(f"  TF Serving config: {args.export_dir / 'models.config'}")
    return 0
