"""Losses and the LR schedule against NumPy references written independently."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.training.losses import balanced_class_weights, make_loss, resolve_loss_name
from zoo.training.optim import WarmupSchedule

Y = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]], np.float32)
P = np.array([[0.9, 0.2, 0.6], [0.3, 0.1, 0.8], [0.7, 0.4, 0.05]], np.float32)


def np_bce(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def call(loss, y=Y, p=P):
    return loss(tf.constant(y), tf.constant(p)).numpy()


def test_bce_is_mean_over_labels_per_example():
    got = call(make_loss("bce", activation="sigmoid", num_classes=3))
    np.testing.assert_allclose(got, np_bce(Y, P).mean(axis=1), rtol=1e-5)


def test_label_smoothing_moves_targets_towards_half():
    got = call(make_loss("bce", activation="sigmoid", num_classes=3, label_smoothing=0.2))
    ys = Y * 0.8 + 0.1
    np.testing.assert_allclose(got, np_bce(ys, P).mean(axis=1), rtol=1e-5)


def test_class_weights_scale_positive_terms_only():
    w = np.array([2.0, 1.0, 5.0], np.float32)
    got = call(make_loss("bce", activation="sigmoid", num_classes=3, class_weights=list(w)))
    ref = (-(w * Y * np.log(P)) - (1 - Y) * np.log(1 - P)).mean(axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_focal_reduces_to_bce_at_gamma_zero_and_downweights_easy_examples():
    bce = call(make_loss("bce", activation="sigmoid", num_classes=3))
    focal0 = call(make_loss("focal", activation="sigmoid", num_classes=3, gamma=0.0))
    np.testing.assert_allclose(focal0, bce, rtol=1e-5)
    focal2 = call(make_loss("focal", activation="sigmoid", num_classes=3, gamma=2.0))
    ref = (-(Y * (1 - P) ** 2 * np.log(P)) - (1 - Y) * P**2 * np.log(1 - P)).mean(axis=1)
    np.testing.assert_allclose(focal2, ref, rtol=1e-5)
    assert np.all(focal2 < bce)


def test_softmax_cross_entropy_with_weights_and_smoothing():
    y = np.array([[1, 0, 0], [0, 0, 1]], np.float32)
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    ce = call(make_loss("ce", activation="softmax", num_classes=3), y, p)
    np.testing.assert_allclose(ce, [-np.log(0.7), -np.log(0.6)], rtol=1e-5)
    weighted = call(make_loss("ce", activation="softmax", num_classes=3, class_weights=[3, 1, 0.5]), y, p)
    np.testing.assert_allclose(weighted, [-3 * np.log(0.7), -0.5 * np.log(0.6)], rtol=1e-5)
    smooth = call(make_loss("auto", activation="softmax", num_classes=3, label_smoothing=0.3), y, p)
    ys = y * 0.7 + 0.1
    np.testing.assert_allclose(smooth, -(ys * np.log(p)).sum(axis=1), rtol=1e-5)


def test_loss_task_mismatch_and_weight_count_are_clear_errors():
    assert resolve_loss_name("auto", "sigmoid") == "bce"
    with pytest.raises(ValueError, match="multi-class"):
        resolve_loss_name("ce", "sigmoid")
    with pytest.raises(ValueError, match="one weight per label"):
        make_loss("bce", activation="sigmoid", num_classes=3, class_weights=[1.0, 2.0])


def test_balanced_class_weights():
    labels = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], np.float32)
    np.testing.assert_allclose(balanced_class_weights(labels, "sigmoid"), [3.0, 3.0])
    onehot = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)
    np.testing.assert_allclose(balanced_class_weights(onehot, "softmax"), [4 / 6, 2.0])


def test_warmup_cosine_schedule():
    s = WarmupSchedule(0.1, total_steps=110, warmup_steps=10, kind="cosine")
    lr = [float(s(i)) for i in range(111)]
    np.testing.assert_allclose(lr[:10], 0.1 * np.arange(1, 11) / 10, rtol=1e-5)
    np.testing.assert_allclose(lr[10], 0.1, rtol=1e-5)
    np.testing.assert_allclose(lr[60], 0.05, rtol=1e-4)
    assert lr[110] == pytest.approx(0.0, abs=1e-7)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    step = WarmupSchedule(1.0, total_steps=100, kind="step")
    assert [float(step(i)) for i in (0, 59, 60, 84, 85)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert float(WarmupSchedule(0.3, 10, kind="constant")(7)) == pytest.approx(0.3)


def test_corpus_label_smoothing_stays_within_the_examples_source():
    # labels 0-1 belong to source 0, labels 2-5 to source 1: smoothing must not put target mass
    # on the other source's classes, which the mask sets to ~0 (that was a constant ~1.0 of loss)
    import numpy as np

    from zoo.training.losses import make_loss

    groups = [0, 0, 1, 1, 1, 1]
    loss = make_loss("ce", activation="softmax", num_classes=6, label_smoothing=0.1, groups=groups)
    y = np.array([[1, 0, 0, 0, 0, 0]], np.float32)
    p = np.array([[0.95, 0.05, 0.0, 0.0, 0.0, 0.0]], np.float32)
    got = float(loss(y, p).numpy()[0])
    target = np.array([0.95, 0.05])  # 1 - 0.1 + 0.1 / 2 and 0.1 / 2: the own source's two classes
    want = float(-(target * np.log([0.95, 0.05])).sum())
    assert abs(got - want) < 1e-4, (got, want)


def test_corpus_auroc_scores_each_label_within_its_source():
    import numpy as np

    from zoo.training.metrics import score

    groups = [0, 0, 1, 1]
    # source 0 images (rows 0-3) are ranked perfectly within their source; source 1's outputs
    # for source 0's labels are high garbage that no loss ever saw
    y = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0],
                  [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    p = np.array([[0.5, 0.1, 0.2, 0.2], [0.4, 0.1, 0.3, 0.2], [0.1, 0.4, 0.3, 0.2], [0.1, 0.5, 0.2, 0.2],
                  [0.9, 0.05, 0.04, 0.01], [0.05, 0.9, 0.01, 0.04]], np.float32)
    union = score(["a", "b", "c", "d"], y, p, 0.0)
    corpus = score(["a", "b", "c", "d"], y, p, 0.0, groups=groups)
    assert corpus["auroc"]["a"] == 1.0 and corpus["auroc"]["b"] == 1.0
    assert corpus["auroc"]["c"] == 1.0 and corpus["auroc"]["d"] == 1.0
    assert union["auroc"]["a"] < 1.0  # the garbage from the other source ranked in
