"""One tiny synthetic head-CT cache and one tiny exported model, shared by the evaluation tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    import keras

    import zoo
    from pipelines.cache import prepare
    from pipelines.datasets.synthetic import write_head_ct
    from zoo.export import export_saved_model

    root = tmp_path_factory.mktemp("evaluate")
    data = write_head_ct(root / "data", patients=16, slices=4, size=32, seed=0)
    cache = prepare("synthetic", data, root / "cache", image_size=32, val_fraction=0.25,
                    test_fraction=0.25, progress=False)
    keras.utils.set_random_seed(0)
    model = zoo.get_model("ichnet_small", input_shape=(32, 32, 3), num_classes=6)
    version = export_saved_model(
        model, root / "saved_models", model_name="ichnet_small", labels=zoo.labels.RSNA_ICH,
        preprocessing={"windows": "brain,subdural,bone", "activation": "sigmoid"},
    )
    return SimpleNamespace(root=root, data=data, cache=cache, model=model, version=version,
                           labels=tuple(zoo.labels.RSNA_ICH))


def assert_real_png(path, *, min_side=150, min_std=5.0):
    """A PNG that decodes, is not tiny, and is not one flat colour."""
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG"
        assert min(img.size) >= min_side, img.size
        pixels = np.asarray(img.convert("L"), dtype=float)
    assert pixels.std() > min_std, f"{path} is nearly uniform (std {pixels.std():.2f})"
    # more than a handful of distinct grey levels: there is drawing in it
    assert len(np.unique(pixels)) > 8
