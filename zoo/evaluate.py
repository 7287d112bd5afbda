"""``python -m zoo.evaluate``: evaluate an export or a training run on a dataset split.

The command and this import path stay; the code lives in the package :mod:`zoo.evaluation`
(model source, predictions, the report, the command line), whose public API is re-exported here.

    python -m zoo.evaluate --model saved_models/ichnet/1 --dataset synthetic --split test --out eval/
"""

from zoo.evaluation import (  # noqa: F401  (the public API, as before the split)
    SERVING_BYTES_SUFFIXES,
    EvaluationError,
    ModelSource,
    build_parser,
    compute_metrics,
    confusion,
    evaluate,
    gather_predictions,
    gather_serving_predictions,
    load_model_source,
    main,
    render_report,
)

__all__ = [
    "ModelSource",
    "load_model_source",
    "gather_predictions",
    "compute_metrics",
    "evaluate",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
