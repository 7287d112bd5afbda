"""Pictures for evaluation and explanation, written as PNG (matplotlib, Agg canvas, no pyplot).

    roc_curve_png(y_true[:, k], y_prob[:, k], "roc_any.png", label="any", auroc=.., ci=(lo, hi))
    reliability_png(y_true, y_prob, "reliability.png", ece=..)
    confusion_png(matrix, class_names, "confusion.png")
    overlay_png(image, heatmap, "gradcam_any.png", title="any 0.97 | ...")

Figures are drawn on ``matplotlib.figure.Figure`` with an Agg canvas, so nothing here touches the
global pyplot state or needs a display. Every function returns the path it wrote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.metrics import reliability_curve

__all__ = ["roc_curve_png", "reliability_png", "confusion_png", "overlay_png", "display_image"]

DPI = 100


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _fmt(value, digits=3) -> str:
    return "undefined" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def roc_curve_png(y_true, y_prob, path, *, label: str, auroc=None, ci=None, threshold=None) -> Path:
    """ROC curve of one class with its AUROC (and 95% CI) in the legend.

    A class with only positives or only negatives has no ROC curve: the figure says so instead
    of drawing a made-up one. ``threshold`` marks the operating point chosen on validation.
    """
    from sklearn.metrics import roc_curve

    y_true = np.asarray(y_true, dtype=float).ravel()
    y_prob = np.asarray(y_prob, dtype=float).ravel()
    fig = _figure(4.6, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    n_pos, n_neg = int((y_true > 0.5).sum()), int((y_true <= 0.5).sum())
    if n_pos and n_neg:
        fpr, tpr, thr = roc_curve(y_true, y_prob)
        text = f"AUROC {_fmt(auroc)}"
        if ci is not None and ci[0] is not None and np.isfinite(ci[0]):
            text += f" (95% CI {_fmt(ci[0])}-{_fmt(ci[1])})"
        ax.plot(fpr, tpr, color="C0", lw=2, label=text)
        if threshold is not None:
            pred = y_prob >= threshold
            sens = (pred & (y_true > 0.5)).sum() / n_pos
            fp = (pred & (y_true <= 0.5)).sum() / n_neg
            ax.plot([fp], [sens], "o", color="C3", label=f"threshold {threshold:.3f} (from val)")
    else:
        ax.text(0.5, 0.5, f"AUROC undefined:\n{n_pos} positives, {n_neg} negatives",
                ha="center", va="center", fontsize=11, color="C3")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title(f"ROC: {label} (n={len(y_true)}, {n_pos} positive)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def reliability_png(y_true, y_prob, path, *, bins: int = 10, ece=None, title="Reliability") -> Path:
    """Reliability diagram (observed frequency vs mean predicted probability, pooled over
    classes) with a histogram of the predictions underneath."""
    curve = reliability_curve(y_true, y_prob, bins=bins)
    fig = _figure(4.6, 5.4)
    ax = fig.add_axes((0.14, 0.36, 0.8, 0.56))
    hist = fig.add_axes((0.14, 0.09, 0.8, 0.17), sharex=ax)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfect calibration")
    if len(curve):
        width = 1.0 / bins
        ax.bar(curve[:, 0], curve[:, 1], width=width * 0.9, alpha=0.35, color="C0",
               edgecolor="C0")
        ax.plot(curve[:, 0], curve[:, 1], "o-", color="C0", label="model")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("observed frequency")
    ax.set_title(f"{title}  ECE {_fmt(ece)}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    hist.hist(np.asarray(y_prob, dtype=float).ravel(), bins=bins, range=(0, 1), color="C1")
    hist.set_xlim(0, 1)
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("count")
    return _save(fig, path)


def confusion_png(matrix, class_names, path, *, title="Confusion matrix") -> Path:
    """Confusion matrix (rows = truth, columns = prediction), counts and row percentages."""
    matrix = np.asarray(matrix, dtype=float)
    k = len(class_names)
    side = max(3.6, 1.0 + 0.7 * k)
    fig = _figure(side + 0.8, side)
    ax = fig.add_subplot(1, 1, 1)
    rows = matrix.sum(axis=1, keepdims=True)
    frac = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(matrix[i, j])}\n{100 * frac[i, j]:.0f}%", ha="center",
                    va="center", fontsize=9, color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(k))
    ax.set_xticklabels(class_names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k))
    ax.set_yticklabels(class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, path)


def display_image(image, *, rgb: bool | None = None) -> tuple[np.ndarray, str | None]:
    """What to show of a model input ``[H, W, C]`` in [0, 1]: RGB for 3-channel colour images,
    else the first channel in grey (for CT that is the first window, e.g. brain)."""
    image = np.asarray(image, dtype=float)
    if image.ndim == 2:
        return np.clip(image, 0, 1), "gray"
    if rgb is None:
        rgb = False
    if rgb and image.shape[-1] == 3:
        return np.clip(image, 0, 1), None
    return np.clip(image[..., 0], 0, 1), "gray"


def overlay_png(image, heatmap, path, *, title: str = "", rgb: bool | None = None,
                alpha: float = 0.45, mask=None) -> Path:
    """Three panels: the image, the heatmap, and the heatmap over the image (``mask`` outlined
    in green when given)."""
    shown, cmap = display_image(image, rgb=rgb)
    heat = np.asarray(heatmap, dtype=float)
    fig = _figure(9.6, 3.7)
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    axes[0].imshow(shown, cmap=cmap, vmin=0, vmax=1)
    axes[0].set_title("image", fontsize=9)
    im = axes[1].imshow(heat, cmap="jet", vmin=0, vmax=1)
    axes[1].set_title("heatmap", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    axes[2].imshow(shown, cmap=cmap, vmin=0, vmax=1)
    axes[2].imshow(heat, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    axes[2].set_title("overlay", fontsize=9)
    if mask is not None and np.asarray(mask).any():
        for ax in (axes[0], axes[2]):
            ax.contour(np.asarray(mask) > 0, levels=[0.5], colors="lime", linewidths=1)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
