import numpy as np

from tests.evaluate.conftest import assert_real_png
from zoo import plots


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < 0.4).astype(float)
    return y, np.clip(0.4 * y + 0.6 * rng.random((n, 2)), 0, 1)


def test_every_plot_is_a_real_png(tmp_path):
    y, p = _data()
    files = [
        plots.roc_curve_png(y[:, 0], p[:, 0], tmp_path / "roc.png", label="a", auroc=0.8,
                            ci=(0.7, 0.9), threshold=0.5),
        plots.roc_curve_png(np.zeros(10), np.linspace(0, 1, 10), tmp_path / "roc_undef.png",
                            label="none", auroc=float("nan")),
        plots.reliability_png(y, p, tmp_path / "rel.png", ece=0.1),
        plots.confusion_png([[30, 5], [7, 38]], ["normal", "abnormal"], tmp_path / "cm.png"),
        plots.overlay_png(np.random.default_rng(0).random((32, 32, 3)),
                          np.outer(np.hanning(32), np.hanning(32)), tmp_path / "ov.png",
                          title="any p=0.9", mask=np.eye(32) > 0),
    ]
    for f in files:
        assert f.is_file()
        assert_real_png(f)


def test_overlay_shows_the_heatmap_where_it_is(tmp_path):
    # the right half hot, the left cold: the overlay panel must differ between the halves
    from PIL import Image

    heat = np.zeros((64, 64))
    heat[:, 32:] = 1.0
    path = plots.overlay_png(np.full((64, 64, 1), 0.5), heat, tmp_path / "ov.png")
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"), float)
    panel = rgb[:, 2 * rgb.shape[1] // 3:]  # the overlay, right of the heatmap and colorbar
    warm = np.where((panel[..., 0] - panel[..., 2]).max(axis=0) > 20)[0]
    cold = np.where((panel[..., 2] - panel[..., 0]).max(axis=0) > 20)[0]
    assert len(warm) and len(cold) and warm.mean() > cold.mean()
