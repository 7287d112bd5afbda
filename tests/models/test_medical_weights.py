"""weights="medical": the shipped backbones, loaded offline under a fresh head.

Every test points ``MEDZOO_WEIGHTS_DIR`` at its own folder holding a small backbone made here
(``tests/medical_files.py``: ichnet_small at 32x32x1 with its card), so nothing depends on the
real files in ``zoo/weights/``.
"""

from __future__ import annotations

import json
import socket

import keras
import numpy as np
import pytest

import zoo
from tests.medical_files import CORPUS, write_shipped
from zoo import card as card_mod
from zoo.models import medical
from zoo.models.backbone import adapt_input_kernel, backbone_layers, head_layers, save_backbone


@pytest.fixture
def offline(monkeypatch):
    """Any download or network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(keras.utils, "get_file", refuse)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """``(source model, .h5 path, card path)`` of ichnet_small's backbone at 32 px, 1 channel."""
    folder = tmp_path / "weights"
    monkeypatch.setenv(medical.ENV_VAR, str(folder))
    return write_shipped(folder, "ichnet_small", size=32, channels=1)


def _first_conv(model) -> str:
    return next(layer.name for layer in backbone_layers(model)
                if any(len(w.shape) == 4 for w in layer.get_weights()))


@pytest.mark.parametrize("channels", [1, 3])
def test_medical_loads_the_backbone_at_another_size_under_a_fresh_head(shipped, offline, channels):
    source, _, _ = shipped
    shape = (48, 48, channels)  # another input size than the file's 32 px
    keras.utils.set_random_seed(7)
    fresh = zoo.get_model("ichnet_small", input_shape=shape, num_classes=3)
    keras.utils.set_random_seed(7)
    model = zoo.get_model("ichnet_small", weights="medical", input_shape=shape, num_classes=3)
    first = _first_conv(model)
    checked = 0
    for layer in backbone_layers(model):
        for got, want in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
            if layer.name == first and want.ndim == 4:
                want = adapt_input_kernel(want, channels)
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=layer.name)
            checked += 1
    assert checked == sum(len(layer.get_weights()) for layer in backbone_layers(source))
    head = [w for layer in head_layers(model) for w in layer.get_weights()]
    assert head  # the head: as a model built without weights (fresh), not from the file
    for layer in head_layers(model):
        for got, init in zip(layer.get_weights(), fresh.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(got, init, err_msg=layer.name)
    assert model.output.shape[-1] == 3


def test_resolve_picks_the_nearest_size_and_ties_go_to_the_larger(tmp_path, monkeypatch):
    monkeypatch.setenv(medical.ENV_VAR, str(tmp_path))
    for size in (32, 64):  # resolve reads cards only: placeholder bytes are enough here
        path = tmp_path / medical.file_name("ichnet", size)
        path.write_bytes(bytes([size]) * 16)
        medical.write_card(path, {"model": "ichnet", "image_size": size, "channels": 1})
    assert [c["image_size"] for c in medical.available()["ichnet"]] == [32, 64]
    assert medical.resolve("ichnet", 40)[1]["image_size"] == 32
    assert medical.resolve("ichnet", 48)[1]["image_size"] == 64  # a tie
    assert medical.resolve("ichnet", 256)[1]["image_size"] == 64
    path, card = medical.resolve("ichnet")
    assert path == tmp_path / "ichnet-medical-64.weights.h5" and card["file"] == path.name


def test_a_model_without_shipped_weights_is_one_sentence_naming_those_with(shipped, tmp_path,
                                                                           monkeypatch):
    with pytest.raises(ValueError) as err:
        zoo.get_model("rensenet_small", weights="medical", input_shape=(32, 32, 1))
    text = str(err.value)
    assert "'rensenet_small'" in text and "exists for ichnet_small only" in text
    assert text.count(". ") == 0 and text.endswith(".") and "\n" not in text
    monkeypatch.setenv(medical.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="none are shipped in this install"):
        zoo.get_model("ichnet_small", weights="medical", input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match="never downloads"):  # imagenet stays refused
        zoo.get_model("ichnet_small", weights="imagenet", input_shape=(32, 32, 1))


def test_a_tampered_file_is_refused_by_its_sha256(shipped, offline):
    _, path, _ = shipped
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte changed
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as err:
        zoo.get_model("ichnet_small", weights="medical", input_shape=(32, 32, 1))
    text = str(err.value)
    assert "does not match the sha256" in text and "reinstall medzoo" in text
    assert text.count(". ") == 0 and "\n" not in text
    path.unlink()  # a card whose file is gone: skipped with a warning, then "none shipped"
    with pytest.warns(UserWarning, match="weights file .* is missing"):
        assert medical.available() == {}


def test_a_malformed_card_is_skipped_with_a_one_line_warning(shipped):
    _, path, card_path = shipped
    folder = path.parent
    (folder / "junk.json").write_text("{not json")
    (folder / "partial.json").write_text(json.dumps({"model": "ichnet", "file": "x.weights.h5"}))
    (folder / "escape.json").write_text(json.dumps({**json.loads(card_path.read_text()),
                                                    "file": "../outside.weights.h5"}))
    with pytest.warns(UserWarning) as caught:
        found = medical.available()
    assert list(found) == ["ichnet_small"]
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 3 and all("\n" not in m for m in messages)
    assert any("junk.json: it is not valid JSON" in m for m in messages)
    assert any("partial.json: it lacks sha256, image_size, channels" in m for m in messages)
    assert any("escape.json" in m and "not a bare" in m for m in messages)


def test_model_info_lists_the_shipped_weights_from_the_cards(shipped):
    _, path, card_path = shipped
    card = json.loads(card_path.read_text())
    assert card["file"] == path.name and card["sha256"] == medical.sha256_of(path)
    weights = zoo.model_info("ichnet_small", count_params=False)["weights"]
    assert weights == [{"name": "medical", "file": path.name, "image_size": 32, "channels": 1,
                        "sha256": card["sha256"], "corpus_metric": card["corpus_metric"]}]
    assert zoo.model_info("rensenet_small", count_params=False)["weights"] == []
    facts = card_mod.registry_facts("ichnet_small")  # the model card shows them
    assert facts["shipped_weights"] == weights
    md = card_mod.render_card({"model_name": "ichnet_small", **facts})
    assert "Shipped pretrained weights" in md and card["sha256"] in md
    assert "shipped_weights" not in card_mod.registry_facts("rensenet_small")


def test_describe_names_files_never_folders(shipped, tmp_path):
    source, path, _ = shipped
    record = medical.describe("medical", "ichnet_small", (64, 64, 3))
    assert record["weights"] == "medical" and record["file"] == path.name
    assert record["sha256"] == medical.sha256_of(path)
    assert record["corpus"] == {k: CORPUS[k] for k in ("name", "sources", "held_out")}
    own = save_backbone(source, tmp_path / "private" / "backbone.weights.h5",
                        {"model": "ichnet_small", "corpus": {"sources": ["a"], "datasets": [
                            {"name": "a", "dataset": "folder", "data_dir": str(tmp_path / "a")}]}})
    local = medical.describe(own, "ichnet_small")
    assert local["weights"] == "backbone.weights.h5" and local["kind"] == "backbone"
    assert local["sha256"] == medical.sha256_of(own) and local["corpus"] == {"sources": ["a"]}
    assert str(tmp_path) not in json.dumps([record, local])
    assert medical.describe(None) is None
    line = medical.describe_line(record)
    assert line.startswith("Weights: medical ichnet_small-medical-32") and record["sha256"] in line


def test_the_package_folder_is_the_default(monkeypatch):
    monkeypatch.delenv(medical.ENV_VAR, raising=False)
    assert medical.weights_dir() == medical.WEIGHTS_DIR
    assert medical.WEIGHTS_DIR.parent.name == "zoo" and medical.WEIGHTS_DIR.name == "weights"
    assert (medical.WEIGHTS_DIR / "README.md").is_file()
