"""Classification metrics on gathered predictions, with patient-level bootstrap intervals.

Pure NumPy / scikit-learn, no TensorFlow: used by training (validation AUROC), evaluation
(reports with confidence intervals) and the benchmarks.

Conventions: ``y_true`` is ``[N, K]`` of 0/1 (multi-label, or one-hot for multi-class) and
``y_prob`` is ``[N, K]`` of probabilities. A metric that is undefined (AUROC of a class with no
positives or no negatives) is ``float("nan")`` in arrays and ``None`` in reports, never a made-up
number.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "auroc",
    "per_class_auroc",
    "macro_micro_auroc",
    "pr_auc",
    "bootstrap_ci",
    "choose_thresholds",
    "threshold_metrics",
    "expected_calibration_error",
    "brier_score",
    "fit_temperature",
    "apply_temperature",
    "aggregate_by_group",
    "nan_to_none",
]


def _as_2d(a, name):
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be [N, K] or [N], got shape {a.shape}.")
    return a


def _check(y_true, y_prob):
    y_true, y_prob = _as_2d(y_true, "y_true"), _as_2d(y_prob, "y_prob")
    if y_true.shape != y_prob.shape:
        raise ValueError(f"y_true {y_true.shape} and y_prob {y_prob.shape} differ in shape.")
    if len(y_true) == 0:
        raise ValueError("No predictions to score: the split is empty.")
    return y_true, y_prob


def auroc(y_true_1d, y_prob_1d) -> float:
    """AUROC of one binary column; NaN when only one class is present (undefined)."""
    y = np.asarray(y_true_1d)
    if y.min() == y.max():
        return float("nan")
    return float(skm.roc_auc_score(y, np.asarray(y_prob_1d)))


def per_class_auroc(y_true, y_prob) -> np.ndarray:
    y_true, y_prob = _check(y_true, y_prob)
    return np.array([auroc(y_true[:, k], y_prob[:, k]) for k in range(y_true.shape[1])])


def macro_micro_auroc(y_true, y_prob) -> tuple[float, float]:
    """Macro (mean of defined per-class AUROCs) and micro (pooled) AUROC."""
    y_true, y_prob = _check(y_true, y_prob)
    per = per_class_auroc(y_true, y_prob)
    macro = float(np.nanmean(per)) if np.any(np.isfinite(per)) else float("nan")
    micro = auroc(y_true.ravel(), y_prob.ravel())
    return macro, micro


def pr_auc(y_true, y_prob) -> np.ndarray:
    """Average precision per class; NaN for a class without positives."""
    y_true, y_prob = _check(y_true, y_prob)
    out = []
    for k in range(y_true.shape[1]):
        if y_true[:, k].sum() == 0:
            out.append(float("nan"))
        else:
            out.append(float(skm.average_precision_score(y_true[:, k], y_prob[:, k])))
    return np.array(out)


def bootstrap_ci(
    metric,
    y_true,
    y_prob,
    groups=None,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
):
    """Percentile bootstrap interval of ``metric(y_true, y_prob) -> array[K]``, resampling groups.

    ``groups`` (e.g. patient ids, one per row) are resampled with replacement and all their rows
    come along, so images of one patient never count as independent evidence. Without groups every
    row is its own group. Returns ``(low[K], high[K])``; NaN where fewer than half of the resamples
    gave a defined value.
    """
    y_true, y_prob = _check(y_true, y_prob)
    groups = np.arange(len(y_true)) if groups is None else np.asarray(groups)
    if len(groups) != len(y_true):
        raise ValueError(f"groups has {len(groups)} entries for {len(y_true)} predictions.")
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), size=len(uniq))
        rows = np.concatenate([members[g] for g in pick])
        stats.append(np.atleast_1d(metric(y_true[rows], y_prob[rows])))
    stats = np.asarray(stats, dtype=np.float64)
    defined = np.isfinite(stats).sum(axis=0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
        low = np.nanpercentile(np.where(np.isfinite(stats), stats, np.nan), 100 * alpha / 2, axis=0)
        high = np.nanpercentile(
            np.where(np.isfinite(stats), stats, np.nan), 100 * (1 - alpha / 2), axis=0
        )
    bad = defined < n_boot / 2
    low[bad] = np.nan
    high[bad] = np.nan
    return low, high


def choose_thresholds(y_true, y_prob, *, rule: str = "youden") -> np.ndarray:
    """Per-class operating thresholds, to be chosen on the VALIDATION split only.

    ``youden`` maximises sensitivity + specificity - 1; ``f1`` maximises F1. A class that is
    constant on validation falls back to 0.5.
    """
    y_true, y_prob = _check(y_true, y_prob)
    out = []
    for k in range(y_true.shape[1]):
        y, p = y_true[:, k], y_prob[:, k]
        if y.min() == y.max():
            out.append(0.5)
            continue
        if rule == "youden":
            fpr, tpr, thr = skm.roc_curve(y, p)
            best = int(np.argmax(tpr - fpr))
            out.append(float(min(max(thr[best], 0.0), 1.0)))
        elif rule == "f1":
            prec, rec, thr = skm.precision_recall_curve(y, p)
            f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
            best = int(np.argmax(f1[:-1])) if len(thr) else 0
            out.append(float(thr[best]) if len(thr) else 0.5)
        else:
            raise ValueError(f"Unknown threshold rule {rule!r}; use 'youden' or 'f1'.")
    return np.array(out)


def threshold_metrics(y_true, y_prob, thresholds) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, precision, F1 and accuracy per class at ``thresholds``."""
    y_true, y_prob = _check(y_true, y_prob)
    pred = y_prob >= np.asarray(thresholds)[None, :]
    pos = y_true > 0.5
    tp = (pred & pos).sum(0).astype(float)
    tn = (~pred & ~pos).sum(0).astype(float)
    fp = (pred & ~pos).sum(0).astype(float)
    fn = (~pred & pos).sum(0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        prec = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    acc = (tp + tn) / len(y_true)
    return {"sensitivity": sens, "specificity": spec, "precision": prec, "f1": f1, "accuracy": acc}


def expected_calibration_error(y_true, y_prob, *, bins: int = 15) -> float:
    """ECE over all (row, class) pairs with equal-width probability bins."""
    y_true, y_prob = _check(y_true, y_prob)
    y, p = y_true.ravel(), y_prob.ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(p[sel].mean() - y[sel].mean())
    return float(ece)


def reliability_curve(y_true, y_prob, *, bins: int = 15):
    """(mean predicted, observed frequency, count) per non-empty bin, pooled over classes."""
    y_true, y_prob = _check(y_true, y_prob)
    y, p = y_true.ravel(), y_prob.ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = [(p[idx == b].mean(), y[idx == b].mean(), int((idx == b).sum())) for b in range(bins) if (idx == b).any()]
    return np.array(rows, dtype=float).reshape(-1, 3)


def brier_score(y_true, y_prob) -> float:
    y_true, y_prob = _check(y_true, y_prob)
    return float(np.mean((y_prob - y_true) ** 2))


def _logit(p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def apply_temperature(y_prob, temperature: float, *, multiclass: bool = False) -> np.ndarray:
    """Rescale probabilities by a temperature (sigmoid per class, or softmax across classes)."""
    y_prob = _as_2d(y_prob, "y_prob")
    if multiclass:
        logits = np.log(np.clip(y_prob, 1e-12, 1.0)) / temperature
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-_logit(y_prob) / temperature))


def fit_temperature(y_true, y_prob, *, multiclass: bool = False) -> float:
    """Temperature minimising the negative log-likelihood on VALIDATION predictions."""
    y_true, y_prob = _check(y_true, y_prob)

    def nll(t):
        q = np.clip(apply_temperature(y_prob, t, multiclass=multiclass), 1e-12, 1 - 1e-12)
        if multiclass:
            return float(-np.mean(np.sum(y_true * np.log(q), axis=1)))
        return float(-np.mean(y_true * np.log(q) + (1 - y_true) * np.log(1 - q)))

    grid = np.exp(np.linspace(math.log(0.05), math.log(20.0), 200))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    # refine around the best grid point
    fine = np.linspace(best / 1.05, best * 1.05, 41)
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def aggregate_by_group(groups, y_true, y_prob, *, how: str = "max", top_k: int = 3):
    """Slice -> scan aggregation: one row per group (scan), labels by max, probs by ``how``.

    ``how`` is ``"max"`` or ``"topk_mean"`` (mean of the ``top_k`` highest slice probabilities).
    Returns ``(group_ids, y_true[G, K], y_prob[G, K])`` in order of first appearance.
    """
    groups = np.asarray(groups)
    y_true, y_prob = _check(y_true, y_prob)
    order, first = np.unique(groups, return_index=True)
    ids = order[np.argsort(first)]
    t_out, p_out = [], []
    for g in ids:
        sel = groups == g
        t_out.append(y_true[sel].max(axis=0))
        p = y_prob[sel]
        if how == "max":
            p_out.append(p.max(axis=0))
        elif how == "topk_mean":
            k = min(top_k, len(p))
            p_out.append(np.sort(p, axis=0)[-k:].mean(axis=0))
        else:
            raise ValueError(f"Unknown aggregation {how!r}; use 'max' or 'topk_mean'.")
    return ids, np.array(t_out), np.array(p_out)


def nan_to_none(value):
    """JSON-friendly: NaN -> None, numpy -> python, recursively."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [nan_to_none(v) for v in np.asarray(value, dtype=object).tolist()] if isinstance(
            value, np.ndarray
        ) else [nan_to_none(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
