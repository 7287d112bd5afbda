"""The report: every number for one level (metrics tables), the files, and report.md.

:func:`compute_metrics` is pure NumPy (testable without a model); :func:`write_predictions`,
:func:`write_scan_predictions` and :func:`write_plots` write what sits next to the report;
:func:`render_report` is ``report.md`` and :func:`summary_lines` what the command line prints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import cells
from pipelines.cells import md_cell
from zoo import metrics as M
from zoo import plots

__all__ = ["compute_metrics", "confusion", "write_predictions", "write_scan_predictions",
           "write_plots", "render_report", "summary_lines"]


# --------------------------------------------------------------------------------------------
# Metrics (pure NumPy: testable without a model)
# --------------------------------------------------------------------------------------------


def compute_metrics(y_true, y_prob, *, labels, groups=None, thresholds=None, task="multi-label",
                    n_boot: int = 1000, seed: int = 0) -> dict:
    """Every number of a report for one level (images or scans).

    ``thresholds`` (one per label) must come from validation data; None means 0.5. Undefined
    values (AUROC of a class without positives) are None in the result.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    k = y_true.shape[1]
    thresholds = np.full(k, 0.5) if thresholds is None else np.asarray(thresholds, dtype=float)
    per = M.per_class_auroc(y_true, y_prob)
    macro, micro = M.macro_micro_auroc(y_true, y_prob)
    pr = M.pr_auc(y_true, y_prob)
    op = M.threshold_metrics(y_true, y_prob, thresholds)

    def all_aurocs(yt, yp):
        p = M.per_class_auroc(yt, yp)
        mac = float(np.nanmean(p)) if np.any(np.isfinite(p)) else np.nan
        return np.r_[p, mac, M.auroc(yt.ravel(), yp.ravel())]

    if n_boot > 0:
        low, high = M.bootstrap_ci(all_aurocs, y_true, y_prob, groups, n_boot=n_boot, seed=seed)
    else:
        low = high = np.full(k + 2, np.nan)
    per_class = {}
    for i, name in enumerate(labels):
        pos = int((y_true[:, i] > 0.5).sum())
        per_class[name] = {
            "auroc": per[i],
            "auroc_ci95": [low[i], high[i]],
            "auroc_status": "ok" if np.isfinite(per[i]) else (
                "undefined: no positives" if pos == 0 else "undefined: no negatives"),
            "pr_auc": pr[i],
            "positives": pos,
            "negatives": int(len(y_true) - pos),
            "threshold": float(thresholds[i]),
            **{name_: vals[i] for name_, vals in op.items()},
        }
    out = {
        "n": int(len(y_true)),
        "n_groups": int(len(np.unique(groups))) if groups is not None else int(len(y_true)),
        "per_class": per_class,
        "macro_auroc": macro,
        "macro_auroc_ci95": [low[k], high[k]],
        "micro_auroc": micro,
        "micro_auroc_ci95": [low[k + 1], high[k + 1]],
        "mean_pr_auc": float(np.nanmean(pr)) if np.any(np.isfinite(pr)) else np.nan,
        "ece": M.expected_calibration_error(y_true, y_prob),
        "brier": M.brier_score(y_true, y_prob),
        "bootstrap": {"resamples": int(n_boot), "unit": "patient" if groups is not None else
                      "image", "seed": int(seed), "interval": "95% percentile"},
    }
    single = task in ("multi-class", "binary")
    if single:
        cm, names = confusion(y_true, y_prob, thresholds, labels)
        out["confusion_matrix"] = {"classes": names, "matrix": cm.tolist()}
        out["accuracy"] = float(np.trace(cm) / max(cm.sum(), 1))
    return M.nan_to_none(out)


def confusion(y_true, y_prob, thresholds, labels):
    """Confusion matrix for single-label tasks: one output -> thresholded; two outputs (binary)
    -> the second (positive) output against its threshold; more -> argmax."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    k = y_true.shape[1]
    if k == 1:
        names = [f"not {labels[0]}", str(labels[0])]
        truth = (y_true[:, 0] > 0.5).astype(int)
        pred = (y_prob[:, 0] >= thresholds[0]).astype(int)
    elif k == 2:
        names = [str(x) for x in labels]
        truth = np.argmax(y_true, axis=1)
        pred = (y_prob[:, 1] >= thresholds[1]).astype(int)
    else:
        names = [str(x) for x in labels]
        truth, pred = np.argmax(y_true, axis=1), np.argmax(y_prob, axis=1)
    n = len(names)
    cm = np.zeros((n, n), dtype=int)
    np.add.at(cm, (truth, pred), 1)
    return cm, names


# --------------------------------------------------------------------------------------------
# Files next to the report
# --------------------------------------------------------------------------------------------


def write_predictions(path, gathered, pairs, model_labels, yt, yp_cal):
    """``predictions.csv``: id, patient, truth per paired label, ``prob_<label>`` per output
    (the paired outputs after the temperature, the others as predicted)."""
    frame = pd.DataFrame({"id": gathered["id"], "patient_id": gathered["patient_id"]})
    for i, p in enumerate(pairs):
        frame[p.model] = yt[:, i].astype(int)
    probs = gathered["y_prob"].copy()
    index = {name: i for i, name in enumerate(model_labels)}
    for i, p in enumerate(pairs):
        probs[:, index[p.model]] = yp_cal[:, i]
    for i, lbl in enumerate(model_labels):
        frame[f"prob_{lbl}"] = probs[:, i]
    cells.write_frame(frame, path, float_format="%.9g")


def write_scan_predictions(path, scan_ids, patients, labels, y_true, y_prob) -> None:
    """``predictions_scan.csv``: one row per scan (slices aggregated), truth and probability."""
    frame = pd.DataFrame({"scan_id": scan_ids, "patient_id": patients})
    for i, lbl in enumerate(labels):
        frame[lbl] = y_true[:, i].astype(int)
    for i, lbl in enumerate(labels):
        frame[f"prob_{lbl}"] = y_prob[:, i]
    cells.write_frame(frame, path)


def _safe_name(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(label))


def write_plots(out: Path, y_true, y_prob, labels, metrics, thresholds) -> list[str]:
    """ROC per class, the reliability diagram and (single-label) the confusion matrix, as PNG
    files in ``out``; returns their names."""
    written = []
    for i, lbl in enumerate(labels):
        pc = metrics["per_class"][lbl]
        ci = pc["auroc_ci95"]
        path = plots.roc_curve_png(
            y_true[:, i], y_prob[:, i], out / f"roc_{_safe_name(lbl)}.png", label=lbl,
            auroc=pc["auroc"] if pc["auroc"] is not None else float("nan"),
            ci=(np.nan if ci[0] is None else ci[0], np.nan if ci[1] is None else ci[1]),
            threshold=float(thresholds[i]))
        written.append(path.name)
    written.append(plots.reliability_png(y_true, y_prob, out / "reliability.png",
                                         ece=metrics["ece"]).name)
    if "confusion_matrix" in metrics:
        cm = metrics["confusion_matrix"]
        written.append(plots.confusion_png(cm["matrix"], cm["classes"],
                                           out / "confusion.png").name)
    return written


# --------------------------------------------------------------------------------------------
# Markdown and the command line's summary
# --------------------------------------------------------------------------------------------


def _f(value, digits=3):
    return "undefined" if value is None else f"{value:.{digits}f}"


def _ci(pair):
    if not pair or pair[0] is None:
        return "n/a"
    return f"{pair[0]:.3f}-{pair[1]:.3f}"


def render_report(report: dict) -> str:
    m, d = report["metrics"], report["data"]
    op = report["operating_point"]
    lines = [
        f"# Evaluation: {report['model']['name']} on {d['dataset']} ({d['split']})", "",
        f"- Model: {report['model']['kind']} `{report['model']['path']}`, task "
        f"{report['model']['task']}, input {tuple(report['model']['input_shape'])}",
        f"- Data: {d['images']} images of {d['patients']} patients from split(s) "
        f"{', '.join(d['splits_used'])} of `{d['cache']}`",
        f"- Level: {d['level']}" + (f" (slices aggregated per study by {d['aggregate']}"
                                    + (f", top-{d['top_k']}" if d.get("top_k") else "") + ")"
                                    if d["aggregate"] else ""),
        f"- Scored units: {m['n']} ({m['n_groups']} patients); 95% CIs from "
        f"{m['bootstrap']['resamples']} bootstrap resamples of {m['bootstrap']['unit']}s",
        f"- Label mapping: {'; '.join(report['label_mapping'])}",
        *([f"- Scored through the serving signatures on the original files "
           f"({', '.join(f'{k}: {v}' for k, v in report['serving']['requests'].items())}); "
           f"largest difference from the cache path {report['serving']['max_abs_diff_vs_cache']:.2e}, "
           f"mean {report['serving']['mean_abs_diff_vs_cache']:.2e}"]
          if report.get("serving") else []),
        f"- Thresholds from: {op['source'].get('kind')}"
        + (f" ({op['source'].get('rule')})" if op["source"].get("rule") else ""),
        f"- Temperature: {_f(op['temperature'])}" if op.get("temperature") else
        "- Temperature: not applied",
        "",
        "## Summary", "",
        "| metric | value | 95% CI |", "|---|---|---|",
        f"| macro AUROC | {_f(m['macro_auroc'])} | {_ci(m['macro_auroc_ci95'])} |",
        f"| micro AUROC | {_f(m['micro_auroc'])} | {_ci(m['micro_auroc_ci95'])} |",
        f"| mean PR-AUC | {_f(m['mean_pr_auc'])} | |",
        f"| ECE | {_f(m['ece'])} | |",
        f"| Brier | {_f(m['brier'])} | |",
    ]
    if "accuracy" in m:
        lines.append(f"| accuracy | {_f(m['accuracy'])} | |")
    lines += ["", "## Per class", "",
              "| label | pos | neg | AUROC | 95% CI | PR-AUC | threshold | sens | spec | F1 | acc |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for lbl, pc in m["per_class"].items():
        auroc = _f(pc["auroc"]) if pc["auroc"] is not None else pc["auroc_status"]
        lines.append(
            f"| {md_cell(lbl)} | {pc['positives']} | {pc['negatives']} | {auroc} | {_ci(pc['auroc_ci95'])} "
            f"| {_f(pc['pr_auc'])} | {pc['threshold']:.3f} | {_f(pc['sensitivity'])} | "
            f"{_f(pc['specificity'])} | {_f(pc['f1'])} | {_f(pc['accuracy'])} |")
    if "confusion_matrix" in m:
        cm = m["confusion_matrix"]
        lines += ["", "## Confusion matrix (rows truth, columns prediction)", "",
                  "| | " + " | ".join(md_cell(c) for c in cm["classes"]) + " |",
                  "|---" * (len(cm["classes"]) + 1) + "|"]
        for name, row in zip(cm["classes"], cm["matrix"]):
            lines.append(f"| {md_cell(name)} | " + " | ".join(str(v) for v in row) + " |")
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    lines += ["", "Not for diagnostic use: research evaluation only.", ""]
    return "\n".join(lines)


def summary_lines(report: dict) -> list[str]:
    """What the command line prints: the macro AUROC, one line per class, the serving gap."""
    m = report["metrics"]
    lines = [f"{report['model']['name']} on {report['data']['dataset']} {report['data']['split']} "
             f"({report['data']['level']} level, n={m['n']}): macro AUROC {_f(m['macro_auroc'])} "
             f"(95% CI {_ci(m['macro_auroc_ci95'])})"]
    for lbl, pc in m["per_class"].items():
        auroc = _f(pc["auroc"]) if pc["auroc"] is not None else pc["auroc_status"]
        lines.append(f"  {lbl:<20} AUROC {auroc:<8} CI {_ci(pc['auroc_ci95'])}  sens "
                     f"{_f(pc['sensitivity'])}  spec {_f(pc['specificity'])}  thr "
                     f"{pc['threshold']:.3f}")
    if report.get("serving"):
        sv = report["serving"]
        lines.append(f"  through serving ({', '.join(f'{k} {v}' for k, v in sv['requests'].items())}): "
                     f"max |p_serving - p_cache| {sv['max_abs_diff_vs_cache']:.2e}, "
                     f"mean {sv['mean_abs_diff_vs_cache']:.2e}")
    return lines
