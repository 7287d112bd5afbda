import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.evaluate.conftest import assert_real_png
from zoo import explain as X
from zoo.evaluation import EvaluationError, ModelSource, load_model_source


def _a_dicom(tiny):
    return sorted((tiny.data / "stage_2_train").glob("*.dcm"))[0]


def test_explain_cli_on_an_export_with_a_dicom(tiny, tmp_path, capsys):
    out = tmp_path / "x"
    rc = X.main(["--model", str(tiny.version), "--image", str(_a_dicom(tiny)), "--class", "any",
                 "--class", "subdural", "--method", "gradcam++", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "explain.json").read_text())
    assert set(summary["maps"]) == {"any", "subdural"}
    assert set(summary["probabilities"]) == set(tiny.labels)
    for item in summary["maps"].values():
        assert_real_png(out / item["png"])
        heat = np.load(out / item["heatmap"])
        assert heat.shape == (32, 32) and heat.min() >= 0 and heat.max() <= 1
    # the probabilities in the summary are the export's own, on the windowed DICOM
    from pipelines import dicom, transforms

    image = transforms.apply_windows(dicom.read_hu(_a_dicom(tiny)), "brain,subdural,bone")
    served = load_model_source(tiny.version).predict(image[None])[0]
    np.testing.assert_allclose([summary["probabilities"][x] for x in tiny.labels], served,
                               atol=1e-5)
    assert "any: p=" in capsys.readouterr().out


def test_explain_reads_png_and_npy_and_every_class(tiny, tmp_path):
    source = load_model_source(tiny.version)
    grey = (np.random.default_rng(0).random((40, 48)) * 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "slice.png")
    np.save(tmp_path / "slice.npy", grey.astype(np.float32) / 255.0)
    summary = X.explain_image(source, tmp_path / "slice.png", classes=["all"], out=tmp_path / "a")
    assert list(summary["maps"]) == list(tiny.labels)
    assert len(list((tmp_path / "a").glob("gradcam_*.png"))) == 6
    from_npy = X.explain_image(source, tmp_path / "slice.npy", classes=["epidural"],
                               out=tmp_path / "b")
    # the same pixels as PNG (8-bit / 255) and as .npy floats give the same answer
    assert from_npy["probabilities"] == pytest.approx(summary["probabilities"], abs=1e-5)


def test_explain_bad_input_is_one_sentence(tiny, tmp_path, capsys):
    dcm = str(_a_dicom(tiny))
    assert X.main(["--model", str(tiny.version), "--image", dcm, "--class", "tumour",
                   "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'tumour' is not a label" in err and err.count("\n") == 1
    assert X.main(["--model", str(tiny.version), "--image", str(tmp_path / "nope.png"),
                   "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    # malformed DICOMs: pixels cut short, a corrupted tag, garbage after the preamble
    good = _a_dicom(tiny).read_bytes()
    corrupt = bytearray(good)
    corrupt[140:148] = b"\xff" * 8
    for name, blob in (("cut.dcm", good[: len(good) // 2]), ("tag.dcm", bytes(corrupt)),
                       ("junk.dcm", good[:132] + b"\x07" * 300)):
        (tmp_path / name).write_bytes(blob)
        assert X.main(["--model", str(tiny.version), "--image", str(tmp_path / name),
                       "--out", str(tmp_path / "x")]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"error: --image {tmp_path / name} cannot be read") and \
            err.count("\n") == 1, err
    # an export without the Keras model cannot be explained: say so and what to do
    bare = tmp_path / "saved" / "m" / "1"
    shutil.copytree(tiny.version, bare)
    (bare / "assets.extra" / "model.keras").unlink()
    with pytest.raises(EvaluationError, match="re-export"):
        load_model_source(bare).keras_model()


def test_explain_from_a_run_directory(tiny, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    tiny.model.save(run / "model.keras")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "ichnet_small",
                                                     "windows": "brain,subdural,bone"}))
    (run / "metrics.json").write_text(json.dumps({"labels": list(tiny.labels)}))
    source = load_model_source(run)
    assert source.kind == "run" and source.windows == "brain,subdural,bone"
    summary = X.explain_image(source, _a_dicom(tiny), out=tmp_path / "out")
    (name,) = summary["maps"]
    assert summary["probabilities"][name] == max(summary["probabilities"].values())


def test_vit_map_over_patch_tokens(tmp_path):
    import keras

    import zoo

    keras.utils.set_random_seed(1)
    model = zoo.get_model("vit_tiny", input_shape=(32, 32, 1), patch_size=8)
    assert tuple(model.get_layer("features").output.shape[1:3]) == (4, 4)  # the token grid
    source = ModelSource(kind="run", path=tmp_path, model_name="vit_tiny",
                         labels=("normal", "abnormal"), input_shape=(32, 32, 1), task="binary",
                         model=model)
    np.save(tmp_path / "img.npy", np.random.default_rng(0).random((32, 32)).astype(np.float32))
    summary = X.explain_image(source, tmp_path / "img.npy", classes=["abnormal"],
                              method="gradcam", out=tmp_path / "out")
    heat = np.load(tmp_path / "out" / summary["maps"]["abnormal"]["heatmap"])
    coarse = X.grad_cam(model, np.load(tmp_path / "img.npy")[None, ..., None], class_index=1,
                        upsample=False)
    assert coarse.shape == (1, 4, 4) and np.isfinite(coarse).all()
    assert heat.shape == (32, 32) and np.isfinite(heat).all() and 0 <= heat.max() <= 1


def test_pointing_game_tolerance():
    heat = np.zeros((1, 20, 20))
    heat[0, 10, 13] = 1.0  # maximum 3 pixels right of the mask
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 8:12, 6:11] = True
    assert X.pointing_game(heat, mask)[0] == 0.0
    assert X.pointing_game(heat, mask, tolerance=2)[0] == 0.0
    assert X.pointing_game(heat, mask, tolerance=3)[0] == 1.0


def test_explain_layercam_reads_every_scale_and_names_bad_layers(tiny, tmp_path, capsys):
    out = tmp_path / "lc"
    assert X.main(["--model", str(tiny.version), "--image", str(_a_dicom(tiny)), "--class", "any",
                   "--method", "layercam", "--out", str(out)]) == 0
    summary = json.loads((out / "explain.json").read_text())
    model = load_model_source(tiny.version).keras_model()
    assert summary["layers"] == X.scale_layers(model) and summary["layers"][-1] == "features"
    assert len(summary["layers"]) >= 3
    assert_real_png(out / summary["maps"]["any"]["png"])
    heat = np.load(out / summary["maps"]["any"]["heatmap"])
    assert heat.shape == (32, 32) and heat.max() == pytest.approx(1.0) and heat.min() >= 0
    # explicit layers, comma-separated; a layer the model lacks is one sentence
    assert X.main(["--model", str(tiny.version), "--image", str(_a_dicom(tiny)), "--method",
                   "gradcam", "--layers", f"{summary['layers'][1]},features",
                   "--out", str(tmp_path / "two")]) == 0
    assert json.loads((tmp_path / "two" / "explain.json").read_text())["layers"] == [
        summary["layers"][1], "features"]
    capsys.readouterr()
    assert X.main(["--model", str(tiny.version), "--image", str(_a_dicom(tiny)),
                   "--layers", "stage9", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "'stage9'" in err and "names no layer" in err and err.count("\n") == 1
