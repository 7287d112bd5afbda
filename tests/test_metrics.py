import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from zoo import metrics as M


def _data(n=200, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.4).astype(float)
    p = np.clip(0.35 * y + 0.65 * rng.random((n, k)), 0, 1)
    return y, p


def test_auroc_equals_sklearn():
    y, p = _data()
    per = M.per_class_auroc(y, p)
    for k in range(y.shape[1]):
        assert per[k] == pytest.approx(roc_auc_score(y[:, k], p[:, k]), abs=1e-12)
    macro, micro = M.macro_micro_auroc(y, p)
    assert macro == pytest.approx(np.mean(per))
    assert micro == pytest.approx(roc_auc_score(y.ravel(), p.ravel()))


def test_class_without_positives_is_undefined_not_a_number():
    y, p = _data()
    y[:, 1] = 0
    per = M.per_class_auroc(y, p)
    assert np.isnan(per[1]) and np.isfinite(per[0])
    assert np.isnan(M.pr_auc(y, p)[1])
    assert M.nan_to_none({"auroc": per})["auroc"][1] is None


def test_bootstrap_is_seeded_and_resamples_patients():
    y, p = _data(n=120)
    groups = np.repeat(np.arange(30), 4)
    a = M.bootstrap_ci(M.per_class_auroc, y, p, groups, n_boot=50, seed=3)
    b = M.bootstrap_ci(M.per_class_auroc, y, p, groups, n_boot=50, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.all(a[0] <= M.per_class_auroc(y, p) + 1e-9)

    # every resample must contain whole patients: count rows per resample via a metric probe
    sizes = []

    def probe(yt, yp):
        sizes.append(len(yt))
        return np.array([0.0])

    M.bootstrap_ci(probe, y, p, groups, n_boot=20, seed=1)
    assert all(s % 4 == 0 for s in sizes)  # 4 images a patient, always all of them


def test_grouped_bootstrap_is_wider_than_image_bootstrap_for_correlated_images():
    rng = np.random.default_rng(0)
    n_pat, per = 40, 10
    y_pat = (rng.random(n_pat) < 0.5).astype(float)
    p_pat = np.clip(0.3 * y_pat + 0.7 * rng.random(n_pat), 0, 1)
    y = np.repeat(y_pat, per)[:, None]
    p = (np.repeat(p_pat, per) + 0.01 * rng.random(n_pat * per))[:, None]
    groups = np.repeat(np.arange(n_pat), per)
    lo_g, hi_g = M.bootstrap_ci(M.per_class_auroc, y, p, groups, n_boot=200)
    lo_i, hi_i = M.bootstrap_ci(M.per_class_auroc, y, p, None, n_boot=200)
    assert (hi_g - lo_g)[0] > 1.5 * (hi_i - lo_i)[0]


def test_thresholds_and_operating_point_metrics():
    y = np.array([[0], [0], [1], [1]], float)
    p = np.array([[0.1], [0.4], [0.35], [0.8]])
    thr = M.choose_thresholds(y, p)
    out = M.threshold_metrics(y, p, thr)
    assert 0 <= out["accuracy"][0] <= 1
    out = M.threshold_metrics(y, p, [0.5])
    assert out["sensitivity"][0] == 0.5 and out["specificity"][0] == 1.0
    assert out["accuracy"][0] == 0.75


def test_calibration_and_temperature():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2000, 1)) * 2
    y = (rng.random((2000, 1)) < 1 / (1 + np.exp(-logits))).astype(float)
    calibrated = 1 / (1 + np.exp(-logits))
    overconfident = 1 / (1 + np.exp(-3 * logits))
    assert M.expected_calibration_error(y, calibrated) < M.expected_calibration_error(y, overconfident)
    t = M.fit_temperature(y, overconfident)
    assert t == pytest.approx(3.0, rel=0.25)
    assert M.brier_score(y, M.apply_temperature(overconfident, t)) < M.brier_score(y, overconfident)


def test_scan_level_aggregation():
    groups = ["a", "a", "b", "b", "b"]
    y = np.array([[0], [1], [0], [0], [0]], float)
    p = np.array([[0.1], [0.9], [0.2], [0.3], [0.1]])
    ids, yt, yp = M.aggregate_by_group(groups, y, p, how="max")
    assert list(ids) == ["a", "b"] and yt[:, 0].tolist() == [1, 0]
    assert yp[:, 0].tolist() == [0.9, 0.3]
    _, _, yk = M.aggregate_by_group(groups, y, p, how="topk_mean", top_k=2)
    assert yk[1, 0] == pytest.approx(0.25)


def test_empty_split_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        M.per_class_auroc(np.zeros((0, 2)), np.zeros((0, 2)))
