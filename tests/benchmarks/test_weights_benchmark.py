"""benchmarks.weights end to end on a pocket corpus: corpus, pretraining, shipped file and card,
then weights="medical" from that folder into a model of another size and channel count."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import yaml

from benchmarks import weights


def _npz(path, seed, classes):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 40), ("val", 12), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)


def test_one_command_rebuilds_a_shipped_backbone_with_its_card(tmp_path, monkeypatch, capsys):
    import zoo

    for name, seed, k in (("alpha", 0, 2), ("beta", 1, 3), ("down", 2, 2)):
        _npz(tmp_path / f"{name}.npz", seed, k)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"sources": [
        {"name": n, "dataset": "medmnist", "data_dir": str(tmp_path / f"{n}.npz"), "licence": "CC0",
         "citation": n} for n in ("alpha", "beta", "down")]}))
    out = tmp_path / "weights"
    argv = ["--models", "ichnet_small", "--size", "32", "--spec", str(spec), "--held-out", "down",
            "--corpus", str(tmp_path / "corpus"), "--runs", str(tmp_path / "runs"), "--out", str(out),
            "--epochs", "2", "--early-stop", "1", "--steps-per-epoch", "2", "--json", str(tmp_path / "w.json")]
    assert weights.main(argv) == 0
    h5, card_path = out / "ichnet_small-medical-32.weights.h5", out / "ichnet_small-medical-32.json"
    card = json.loads(card_path.read_text())
    digest = hashlib.sha256(h5.read_bytes()).hexdigest()
    assert card["sha256"] == digest and digest in capsys.readouterr().out
    assert card["corpus"]["sources"] == ["alpha", "beta"] and card["corpus"]["held_out"] == ["down"]
    assert card["channels"] == 1 and card["image_size"] == 32 and card["versions"]["keras"]
    assert [p["epoch"] for p in card["curve"]] == list(range(1, card["epochs_run"] + 1))
    assert 0.0 <= card["corpus_metric"]["value"] <= 1.0
    table = json.loads((tmp_path / "w.json").read_text())
    assert table["rows"][0]["sha256"] == digest and table["benchmark"] == "weights"

    # a rerun reuses the finished run (same bytes), and the file loads as "medical"
    assert weights.main(argv) == 0
    assert hashlib.sha256(h5.read_bytes()).hexdigest() == digest
    monkeypatch.setenv("MEDZOO_WEIGHTS_DIR", str(out))
    model = zoo.get_model("ichnet_small", weights="medical", num_classes=3, input_shape=(48, 48, 3))
    assert model.output_shape == (None, 3)

    # over the size budget: stored as float16 (the card says so) and loaded back as float32
    # values equal to the float32 run's weights rounded to float16
    import h5py
    import pytest

    from zoo.models.backbone import backbone_layers

    out16 = tmp_path / "weights16"
    small = argv[: argv.index("--out")] + ["--out", str(out16)] + argv[argv.index("--out") + 2:]
    assert weights.main(small + ["--max-bytes", str(h5.stat().st_size - 1)]) == 0
    h5_16 = out16 / h5.name
    card16 = json.loads((out16 / card_path.name).read_text())
    assert card["stored_dtype"] == "float32" and card16["stored_dtype"] == "float16"
    assert card16["sha256"] == hashlib.sha256(h5_16.read_bytes()).hexdigest()
    assert h5_16.stat().st_size < h5.stat().st_size
    with h5py.File(h5, "r") as f32, h5py.File(h5_16, "r") as f16:
        assert json.loads(f16.attrs["metadata"])["stored_dtype"] == "float16"
        assert all(f16["layers"][n][i].dtype == np.float16 for n in f16["layers"] for i in f16["layers"][n])
        want = {n: [f32["layers"][n][str(i)][()] for i in range(len(f32["layers"][n]))] for n in f32["layers"]}
    monkeypatch.setenv("MEDZOO_WEIGHTS_DIR", str(out16))
    model = zoo.get_model("ichnet_small", weights="medical", num_classes=3, input_shape=(32, 32, 1))
    loaded = [layer for layer in backbone_layers(model) if layer.get_weights()]
    assert loaded and all(w.dtype == np.float32 for layer in loaded for w in layer.get_weights())
    for layer in loaded:
        for got, stored in zip(layer.get_weights(), want[layer.name]):
            np.testing.assert_array_equal(got, stored.astype(np.float16).astype(np.float32), err_msg=layer.name)
    with pytest.raises(SystemExit, match="even as float16"):
        weights.main(small + ["--max-bytes", "1000"])
    assert hashlib.sha256(h5_16.read_bytes()).hexdigest() == card16["sha256"]  # left as shipped
    assert sorted(p.name for p in out16.iterdir()) == sorted([h5.name, card_path.name])
