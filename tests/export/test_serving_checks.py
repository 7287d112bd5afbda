"""The serving signatures check their input: serving_default answers InvalidArgument (saying
what to send) for NaN, unscaled 0-255 and negative pixels and [0, K] for an empty batch;
serving_bytes refuses a decompression bomb from its header and decodes BMP and GIF (which
preprocessing.json advertises) for 1- and 3-channel models."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """{channels: loaded SavedModel} for a tiny 1-channel and a tiny 3-channel export."""
    import keras
    import tensorflow as tf

    import zoo
    from zoo.export import export_saved_model

    root = tmp_path_factory.mktemp("serving-checks")
    out = {}
    for channels in (1, 3):
        keras.utils.set_random_seed(0)
        model = zoo.get_model("myositisnet", input_shape=(32, 32, channels), num_classes=2)
        version = export_saved_model(model, root / f"c{channels}", model_name="tiny",
                                     labels=["a", "b"],
                                     preprocessing={"activation": "softmax"})
        out[channels] = tf.saved_model.load(str(version))
    return out


def _default(loaded, images):
    return loaded.signatures["serving_default"](image=np.asarray(images, np.float32))


def _bytes(loaded, blobs):
    import tensorflow as tf

    return loaded.signatures["serving_bytes"](image_bytes=tf.constant(blobs))


@pytest.mark.parametrize("bad, says", [
    ("nan", "NaN or infinite"), ("unscaled", "above 1"), ("negative", "negative")])
def test_serving_default_rejects_bad_pixels_with_invalid_argument(served, bad, says):
    import tensorflow as tf

    images = np.full((2, 32, 32, 1), 0.5, np.float32)
    if bad == "nan":
        images[1, 3, 4, 0] = np.nan
    elif bad == "unscaled":
        images = np.random.default_rng(0).integers(0, 256, images.shape).astype(np.float32)
    else:
        images[0, 0, 0, 0] = -0.5
    with pytest.raises(tf.errors.InvalidArgumentError, match=says) as caught:
        _default(served[1], images)
    assert "send" in str(caught.value)  # the message says what to send


def test_serving_default_answers_valid_input_and_an_empty_batch(served):
    probs = next(iter(_default(served[3], np.full((2, 40, 24, 3), 0.3)).values())).numpy()
    assert probs.shape == (2, 2) and np.all(np.isfinite(probs))
    empty = next(iter(_default(served[1], np.zeros((0, 32, 32, 1))).values())).numpy()
    assert empty.shape == (0, 2)


def _png_bomb(side: int = 16000) -> bytes:
    """A real, valid 8-bit grey PNG of side x side black pixels: a few hundred KB on disk."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    packer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0 + one zero per pixel
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_serving_bytes_refuses_a_decompression_bomb_from_its_header(served):
    import tensorflow as tf

    bomb = _png_bomb()
    assert len(bomb) < 1_000_000
    with pytest.raises(tf.errors.InvalidArgumentError, match="refuses images above"):
        _bytes(served[1], [bomb])


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "PNG", "JPEG"])
@pytest.mark.parametrize("channels", [1, 3])
def test_serving_bytes_decodes_every_advertised_format(served, fmt, channels):
    rng = np.random.default_rng(1)
    grey = (rng.random((40, 30)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([grey] * 3) if channels == 3 else grey).save(buffer, format=fmt)
    probs = next(iter(_bytes(served[channels], [buffer.getvalue()] * 2).values())).numpy()
    assert probs.shape == (2, 2) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
