"""``zoo.evaluate --through serving``: the original files through the signatures a TF Serving
client calls, scored and compared with the cache path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from zoo import evaluation as E


def test_ct_through_serving_default_matches_the_cache(tiny, tmp_path):
    report = E.evaluate(tiny.version, dataset="synthetic", data_dir=tiny.data, split="test",
                        out=tmp_path / "served", through="serving", n_boot=50, plots=False)
    serving = report["serving"]
    assert report["through"] == "serving"
    assert serving["requests"] == {"serving_bytes": 0, "serving_default": report["data"]["images"]}
    assert serving["max_abs_diff_vs_cache"] <= 1e-3
    assert "serving signatures" in (tmp_path / "served" / "report.md").read_text()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """A folder dataset of pictures of many sizes and modes, a 48 px cache and an export."""
    import keras

    import zoo
    from pipelines.cache import prepare
    from zoo.export import export_saved_model

    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(3)
    for cls, level in (("normal", 0.35), ("lesion", 0.6)):
        (root / "data" / cls).mkdir(parents=True)
        for i in range(6):
            h, w = int(rng.integers(40, 300)), int(rng.integers(40, 300))
            yy, xx = np.mgrid[0:h, 0:w]
            scene = level + 0.3 * np.sin(xx / (5 + i)) * np.cos(yy / 7) + rng.normal(0, 0.05, (h, w))
            pixels = (scene.clip(0, 1) * 255).astype(np.uint8)
            path = root / "data" / cls / f"{cls}{i}"
            if i % 3 == 0:
                Image.fromarray(pixels).save(path.with_suffix(".png"))
            elif i % 3 == 1:
                Image.fromarray(np.dstack([pixels] * 3)).save(path.with_suffix(".jpg"), quality=85)
            else:
                rgba = np.dstack([pixels, pixels // 2, pixels, np.full_like(pixels, 128)])
                Image.fromarray(rgba, "RGBA").save(path.with_suffix(".png"))
    cache = prepare("folder", root / "data", root / "cache", image_size=48, val_fraction=0.25,
                    test_fraction=0.4, progress=False)
    keras.utils.set_random_seed(0)
    model = zoo.get_model("myositisnet", input_shape=(48, 48, 1), num_classes=2)
    from pipelines.preprocessing import Preprocessing

    version = export_saved_model(model, root / "saved_models", model_name="pictures",
                                 labels=["lesion", "normal"], preprocessing=Preprocessing.load(cache))
    return root, cache, version


def test_pictures_through_serving_bytes_on_the_command_line(pictures, tmp_path, capsys):
    root, cache, version = pictures
    code = E.main(["--model", str(version), "--dataset", "folder", "--data-dir", str(root / "data"),
                   "--cache", str(cache), "--split", "test", "--through", "serving",
                   "--bootstrap", "20", "--out", str(tmp_path / "report"), "--no-card"])
    assert code == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["serving"]["requests"]["serving_bytes"] == report["data"]["images"] > 0
    assert report["serving"]["max_abs_diff_vs_cache"] <= 1e-3
    assert "through serving (serving_bytes" in capsys.readouterr().out


def test_through_serving_needs_the_original_files_and_an_export(pictures, tmp_path):
    root, cache, _ = pictures
    with pytest.raises(E.EvaluationError, match="--data-dir"):
        E.evaluate(pictures[2], cache=cache, split="test", out=tmp_path / "a", through="serving",
                   plots=False, n_boot=0)
    with pytest.raises(E.EvaluationError, match="cache or serving"):
        E.evaluate(pictures[2], cache=cache, out=tmp_path / "b", through="client")
