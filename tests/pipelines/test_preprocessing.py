"""The one preprocessing spec: NumPy (prepare, explain, evaluate) and TensorFlow (serving, tf.data)
implement the same steps; these tests pin the two together on real encoded files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipelines import preprocessing as pp
from pipelines import transforms
from pipelines.manifest import DataError


def _files(tmp_path):
    """Encoded files of every kind the spec reads: grey, RGBA odd size, JPEG, 16-bit, palette, BMP,
    GIF, grey JPEG."""
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 1, 417, dtype=np.float32)[None, :] * np.linspace(0, 1, 301)[:, None]
    out = {}

    def save(name, array, mode=None, **kw):
        path = tmp_path / name
        Image.fromarray(array, mode).save(path, **kw) if mode else Image.fromarray(array).save(path, **kw)
        out[name] = path

    save("grey512.png", (rng.random((512, 512)) * 255).astype(np.uint8))
    rgba = np.dstack([(smooth * 255).astype(np.uint8)] * 3 + [np.full((301, 417), 90, np.uint8)])
    rgba[..., 0] = (rng.random((301, 417)) * 255).astype(np.uint8)
    save("rgba_odd.png", rgba, "RGBA")
    save("colour.jpg", (rng.random((97, 131, 3)) * 255).astype(np.uint8), quality=90)
    save("grey.jpg", (rng.random((97, 131)) * 255).astype(np.uint8), quality=90)
    save("deep16.png", (smooth[:200, :150] * 65535).astype(np.uint16))
    path = tmp_path / "palette.png"
    Image.fromarray((rng.random((64, 80, 3)) * 255).astype(np.uint8)).convert("P").save(path)
    out["palette.png"] = path
    save("colour.bmp", (rng.random((64, 80, 3)) * 255).astype(np.uint8))
    path = tmp_path / "anim.gif"
    Image.fromarray((rng.random((64, 80, 3)) * 255).astype(np.uint8)).convert("P").save(path)
    out["anim.gif"] = path
    return out


def test_spec_round_trips_through_json(tmp_path):
    spec = pp.Preprocessing(kind="ct", size=(64, 96), channels=3, windows="brain,subdural,bone")
    spec.save(tmp_path)
    loaded = pp.Preprocessing.load(tmp_path)
    assert loaded == spec
    doc = json.loads((tmp_path / pp.SPEC_FILE).read_text())
    assert doc["steps"]["resize"]["antialias"] is True and doc["levels"] == 255
    # windows are normalised: presets by name, others as center/width
    assert pp.Preprocessing(kind="ct", size=(8, 8), channels=2, windows="40/80,-600/1500").windows == "brain,lung"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(kind="mri", size=(8, 8), channels=1), "kind"),
        (dict(kind="ct", size=(8, 8), channels=1, windows="brain,bone"), "one channel per window"),
        (dict(kind="image", size=(8, 8), channels=1, windows="brain"), "CT only"),
        (dict(kind="image", size=(0, 8), channels=1), "size"),
        (dict(kind="image", size=(8, 8), channels=1, resize="nearest"), "bilinear"),
    ],
)
def test_bad_specs_are_one_sentence(kwargs, words):
    with pytest.raises(ValueError, match=words):
        pp.Preprocessing(**kwargs)


def test_an_old_file_without_a_spec_names_the_fix(tmp_path):
    (tmp_path / pp.SPEC_FILE).write_text(json.dumps({"layout": "NHWC"}))
    with pytest.raises(ValueError, match="export the model again"):
        pp.Preprocessing.load(tmp_path)


def test_channel_rule():
    rgb = np.random.default_rng(1).random((5, 6, 3)).astype(np.float32)
    luma = pp.to_channels(rgb, 1)
    np.testing.assert_allclose(luma[..., 0], rgb @ np.array(pp.GREY_WEIGHTS, np.float32), atol=1e-6)
    assert pp.to_channels(rgb, 3) is not None and np.array_equal(pp.to_channels(rgb, 3), rgb)
    assert pp.to_channels(rgb, 2).shape == (5, 6, 2)
    grey = rgb[..., :1]
    assert np.array_equal(pp.to_channels(grey, 3), np.repeat(grey, 3, -1))
    rgba = np.dstack([rgb, np.ones((5, 6, 1), np.float32)])
    assert np.array_equal(pp.to_channels(rgba, 3), rgb)
    with pytest.raises(ValueError, match="5-channel"):
        pp.to_channels(np.zeros((2, 2, 5), np.float32), 3)


def test_quantize_matches_the_uint8_cache():
    x = np.random.default_rng(2).random((40, 40, 1)).astype(np.float32)
    q = pp.quantize(x)
    assert np.array_equal(q, pp.dequantize(transforms.to_uint8(x)))
    assert np.array_equal(pp.quantize(q), q)  # idempotent: a quantised input is left alone
    # an exact half (the average of two neighbouring levels) always rounds up, on both sides
    halves = (np.arange(255, dtype=np.float32) + 0.5) / 255
    assert np.array_equal(transforms.to_uint8(halves), np.arange(1, 256))
    import tensorflow as tf

    np.testing.assert_array_equal(pp.tf_quantize(tf.constant(halves)).numpy(), pp.quantize(halves))


@pytest.mark.parametrize("channels", [1, 3])
def test_graph_decode_equals_offline_decode_on_real_files(tmp_path, channels):
    """Bit-for-bit: PNG 8/16-bit, RGBA, palette, JPEG (accurate IDCT), BMP, GIF."""
    import tensorflow as tf

    spec = pp.Preprocessing(kind="image", size=(96, 96), channels=channels)
    for name, path in _files(tmp_path).items():
        offline = pp.to_channels(pp.decode_file(path, spec), channels)
        graph = pp.tf_decode_image(tf.constant(path.read_bytes()), channels).numpy()
        assert graph.shape == offline.shape, name
        np.testing.assert_array_equal(graph, offline, err_msg=name)


@pytest.mark.parametrize("channels", [1, 3])
def test_graph_finish_equals_offline_finish(tmp_path, channels):
    """Resize + rounding: equal except where a value sits on a rounding tie (then one step)."""
    import tensorflow as tf

    spec = pp.Preprocessing(kind="image", size=(64, 64), channels=channels)
    for name, path in _files(tmp_path).items():
        offline = pp.load_file(path, spec)
        decoded = pp.tf_decode_image(tf.constant(path.read_bytes()), channels)
        graph = pp.tf_finish(decoded[None], spec)[0].numpy()
        diff = np.abs(graph - offline)
        assert diff.max() <= 1 / 255 + 1e-6, name
        assert (diff > 1e-6).mean() < 0.002, name


def test_graph_resize_matches_the_cache_resize():
    import tensorflow as tf

    x = np.random.default_rng(3).random((301, 417, 3)).astype(np.float32)
    for size in [(128, 128), (64, 200), (512, 600)]:
        offline = pp.resize(x, size)
        graph = pp.tf_resize(tf.constant(x[None]), size).numpy()[0]
        np.testing.assert_allclose(graph, offline, atol=2e-5)
    same = pp.tf_resize(tf.constant(x[None]), (301, 417)).numpy()[0]
    assert np.array_equal(same, x)


def test_ct_files_go_through_the_windows():
    from pydicom.data import get_testdata_file

    from pipelines import dicom, transforms

    path = get_testdata_file("CT_small.dcm")
    spec = pp.Preprocessing(kind="ct", size=(64, 64), channels=3, windows="brain,subdural,bone")
    image = pp.load_file(path, spec)
    expected = pp.quantize(transforms.resize(transforms.apply_windows(dicom.read_hu(path)), (64, 64)))
    np.testing.assert_array_equal(image, expected)
    with pytest.raises(ValueError, match="CT file"):
        pp.load_file(path, pp.Preprocessing(kind="image", size=(64, 64), channels=1))


def test_bad_files_are_data_errors(tmp_path):
    spec = pp.Preprocessing(kind="image", size=(8, 8), channels=1)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError):
        pp.load_file(broken, spec)
    with pytest.raises(DataError):
        pp.load_file(tmp_path / "missing.png", spec)
    np.save(tmp_path / "hu.npy", np.full((8, 8), 300.0, np.float32))
    with pytest.raises(ValueError, match="outside"):
        pp.load_file(tmp_path / "hu.npy", spec)
