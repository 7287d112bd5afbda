"""Evaluate an export or a training run on a dataset split: metrics with intervals, plots, card.

    python -m zoo.evaluate --model saved_models/ichnet/1 --dataset synthetic --split test --out eval/
    python -m zoo.evaluate --model runs/ichnet-synthetic --cache data/cache/synth --split test --out e/
    python -m zoo.evaluate --model saved_models/ichnet/1 --dataset cq500 --data-dir ../cq500 \\
        --split all --aggregate topk_mean --top-k 3 --out eval-cq500/      # external validation

What it writes into ``--out``:

* ``predictions.csv``: ``id, patient_id``, one truth column per label (named as the label) and
  ``prob_<label>`` per model output (``predictions_scan.csv`` too when slices are aggregated);
* ``report.json`` and ``report.md``: per-class AUROC with 95% bootstrap intervals that resample
  patients (not images), macro and micro AUROC, PR-AUC, sensitivity / specificity / precision /
  F1 / accuracy at thresholds chosen on the validation split, ECE and Brier score, the optional
  temperature, the label mapping and where every number came from;
* ``roc_<label>.png`` per class, ``reliability.png``, ``confusion.png`` (single-label tasks);
* ``model_card.md`` / ``model_card.json``; for an export the card in its ``assets.extra`` is
  updated too (``--no-card`` leaves it alone).

Operating thresholds and the temperature are fitted on the ``val`` split of the same cache and
never on the evaluated split. With ``--split all`` (external data: every patient is unseen, so
all of them are evaluated) or a dataset without a validation split, they come from the model
card, where an earlier evaluation on the development data stored them ("operating_point"), or
else default to 0.5, and the report says which.

Datasets labelled per scan (CQ500) are scored per scan: slice probabilities are aggregated by
study (``--aggregate max`` or ``topk_mean`` with ``--top-k``), labels by max. The model's outputs
are paired with the dataset's columns by :mod:`pipelines.label_maps` (same name, the RSNA <->
CQ500 / PhysioNet tables, or ``--label-map model=dataset``).

The package, in the order of the work: :mod:`~zoo.evaluation.source` (:class:`ModelSource`: an
export or a run dir, also what :mod:`zoo.explain` and :mod:`zoo.card` read),
:mod:`~zoo.evaluation.predictions` (a cache's split, or the original files through the serving
signatures), :mod:`~zoo.evaluation.run` (:func:`evaluate` and its steps),
:mod:`~zoo.evaluation.report` (metrics tables, plots, ``report.md``) and
:mod:`~zoo.evaluation.cli`. ``python -m zoo.evaluate`` is the command; ``zoo.evaluate`` re-exports
this API.
"""

from zoo.evaluation.cli import build_parser, main
from zoo.evaluation.predictions import (
    SERVING_BYTES_SUFFIXES,
    gather_predictions,
    gather_serving_predictions,
    prepare_cache,
    select_pairs,
)
from zoo.evaluation.report import compute_metrics, confusion, render_report, summary_lines
from zoo.evaluation.run import evaluate
from zoo.evaluation.source import EvaluationError, ModelSource, load_model_source

__all__ = [
    "EvaluationError",
    "ModelSource",
    "load_model_source",
    "prepare_cache",
    "gather_predictions",
    "gather_serving_predictions",
    "select_pairs",
    "SERVING_BYTES_SUFFIXES",
    "compute_metrics",
    "confusion",
    "render_report",
    "summary_lines",
    "evaluate",
    "build_parser",
    "main",
]
