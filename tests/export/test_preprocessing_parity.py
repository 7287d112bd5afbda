"""What a model is validated on is what it serves: probabilities from the cache path (prepare ->
make_dataset -> Keras model) equal those from the export's signatures on the original files, in a
fresh process, to 1e-3. The inputs are the awkward ones: a 512x512 PNG, an RGBA PNG of odd size,
a JPEG, a 16-bit PNG, and DICOM slices from pydicom's test files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-3

SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
from zoo.export import load_export
served = load_export(sys.argv[1])
jobs = json.loads(open(sys.argv[2]).read())
out = {}
for name, job in jobs.items():
    if job["kind"] == "bytes":
        probs = served.predict_bytes([open(job["path"], "rb").read()])
    else:
        probs = served.predict(np.load(job["path"])[None])
    out[name] = probs[0].tolist()
print(json.dumps(out))
"""


def _sharpen(model, gain: float = 10.0):
    """Redraw the last weighted layer, seeded and wider, so the probabilities move with the input
    (a random model's outputs sit near 0.5, where any two paths agree)."""
    layer = [lyr for lyr in model.layers if getattr(lyr, "kernel", None) is not None][-1]
    rng = np.random.default_rng(1)
    kernel, *rest = layer.get_weights()
    layer.set_weights([rng.normal(0, gain * kernel.std(), kernel.shape).astype(np.float32), *rest])
    return model


def _pixel_probe(input_shape, seed: int = 0, classes: int = 2):
    """A linear read-out of every pixel (softmax over 2 classes): a model that, unlike a random
    CNN with global pooling, cannot average a resize difference away."""
    import keras

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="pixel_probe")
    rng = np.random.default_rng(seed)
    n = int(np.prod(input_shape))
    kernel = rng.normal(0, 4.0 / np.sqrt(n), (n, classes)).astype(np.float32)
    model.get_layer("predictions").set_weights([kernel, np.zeros(classes, np.float32)])
    return model


def _serve_fresh(version_dir: Path, jobs: dict, tmp_path: Path) -> dict:
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps(jobs))
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", SERVE, str(version_dir), str(spec)], env=env,
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _cache_probs(model, cache: Path) -> dict:
    from pipelines.records import make_dataset

    out = {}
    for images, _, meta in make_dataset(cache, "test", batch_size=8, with_ids=True):
        probs = model(images, training=False).numpy()
        for i, name in enumerate(meta["id"].numpy()):
            out[name.decode()] = probs[i]
    return out


def _write_csv(folder: Path, rows: list[tuple[str, str]]):
    lines = ["path,label,split"] + [f"{p},{label},test" for p, label in rows]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def picture_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:512, 0:512] / 511.0
    scene = (0.5 + 0.4 * np.sin(9 * xx) * np.cos(7 * yy)) * 255
    Image.fromarray((scene + rng.normal(0, 12, scene.shape)).clip(0, 255).astype(np.uint8)).save(
        folder / "big512.png")
    rgba = np.dstack([(scene[:301, :417] * f).clip(0, 255).astype(np.uint8) for f in (1.0, 0.7, 0.4)]
                     + [np.full((301, 417), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "odd_rgba.png")
    Image.fromarray(np.dstack([scene[:240, :320]] * 3).astype(np.uint8)).save(
        folder / "photo.jpg", quality=88)
    Image.fromarray((scene[:200, :150] / 255 * 65535).astype(np.uint16)).save(folder / "deep16.png")
    names = ["big512.png", "odd_rgba.png", "photo.jpg", "deep16.png"]
    _write_csv(folder, [(n, "a" if i % 2 else "b") for i, n in enumerate(names)])
    return folder, names


def test_pictures_cache_path_equals_serving_bytes(picture_files, tmp_path):
    import keras

    import zoo
    from pipelines.preprocessing import Preprocessing
    from pipelines.records import prepare, read_info
    from zoo.export import export_saved_model

    folder, names = picture_files
    cache = prepare("csv", folder, tmp_path / "cache", image_size=64, progress=False,
                    options={"label_column": "label", "split_column": "split"},
                    keep_path_ids=True)  # cache rows keyed by file name, as the jobs are
    spec = Preprocessing.load(cache)
    assert spec == Preprocessing(kind="image", size=(64, 64), channels=1)
    assert read_info(cache)["preprocessing"] == spec.to_dict()
    keras.utils.set_random_seed(0)
    models = {
        "myositisnet": _sharpen(zoo.get_model("myositisnet", input_shape=(64, 64, 1), num_classes=2)),
        "pixel_probe": _pixel_probe((64, 64, 1)),
    }
    for name, model in models.items():
        version = export_saved_model(model, tmp_path / "exports", model_name=name,
                                     labels=["a", "b"], preprocessing=spec)
        assert Preprocessing.load(version / "assets.extra") == spec

        cached = _cache_probs(model, cache)
        jobs = {Path(n).stem: {"kind": "bytes", "path": str(folder / n)} for n in names}
        served = _serve_fresh(version, jobs, tmp_path)
        diffs = {k: float(np.abs(np.asarray(served[k]) - cached[k]).max()) for k in jobs}
        spread = np.ptp([cached[k][0] for k in jobs])
        if name == "pixel_probe":  # the CNN is a real architecture; the probe has the teeth
            assert spread > 0.02, f"{name}: the probabilities hardly move ({spread:.3f})"
        assert max(diffs.values()) <= TOLERANCE, (name, diffs)


def test_the_old_serving_resize_would_fail_this_test(picture_files):
    """The check has teeth: resizing without antialiasing (the old serving graph) moves the
    pixel probe's probabilities for the 512 px file far past the tolerance."""
    import tensorflow as tf

    from pipelines.preprocessing import Preprocessing, load_file, read_pixels

    folder, _ = picture_files
    spec = Preprocessing(kind="image", size=(64, 64), channels=1)
    model = _pixel_probe((64, 64, 1))
    good = load_file(folder / "big512.png", spec)
    old = tf.image.resize(read_pixels(folder / "big512.png")[None], (64, 64), method="bilinear")
    diff = np.abs(model(good[None]).numpy() - model(old).numpy()).max()
    assert diff > 10 * TOLERANCE


def test_dicom_cache_path_equals_serving_default_on_the_windowed_file(tmp_path):
    import keras
    from pydicom.data import get_testdata_file

    import zoo
    from pipelines.preprocessing import Preprocessing, decode_file
    from pipelines.records import prepare
    from zoo.export import export_saved_model

    folder = tmp_path / "ct"
    folder.mkdir()
    names = []
    for name in ["CT_small.dcm", "693_J2KI.dcm"]:
        target = folder / name
        target.write_bytes(Path(get_testdata_file(name)).read_bytes())
        names.append(name)
    _write_csv(folder, [(n, "a" if i % 2 else "b") for i, n in enumerate(names)])
    cache = prepare("csv", folder, tmp_path / "cache", image_size=64, progress=False,
                    windows="brain,subdural,bone",
                    options={"label_column": "label", "split_column": "split"},
                    keep_path_ids=True)  # cache rows keyed by file name, as the jobs are
    spec = Preprocessing.load(cache)
    assert spec.kind == "ct" and spec.windows == "brain,subdural,bone"
    keras.utils.set_random_seed(0)
    models = {
        "myositisnet": _sharpen(zoo.get_model("myositisnet", input_shape=(64, 64, 3), num_classes=2)),
        "pixel_probe": _pixel_probe((64, 64, 3)),
    }
    jobs = {}
    for n in names:
        windowed = decode_file(folder / n, spec)  # native size: the graph resizes and rounds
        assert windowed.shape[:2] != (64, 64)
        np.save(tmp_path / f"{n}.npy", windowed)
        jobs[Path(n).stem] = {"kind": "float", "path": str(tmp_path / f"{n}.npy")}
    for name, model in models.items():
        version = export_saved_model(model, tmp_path / "exports", model_name=name,
                                     labels=["a", "b"], preprocessing=spec)
        cached = _cache_probs(model, cache)
        served = _serve_fresh(version, jobs, tmp_path)
        diffs = {k: float(np.abs(np.asarray(served[k]) - cached[k]).max()) for k in jobs}
        spread = np.ptp([cached[k][0] for k in jobs])
        if name == "pixel_probe":  # the CNN is a real architecture; the probe has the teeth
            assert spread > 0.02, f"{name}: the probabilities hardly move ({spread:.3f})"
        assert max(diffs.values()) <= TOLERANCE, (name, diffs)


# ------------------------------------------------------------------------------------ colour
TINY_ICHNET = {"stem": 8, "stages": [[8, 1], [8, 1]], "head": 16}  # ichnet_small, two narrow stages


@pytest.fixture(scope="module")
def colour_run(shared_data, tmp_path_factory):
    """Real blood-cell smears (8 JPEGs of each PBC class) plus a ninth class of every awkward
    mode (RGBA, colour and grey palettes, CMYK JPEG, 16-bit, grey+alpha), prepared with
    ``--option channels=3`` and trained with ichnet_small at 64 px for two epochs."""
    from tests import colour_files as cf
    from zoo.training import run

    root = tmp_path_factory.mktemp("colour")
    folder = cf.extract_pbc(shared_data, root / "pbc", per_class=8)
    for name, image in cf.mode_images(seed=3).items():
        cf.save_image(image.resize((96, 80)) if image.mode != "P" else image, folder / "modes" / name)
    metrics = run({"dataset": "folder", "data_dir": str(folder), "options": {"channels": "3"},
                   "cache_dir": str(root / "cache"), "model": "ichnet_small",
                   "model_kwargs": TINY_ICHNET, "image_size": 64, "epochs": 2, "batch_size": 8,
                   "test_fraction": 0.3, "bn_calibration_batches": 1, "output_dir": str(root / "run"),
                   "export_dir": str(root / "exports"), "verbose": 0})
    return folder, root / "cache", Path(metrics["export"])


def test_colour_cache_path_equals_serving_bytes_on_the_original_files(colour_run, tmp_path):
    """Colour end to end: the cache holds three distinct planes, the export's spec says 3
    channels, and ``serving_bytes`` on the original JPEGs and PNGs gives the cache path's
    probabilities, for the trained ichnet_small and for a pixel probe (which cannot average a
    difference away), on every split."""
    import keras

    from pipelines.cache.format import row_keys
    from pipelines.datasets import get_adapter
    from pipelines.preprocessing import Preprocessing
    from pipelines.records import make_dataset, read_info
    from zoo.export import export_saved_model

    folder, cache, version = colour_run
    spec = Preprocessing.load(cache)
    assert spec == Preprocessing(kind="image", size=(64, 64), channels=3)
    assert read_info(cache)["channels"] == 3
    assert Preprocessing.load(version / "assets.extra") == spec
    images = np.concatenate([x.numpy() for x, _ in make_dataset(cache, "train", batch_size=64)])
    planes = [images[..., k] for k in range(3)]
    assert min(np.abs(planes[a] - planes[b]).mean() for a, b in ((0, 1), (1, 2), (0, 2))) > 0.02

    # the cache stores row keys for path ids: map them back to the files, as evaluate does
    rows = get_adapter("folder").read_manifest(folder, channels=3).to_dict("records")
    keys = row_keys({str(r["id"]): r for r in rows})
    paths = {keys[str(r["id"])]: folder / r["path"] for r in rows}
    labels = list(read_info(cache)["labels"])
    probe = _pixel_probe((64, 64, 3), classes=len(labels))
    models = {"ichnet_small": (keras.models.load_model(version.parents[2] / "run" / "model.keras"), version),
              "pixel_probe": (probe, export_saved_model(probe, tmp_path / "exports", model_name="probe",
                                                        labels=labels, preprocessing=spec))}
    worst = {}
    for name, (model, served_version) in models.items():
        cached = {}
        for split in ("train", "val", "test"):
            for images, _, meta in make_dataset(cache, split, batch_size=16, with_ids=True):
                probs = model(images, training=False).numpy()
                cached.update({i.decode(): p for i, p in zip(meta["id"].numpy(), probs)})
        assert len(cached) == len(paths) == 72
        jobs = {k: {"kind": "bytes", "path": str(paths[k])} for k in cached}
        served = _serve_fresh(served_version, jobs, tmp_path)
        worst[name] = max(float(np.abs(np.asarray(served[k]) - cached[k]).max()) for k in jobs)
    print(f"colour parity on {len(paths)} files, max |p_serving - p_cache|: {worst}")
    assert max(worst.values()) <= TOLERANCE, worst


def test_colour_evaluate_through_serving_and_explain_follow_the_spec(colour_run, tmp_path,
                                                                    monkeypatch):
    """``zoo.evaluate`` (through serving, and preparing the folder itself) and ``zoo.explain``
    read the pictures in colour because the export's spec says 3 channels; the CAM overlay is
    drawn on the colour image."""
    from zoo import evaluate as E
    from zoo import explain, plots

    folder, cache, version = colour_run
    report = E.evaluate(version, dataset="folder", data_dir=folder, cache=cache, split="all",
                        out=tmp_path / "served", through="serving", n_boot=0, plots=False)
    assert report["serving"]["requests"] == {"serving_bytes": 72, "serving_default": 0}
    assert report["serving"]["max_abs_diff_vs_cache"] <= TOLERANCE
    fresh = E.evaluate(version, dataset="folder", data_dir=folder, split="test",
                       out=tmp_path / "fresh", n_boot=0, plots=False)  # prepares it in colour
    assert fresh["data"]["images"] > 0

    drawn = {}
    real = plots.overlay_png

    def spy(image, heatmap, path, **kwargs):
        drawn.update(image=np.asarray(image), rgb=kwargs.get("rgb"))
        return real(image, heatmap, path, **kwargs)

    monkeypatch.setattr(plots, "overlay_png", spy)
    smear = sorted((folder / "eosinophil").glob("*.jpg"))[0]
    explain.explain_image(version, smear, out=tmp_path / "cam")
    assert drawn["rgb"] is True and drawn["image"].shape == (64, 64, 3)
    assert np.abs(drawn["image"][..., 0] - drawn["image"][..., 2]).mean() > 0.02
    assert (tmp_path / "cam" / "explain.json").is_file()
