"""Weight files are checked before they are trusted: every loader refuses in one sentence."""

import json

import h5py
import numpy as np
import pytest

import zoo
from zoo.models.backbone import BackboneError, load_backbone, read_metadata, save_backbone
from zoo.models.weightfile import MAX_METADATA_BYTES, WeightsFileError
from zoo.models.weights import load_weights


def _model():
    return zoo.get_model("rensenet_small", input_shape=(32, 32, 1), num_classes=2)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    path = tmp_path_factory.mktemp("bb") / "backbone.weights.h5"
    save_backbone(_model(), path, {"model": "rensenet_small"})
    return path


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def _one_sentence(err, path):
    text = str(err)
    assert str(path) in text and "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize("metadata, words", [
    ("[1, 2]", "not an object"),
    ("{not json", "not valid JSON"),
    ("[" * 5000 + "]" * 5000, "deeper than"),
    ('{"x": "' + "a" * MAX_METADATA_BYTES + '"}', "over the"),
], ids=["list", "invalid", "deep", "huge"])
def test_bad_backbone_metadata_is_one_sentence(backbone, tmp_path, metadata, words):
    path = _copy(backbone, tmp_path / "backbone.weights.h5")
    with h5py.File(path, "a") as f:
        f.attrs["metadata"] = metadata
    for call in (lambda: read_metadata(path), lambda: load_backbone(_model(), path)):
        with pytest.raises(BackboneError, match=words) as info:
            call()
        _one_sentence(info.value, path)


def test_oversized_declared_shape_is_refused_before_reading(backbone, tmp_path, monkeypatch):
    path = _copy(backbone, tmp_path / "backbone.weights.h5")
    with h5py.File(path, "a") as f:
        group = f["layers"][next(iter(f["layers"]))]
        del group["0"]
        group.create_dataset("0", shape=(2**32,), dtype="float64", chunks=(2**16,))  # 32 GiB, empty
    read = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__",
                        lambda self, key: pytest.fail("a dataset was read") if self.size > 2**24 else read(self, key))
    with pytest.raises(BackboneError, match="declares") as info:
        load_backbone(_model(), path)
    _one_sentence(info.value, path)


def test_wrong_shape_is_refused_from_metadata_before_reading(backbone, tmp_path, monkeypatch):
    path = _copy(backbone, tmp_path / "backbone.weights.h5")
    with h5py.File(path, "a") as f:
        group = f["layers"][list(f["layers"])[-1]]
        shape = group["0"].shape
        del group["0"]
        group.create_dataset("0", data=np.zeros((*shape[:-1], shape[-1] + 1), np.float32))
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: pytest.fail("a dataset was read"))
    with pytest.raises(BackboneError, match="has shape"):
        load_backbone(_model(), path)


def test_truncated_weight_files_are_one_sentence(backbone, tmp_path):
    data = backbone.read_bytes()
    path = tmp_path / "backbone.weights.h5"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BackboneError, match="truncated") as info:
        load_backbone(_model(), path)
    _one_sentence(info.value, path)
    plain = tmp_path / "model.weights.h5"
    _model().save_weights(plain)
    plain.write_bytes(plain.read_bytes()[:1000])
    with pytest.raises(WeightsFileError, match="truncated or not an HDF5") as info:
        load_weights(_model(), plain)
    _one_sentence(info.value, plain)


def test_nan_weights_are_refused(backbone, tmp_path):
    path = _copy(backbone, tmp_path / "backbone.weights.h5")
    with h5py.File(path, "a") as f:
        dataset = f["layers"][next(iter(f["layers"]))]["0"]
        dataset[...] = np.nan
    with pytest.raises(BackboneError, match="NaN"):
        load_backbone(_model(), path)
    model = _model()
    plain = tmp_path / "model.weights.h5"
    weights = model.get_weights()
    weights[0] = np.full_like(weights[0], np.inf)
    model.set_weights(weights)
    model.save_weights(plain)
    with pytest.raises(WeightsFileError, match="NaN or infinite"):
        load_weights(_model(), plain)


def test_good_files_still_load(backbone, tmp_path):
    assert json.loads(json.dumps(read_metadata(backbone))) == {"model": "rensenet_small"}
    load_backbone(_model(), backbone)
    model = _model()
    model.save_weights(tmp_path / "m.weights.h5")
    load_weights(_model(), tmp_path / "m.weights.h5")
