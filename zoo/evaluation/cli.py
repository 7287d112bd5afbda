"""The command line, ``python -m zoo.evaluate``: flags in, :func:`zoo.evaluation.evaluate` run,
one summary printed; every error a user can cause is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.cache import PrepareError
from pipelines.cli import check_writable
from zoo.evaluation.report import summary_lines
from zoo.evaluation.run import evaluate

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zoo.evaluate",
        description="Evaluate an export or a training run on a dataset split: AUROC with patient "
        "bootstrap CIs, thresholds from validation, calibration, plots, model card.",
    )
    p.add_argument("--model", required=True, type=Path,
                   help="export (saved_models/<model>/<version>) or training run directory")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help="dataset adapter name (e.g. synthetic, rsna, cq500)")
    data.add_argument("--data-dir", type=Path, help="the dataset's folder (prepared into OUT/cache)")
    data.add_argument("--cache", type=Path, help="a prepared cache (python -m pipelines.prepare)")
    data.add_argument("--split", default="test",
                      help="split to evaluate: test (default), val, train, or all (external data)")
    data.add_argument("--val-fraction", type=float, help="when preparing: default the run's")
    data.add_argument("--test-fraction", type=float, help="when preparing: default the run's")
    data.add_argument("--label-map", help="explicit pairs MODEL_LABEL=DATASET_LABEL,...")
    scan = p.add_argument_group("scan level (external validation)")
    scan.add_argument("--aggregate", choices=("none", "max", "topk_mean"),
                      help="slice -> scan aggregation (default: max for cq500, none otherwise)")
    scan.add_argument("--top-k", type=int, default=3, help="k for topk_mean (default 3)")
    metrics = p.add_argument_group("metrics")
    metrics.add_argument("--bootstrap", type=int, default=1000,
                         help="bootstrap resamples of patients for 95%% CIs (default 1000; 0 = off)")
    metrics.add_argument("--temperature", action="store_true",
                         help="fit a temperature on the val split and apply it")
    metrics.add_argument("--threshold-rule", choices=("youden", "f1"), default="youden")
    metrics.add_argument("--seed", type=int, default=0)
    p.add_argument("--through", choices=("cache", "serving"), default="cache",
                   help="score the cache (default) or send the original files through the export's "
                   "serving signatures, as a TF Serving client does, and report the difference")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--no-card", action="store_true", help="do not update the export's model card")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.cache is None and args.dataset is None:
        print("error: pass --dataset NAME (with --data-dir DIR) or --cache DIR.", file=sys.stderr)
        return 2
    if args.top_k < 1:
        print(f"error: --top-k must be at least 1, got {args.top_k}.", file=sys.stderr)
        return 2
    try:
        check_writable(args.out, "--out")
        report = evaluate(
            args.model, dataset=args.dataset, data_dir=args.data_dir, cache=args.cache,
            split=args.split, out=args.out, aggregate=args.aggregate, top_k=args.top_k,
            temperature=args.temperature, n_boot=args.bootstrap, seed=args.seed,
            batch_size=args.batch_size, label_map=args.label_map, update_card=not args.no_card,
            threshold_rule=args.threshold_rule, val_fraction=args.val_fraction,
            test_fraction=args.test_fraction, through=args.through,
        )
    except (ValueError, FileNotFoundError, KeyError, PrepareError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {message}", file=sys.stderr)
        return 2
    for line in summary_lines(report):
        print(line)
    print(f"Wrote {args.out}/report.md, report.json, predictions.csv and plots.")
    return 0
