"""Per-example losses on probabilities: BCE, CE and focal, with class weights and label smoothing.

Each loss returns a ``[batch]`` vector so the loop can sum and divide by the *global* batch size,
which is what makes gradients identical whatever the number of replicas.

Class weights follow one rule for every loss: ``class_weights[k]`` multiplies the loss terms in
which label ``k`` is positive (for sigmoid outputs, the positive half of label k's BCE; for
softmax outputs, the loss of the examples of class k). ``"balanced"`` sets them from the
training labels (negatives / positives per label for sigmoid; N / (K * n_k) for softmax).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["make_loss", "balanced_class_weights", "resolve_loss_name"]

_EPS = 1e-7


def resolve_loss_name(name: str, activation: str) -> str:
    if name == "auto":
        return "ce" if activation == "softmax" else "bce"
    if name == "ce" and activation != "softmax":
        raise ValueError("--loss ce needs a softmax (multi-class) task; this dataset is multi-label, use --loss bce or focal.")
    if name == "bce" and activation == "softmax":
        raise ValueError("--loss bce needs a sigmoid (multi-label) task; this dataset is multi-class, use --loss ce or focal.")
    return name


def balanced_class_weights(labels: np.ndarray, activation: str, max_weight: float = 50.0) -> list[float]:
    """Weights from a ``[N, K]`` 0/1 label matrix (see the module docstring)."""
    labels = np.asarray(labels, dtype=np.float64)
    pos = labels.sum(axis=0)
    n, k = labels.shape
    if activation == "softmax":
        w = n / (k * np.maximum(pos, 1.0))
    else:
        w = (n - pos) / np.maximum(pos, 1.0)
    return [float(x) for x in np.clip(w, 1.0 / max_weight, max_weight)]


def make_loss(name: str, *, activation: str, num_classes: int, class_weights=None,
              label_smoothing: float = 0.0, gamma: float = 2.0, groups=None):
    """Return ``loss(y_true [B,K], y_prob [B,K]) -> [B]`` (float32).

    ``groups`` (softmax only; a pretraining corpus's label index -> source index): the
    probabilities are renormalised over the classes of each example's own source before the
    loss, i.e. a softmax masked to that source (one head per source, in one output layer).
    """
    name = resolve_loss_name(name, activation)
    weights = None
    if class_weights is not None:
        if len(class_weights) != num_classes:
            raise ValueError(
                f"--class-weights has {len(class_weights)} values but the dataset has {num_classes} labels; give one weight per label."
            )
        weights = tf.constant(class_weights, tf.float32)
    smoothing = float(label_smoothing)
    gamma = float(gamma)
    softmax = activation == "softmax"

    same = None
    if groups is not None:
        if not softmax or len(groups) != num_classes:
            raise ValueError("groups need a softmax task and one group per label.")
        g = np.asarray(groups)
        same = tf.constant((g[:, None] == g[None, :]).astype("float32"))  # [K, K]

    def loss(y_true, y_prob):
        y = tf.cast(y_true, tf.float32)
        p = tf.cast(y_prob, tf.float32)
        mask = None
        if same is not None:  # renormalise over the example's own source
            mask = tf.cast(tf.matmul(y, same) > 0, tf.float32)
            p = p * mask / tf.maximum(tf.reduce_sum(p * mask, axis=-1, keepdims=True), _EPS)
        p = tf.clip_by_value(p, _EPS, 1.0 - _EPS)
        if smoothing and mask is not None:  # smoothed over the own source's classes only
            y_s = y * (1.0 - smoothing) + smoothing * mask / tf.reduce_sum(mask, axis=-1, keepdims=True)
        elif smoothing:
            y_s = y * (1.0 - smoothing) + smoothing / (num_classes if softmax else 2.0)
        else:
            y_s = y
        if softmax:
            terms = -y_s * tf.math.log(p)                                    # [B, K]
            if name == "focal":
                terms = terms * tf.pow(1.0 - p, gamma)
            per_example = tf.reduce_sum(terms, axis=-1)
            if weights is not None:
                per_example = per_example * tf.reduce_sum(y * weights, axis=-1)
            return per_example
        pos = -y_s * tf.math.log(p)
        neg = -(1.0 - y_s) * tf.math.log(1.0 - p)
        if name == "focal":
            pos = pos * tf.pow(1.0 - p, gamma)
            neg = neg * tf.pow(p, gamma)
        if weights is not None:
            pos = pos * weights
        return tf.reduce_mean(pos + neg, axis=-1)

    return loss
