"""The evaluation, as named steps: data, label pairs, predictions, operating point, scores, files.

:func:`evaluate` reads top to bottom as the order of the work: find (or prepare) the cache, pair
the model's outputs with the dataset's labels, predict the split (optionally through the serving
signatures), choose the operating point on validation data only, score per image or per scan,
then write the predictions, ``report.json`` / ``report.md``, the plots and the model cards.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines import label_maps
from pipelines.cache import read_info
from pipelines.datasets import get_adapter, list_adapters
from zoo import card as card_mod
from zoo import metrics as M
from zoo.evaluation.predictions import (
    gather_predictions,
    gather_serving_predictions,
    prepare_cache,
    select_pairs,
)
from zoo.evaluation.report import (
    compute_metrics,
    render_report,
    write_plots,
    write_predictions,
    write_scan_predictions,
)
from zoo.evaluation.source import EvaluationError, ModelSource, load_model_source

__all__ = ["evaluate", "Options", "OperatingPoint", "Scores", "operating_point", "score",
           "build_report"]


@dataclass(frozen=True)
class Options:
    """How to score: what :func:`evaluate` was asked, after its checks."""

    split: str
    aggregate: str | None  # None, "max" or "topk_mean"
    top_k: int
    temperature: bool
    threshold_rule: str
    n_boot: int
    seed: int
    batch_size: int


@dataclass
class OperatingPoint:
    """Thresholds (one per paired label), the temperature (or None) and where they came from."""

    thresholds: np.ndarray
    temperature: float | None
    source: dict


@dataclass
class Scores:
    """One level's numbers: per image, or per scan when slices are aggregated."""

    level: str  # "image" or "scan"
    y_true: np.ndarray
    y_prob: np.ndarray  # after the temperature
    groups: np.ndarray  # the patient of each scored unit (bootstrap resamples them)
    scan_ids: np.ndarray | None
    metrics: dict
    image_true: np.ndarray  # per image, the paired labels (what predictions.csv holds)
    image_prob: np.ndarray  # per image, after the temperature


def evaluate(model, *, dataset=None, data_dir=None, cache=None, split="test", out,
             aggregate=None, top_k: int = 3, temperature: bool = False, n_boot: int = 1000,
             seed: int = 0, batch_size: int = 32, label_map=None, update_card: bool = True,
             threshold_rule: str = "youden", val_fraction=None, test_fraction=None,
             plots: bool = True, through: str = "cache") -> dict:
    """Run the whole evaluation and write its files into ``out``; returns the report dict.

    ``through="serving"`` scores an export by sending the original files through the signatures
    a TF Serving client calls (:func:`gather_serving_predictions`) instead of the cache, and
    reports how far those probabilities are from the cache path's (``report["serving"]``).
    Thresholds and temperature still come from the cache's validation split.
    """
    if through not in ("cache", "serving"):
        raise EvaluationError(f"--through {through!r} must be cache or serving.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = model if isinstance(model, ModelSource) else load_model_source(model)
    if cache is None:
        cache, data_dir = _prepared_cache(source, dataset, data_dir, out,
                                          val_fraction=val_fraction, test_fraction=test_fraction)
    cache = Path(cache)
    info = read_info(cache)
    dataset = _dataset_of(cache, info, dataset)
    pairs = _pair_labels(source, info, label_map)
    opts = Options(split=split, aggregate=_aggregation(aggregate, dataset), top_k=top_k,
                   temperature=temperature, threshold_rule=threshold_rule, n_boot=n_boot,
                   seed=seed, batch_size=batch_size)

    test = gather_predictions(source, cache, split, batch_size=batch_size)
    serving = None
    if through == "serving":
        serving = _through_serving(source, test, info, dataset, data_dir, batch_size)
    op = operating_point(source, cache, info, pairs, test, opts, dataset)
    scores = score(source, test, pairs, op, opts)

    write_predictions(out / "predictions.csv", test, pairs, source.labels, scores.image_true,
                      scores.image_prob)
    if scores.scan_ids is not None:
        write_scan_predictions(out / "predictions_scan.csv", scores.scan_ids, scores.groups,
                               [p.model for p in pairs], scores.y_true, scores.y_prob)
    report = build_report(source, cache, test, pairs, op, scores, dataset=dataset, split=split,
                          aggregate=opts.aggregate, top_k=top_k, through=through, serving=serving)
    if plots:
        report["plots"] = write_plots(out, scores.y_true, scores.y_prob, [p.model for p in pairs],
                                      scores.metrics, op.thresholds)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_report(report))
    card_mod.write_card(out, card_mod.card_from_report(report, source))
    if update_card and source.version_dir is not None:
        card_mod.update_export_card(source.version_dir, report, source)
    return report


# --------------------------------------------------------------------------------------------
# Data and labels
# --------------------------------------------------------------------------------------------


def _prepared_cache(source: ModelSource, dataset, data_dir, out: Path, *, val_fraction,
                    test_fraction) -> tuple[Path, Path]:
    """No --cache: prepare ``dataset`` into ``out/cache`` (splits as the run had them); returns
    the cache and the data folder (the adapter's own when none was given)."""
    if dataset is None:
        raise EvaluationError("Pass --dataset NAME with --data-dir DIR, or --cache DIR.")
    adapter = get_adapter(dataset)  # unknown name -> the adapters' clear error
    if data_dir is None:
        if adapter.default_data_dir is None:
            raise EvaluationError(f"--dataset {dataset} needs --data-dir (the dataset's folder) "
                                  "or --cache (a prepared cache).")
        data_dir = adapter.ensure_data()
    cfg = source.config or {}
    cache = prepare_cache(
        source, dataset, data_dir, out,
        val_fraction=cfg.get("val_fraction", 0.15) if val_fraction is None else val_fraction,
        test_fraction=cfg.get("test_fraction", 0.15) if test_fraction is None else test_fraction,
        seed=cfg.get("seed", 0))
    return cache, data_dir


def _dataset_of(cache: Path, info: dict, dataset):
    """The dataset name: the one asked for, which must be the cache's, else the cache's."""
    if dataset is not None and info.get("dataset") not in (None, dataset):
        raise EvaluationError(
            f"The cache {cache} holds dataset {info.get('dataset')!r}, not {dataset!r}; pass the "
            "matching --dataset or another --cache."
        )
    return dataset or info.get("dataset")


def _pair_labels(source: ModelSource, info: dict, label_map) -> list:
    """The model's outputs paired with the cache's label columns (:mod:`pipelines.label_maps`)."""
    try:
        given = (label_maps.parse_label_map(label_map)
                 if isinstance(label_map, (str, type(None))) else label_map)
        return label_maps.resolve(source.labels, info["labels"], given=given)
    except label_maps.LabelMappingError as err:
        raise EvaluationError(str(err)) from None


def _aggregation(aggregate, dataset) -> str | None:
    """None (per image), "max" or "topk_mean"; unset: per scan for datasets labelled per scan."""
    if aggregate is None:
        if str(dataset) in list_adapters():
            aggregate = get_adapter(str(dataset)).scan_labelled
    if aggregate not in (None, "none", "max", "topk_mean"):
        raise EvaluationError(f"--aggregate {aggregate!r} must be max or topk_mean.")
    return None if aggregate == "none" else aggregate


def _through_serving(source: ModelSource, test: dict, info: dict, dataset, data_dir,
                     batch_size: int) -> dict:
    """Replace the cache-path probabilities of ``test`` by the serving signatures' on the
    original files; returns the ``report["serving"]`` block (requests and the difference)."""
    if dataset is None or data_dir is None:
        raise EvaluationError(
            "--through serving sends the original files: pass --dataset NAME and --data-dir "
            "DIR (the folder the cache was prepared from)."
        )
    served_probs, counts = gather_serving_predictions(
        source, dataset, data_dir, test["id"], batch_size=batch_size,
        options=info.get("settings", {}).get("options") or None,
        row_keyed=info.get("ids") == "row keys")
    gap = np.abs(served_probs - test["y_prob"])
    test["y_prob"] = served_probs
    return {"requests": counts, "images": int(len(gap)),
            "max_abs_diff_vs_cache": float(gap.max()) if gap.size else 0.0,
            "mean_abs_diff_vs_cache": float(gap.mean()) if gap.size else 0.0}


# --------------------------------------------------------------------------------------------
# Operating point: thresholds and temperature from validation data only
# --------------------------------------------------------------------------------------------


def _multiclass(source: ModelSource, pairs) -> bool:
    """Softmax temperature needs every output; a subset of softmax outputs is rescaled per class."""
    return (source.task == "multi-class" or (
        source.task == "binary" and len(source.labels) == 2)) and len(pairs) == len(source.labels)


def operating_point(source: ModelSource, cache: Path, info: dict, pairs, test: dict,
                    opts: Options, dataset) -> OperatingPoint:
    """Thresholds and temperature: fitted on the cache's ``val`` split when there is one and it
    is not the evaluated split; else the model card's stored operating point; else 0.5 (or,
    when the evaluated split is ``val`` itself, thresholds chosen on it: optimistic, and the
    report says so).
    """
    if opts.split not in ("val", "all") and info["splits"].get("val", 0) > 0:
        return _fit_on_validation(source, cache, pairs, test, opts, dataset)
    labels = [p.model for p in pairs]
    stored = ((source.card or {}).get("operating_point") or {})
    if stored.get("thresholds") and all(lbl in stored["thresholds"] for lbl in labels):
        thresholds = np.array([float(stored["thresholds"][lbl]) for lbl in labels])
        temp_value = (float(stored["temperature"])
                      if opts.temperature and stored.get("temperature") else None)
        return OperatingPoint(thresholds, temp_value,
                              {"kind": "model card", "from": stored.get("source")})
    thresholds = np.full(len(labels), 0.5)
    why = ("the evaluated split is the validation split" if opts.split == "val" else
           "no validation split and no stored operating point")
    op_source = {"kind": "fixed 0.5", "why": why}
    if opts.split == "val":
        yt, yp = select_pairs(test, pairs, source.labels)
        thresholds = M.choose_thresholds(yt, yp, rule=opts.threshold_rule)
        op_source = {"kind": "the evaluated val split itself (optimistic)",
                     "rule": opts.threshold_rule}
    if opts.temperature:
        print("warning: --temperature needs a validation split; not applied.", file=sys.stderr)
    return OperatingPoint(thresholds, None, op_source)


def _fit_on_validation(source: ModelSource, cache: Path, pairs, test: dict, opts: Options,
                       dataset) -> OperatingPoint:
    """Thresholds (and the temperature) chosen on the val split, at the level that is scored."""
    val = gather_predictions(source, cache, "val", batch_size=opts.batch_size)
    overlap = set(val["patient_id"]) & set(test["patient_id"])
    if overlap:
        raise EvaluationError(
            f"{len(overlap)} patient(s) appear in both the val and the {opts.split} split of "
            f"{cache}; re-prepare the cache with patient-grouped splits."
        )
    vt, vp = select_pairs(val, pairs, source.labels)
    if opts.aggregate:
        _, vt, vp = M.aggregate_by_group(val["study_id"], vt, vp, how=opts.aggregate,
                                         top_k=opts.top_k)
    temp_value = None
    if opts.temperature:
        multiclass = _multiclass(source, pairs)
        temp_value = M.fit_temperature(vt, vp, multiclass=multiclass)
        vp = M.apply_temperature(vp, temp_value, multiclass=multiclass)
    thresholds = M.choose_thresholds(vt, vp, rule=opts.threshold_rule)
    return OperatingPoint(thresholds, temp_value,
                          {"kind": "validation split", "dataset": dataset, "split": "val",
                           "rule": opts.threshold_rule, "n": int(len(vt))})


def _calibrated(source: ModelSource, pairs, y_prob, op: OperatingPoint):
    if op.temperature is None:
        return y_prob
    return M.apply_temperature(y_prob, op.temperature, multiclass=_multiclass(source, pairs))


# --------------------------------------------------------------------------------------------
# Scores and the report
# --------------------------------------------------------------------------------------------


def _patients_of(groups, patient_ids):
    """Map each aggregated scan id to its patient (first occurrence)."""
    first = {}
    for g, p in zip(groups, patient_ids):
        first.setdefault(g, p)
    return first


def score(source: ModelSource, test: dict, pairs, op: OperatingPoint, opts: Options) -> Scores:
    """Every number for the scored level: per image, or per scan (``opts.aggregate``)."""
    yt, yp = select_pairs(test, pairs, source.labels)
    labels = [p.model for p in pairs]
    yp_cal = _calibrated(source, pairs, yp, op)
    scores = Scores("image", yt, yp_cal, test["patient_id"], None, {}, yt, yp_cal)
    if opts.aggregate:
        patients = _patients_of(test["study_id"], test["patient_id"])
        scan_ids, eval_t, eval_p = M.aggregate_by_group(test["study_id"], yt, yp_cal,
                                                        how=opts.aggregate, top_k=opts.top_k)
        scores = Scores("scan", eval_t, eval_p, np.array([patients[s] for s in scan_ids]),
                        scan_ids, {}, yt, yp_cal)
    task = source.task if len(labels) == len(source.labels) else "multi-label"
    scores.metrics = compute_metrics(scores.y_true, scores.y_prob, labels=labels,
                                     groups=scores.groups, thresholds=op.thresholds, task=task,
                                     n_boot=opts.n_boot, seed=opts.seed)
    if op.temperature is not None:
        raw_t, raw_p = yt, yp
        if opts.aggregate:
            _, raw_t, raw_p = M.aggregate_by_group(test["study_id"], yt, yp, how=opts.aggregate,
                                                   top_k=opts.top_k)
        scores.metrics["calibration_before_temperature"] = M.nan_to_none({
            "ece": M.expected_calibration_error(raw_t, raw_p),
            "brier": M.brier_score(raw_t, raw_p),
        })
    return scores


def build_report(source: ModelSource, cache: Path, test: dict, pairs, op: OperatingPoint,
                 scores: Scores, *, dataset, split: str, aggregate, top_k: int, through: str,
                 serving: dict | None) -> dict:
    """The ``report.json`` document (NaN written as null): the model, the data, the label
    mapping, the operating point and where it came from, the metrics."""
    labels = [p.model for p in pairs]
    report = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {"kind": source.kind, "path": os.fspath(source.path), "name": source.model_name,
                  "labels": list(source.labels), "task": source.task,
                  "input_shape": list(source.input_shape), "windows": source.windows},
        "data": {"dataset": dataset, "cache": os.fspath(cache), "split": split,
                 "splits_used": test["splits"], "images": int(len(test["id"])),
                 "patients": int(len(np.unique(test["patient_id"]))),
                 "level": scores.level, "aggregate": aggregate,
                 "top_k": int(top_k) if aggregate == "topk_mean" else None,
                 "scan_key": "study_id" if aggregate else None},
        "label_mapping": label_maps.describe(pairs),
        "operating_point": {"thresholds": dict(zip(labels, map(float, op.thresholds))),
                            "source": op.source, "temperature": op.temperature},
        "metrics": scores.metrics,
        "through": through,
    }
    if serving is not None:
        report["serving"] = serving
    return M.nan_to_none(report)
