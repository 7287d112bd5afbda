"""Validation metrics for the loop: predictions gathered over a split, scored with sklearn."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from zoo import metrics as zm

__all__ = ["score", "weights_digest", "format_auroc_table"]


def within_source(y_true: np.ndarray, y_prob: np.ndarray, groups) -> list[float]:
    """Per-label AUROC for a corpus (``groups``: label -> source): each label scored on its own
    source's images only, with the probabilities renormalised over that source's classes, as
    the masked softmax of :func:`zoo.training.losses.make_loss` trains them. Scoring a label
    against other sources' images would rank outputs that no loss ever touched."""
    g = np.asarray(groups)
    source_of = np.where(y_true.sum(axis=1) > 0, g[np.argmax(y_true, axis=1)], -1)
    per = []
    for k in range(y_true.shape[1]):
        rows = source_of == g[k]
        own = y_prob[rows][:, g == g[k]]
        p = y_prob[rows, k] / np.maximum(own.sum(axis=1), 1e-12)
        per.append(float(zm.auroc(y_true[rows, k], p)) if rows.any() else float("nan"))
    return per


def score(labels, y_true: np.ndarray, y_prob: np.ndarray, loss_value: float, groups=None) -> dict:
    """Per-label and mean AUROC (NaN -> None when a label has one class only) and the loss;
    with ``groups`` (a corpus) each label is scored within its own source (:func:`within_source`)."""
    per = zm.per_class_auroc(y_true, y_prob) if groups is None else within_source(y_true, y_prob, groups)
    defined = [v for v in per if math.isfinite(v)]
    mean = float(np.mean(defined)) if defined else float("nan")
    return {
        "loss": float(loss_value),
        "auroc_mean": zm.nan_to_none(mean),
        "auroc": {name: zm.nan_to_none(float(v)) for name, v in zip(labels, per)},
        "examples": int(len(y_true)),
    }


def weights_digest(model) -> str:
    """sha256 over every weight's float32 bytes: equal digests mean identical models."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return h.hexdigest()


def format_auroc_table(scores: dict, split: str) -> str:
    rows = [f"{split} AUROC per label:"]
    width = max([len(k) for k in scores["auroc"]] + [4])
    for name, value in scores["auroc"].items():
        rows.append(f"  {name:<{width}}  {'n/a (one class only)' if value is None else f'{value:.4f}'}")
    mean = scores["auroc_mean"]
    rows.append(f"  {'mean':<{width}}  {'n/a' if mean is None else f'{mean:.4f}'}")
    return "\n".join(rows)
