"""What one serving request may cost: at most ``max_batch`` images (an export option) in either
signature, and in serving_bytes only formats of the one table (pipelines.formats), each declaring
at most MAX_IMAGE_PIXELS in its header (WebP included) before anything is decoded."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from PIL import Image

from pipelines.formats import SERVING_FORMATS
from pipelines.preprocessing import MAX_IMAGE_PIXELS


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    import keras
    import tensorflow as tf

    import zoo
    from zoo.export import export_saved_model

    keras.utils.set_random_seed(0)
    model = zoo.get_model("myositisnet", input_shape=(32, 32, 1), num_classes=2)
    version = export_saved_model(model, tmp_path_factory.mktemp("limits"), model_name="tiny",
                                 labels=["a", "b"], max_batch=2)
    return version, tf.saved_model.load(str(version))


def _png(k: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 24), 40 * k, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _webp_declaring(width: int, height: int) -> bytes:
    """The first bytes of a lossless WebP declaring width x height (its pixels never come)."""
    bits = (width - 1) | ((height - 1) << 14)
    body = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 16
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def test_a_batch_above_max_batch_is_refused_in_both_signatures(export):
    import tensorflow as tf

    version, loaded = export
    default, by_bytes = loaded.signatures["serving_default"], loaded.signatures["serving_bytes"]
    assert default(image=np.full((2, 32, 32, 1), 0.5, np.float32))["probabilities"].shape == (2, 2)
    assert by_bytes(image_bytes=tf.constant([_png(0), _png(1)]))["probabilities"].shape == (2, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than 2 images .*max_batch"):
        default(image=np.full((3, 32, 32, 1), 0.5, np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than 2 images .*max_batch"):
        by_bytes(image_bytes=tf.constant([_png()] * 3))
    doc = json.loads((version / "assets.extra" / "preprocessing.json").read_text())
    assert doc["serving_bytes"]["max_batch"] == doc["serving_default"]["max_batch"] == 2
    assert doc["serving_bytes"]["formats"] == list(SERVING_FORMATS)
    assert doc["serving_bytes"]["max_pixels"] == MAX_IMAGE_PIXELS


def test_serving_bytes_refuses_formats_outside_the_table_and_webp_bombs(export):
    import tensorflow as tf

    _, loaded = export
    by_bytes = loaded.signatures["serving_bytes"]
    tiff = io.BytesIO()
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tiff, format="TIFF")
    with pytest.raises(tf.errors.InvalidArgumentError, match="takes PNG, JPEG, BMP, GIF or WebP"):
        by_bytes(image_bytes=tf.constant([tiff.getvalue()]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="refuses images above"):
        by_bytes(image_bytes=tf.constant([_webp_declaring(16000, 16000)]))
    webp = io.BytesIO()
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(webp, format="WEBP", lossless=True)
    assert by_bytes(image_bytes=tf.constant([webp.getvalue()]))["probabilities"].shape == (1, 2)


def test_max_batch_is_a_positive_integer(tmp_path):
    import zoo
    from zoo.export import export_saved_model

    model = zoo.get_model("myositisnet", input_shape=(32, 32, 1), num_classes=2)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_batch"):
            export_saved_model(model, tmp_path, model_name="tiny", labels=["a", "b"], max_batch=bad)
