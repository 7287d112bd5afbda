"""One format table (pipelines.formats) read by prepare and serving alike: a format is accepted by
both or the table says why not; the content decides, not the name; a file that only differs from
another in its ending is quarantined, not fatal. And the decode budget: a picture declaring more
than MAX_IMAGE_PIXELS is refused from its header, before a pixel is decoded."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from pipelines import formats, preprocessing
from pipelines.manifest import DataError

SAVE = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "gif": "GIF", "webp": "WEBP", "tiff": "TIFF"}


def _encoded(fmt: str, image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    options = {"lossless": True} if fmt == "webp" else {"quality": 95} if fmt == "jpeg" else {}
    image.save(buffer, format=SAVE[fmt], **options)
    return buffer.getvalue()


def _picture(channels: int = 3) -> Image.Image:
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (21, 17, 3), np.uint8)
    return Image.fromarray(pixels) if channels == 3 else Image.fromarray(pixels[..., 0])


def test_the_table_is_the_one_both_sides_read():
    assert [f.name for f in formats.FORMATS] == list(SAVE)
    assert preprocessing.SERVING_FORMATS == formats.SERVING_FORMATS == (
        "png", "jpeg", "bmp", "gif", "webp")
    assert set(preprocessing.IMAGE_SUFFIXES) == {s for f in formats.FORMATS for s in f.suffixes}
    from pipelines.datasets import base

    assert base.IMAGE_SUFFIXES == preprocessing.IMAGE_SUFFIXES


@pytest.mark.parametrize("fmt", list(SAVE))
@pytest.mark.parametrize("channels", [1, 3])
def test_prepare_and_serving_agree_on_every_format(fmt, channels, tmp_path):
    """Every row: prepare reads it; serving's guard accepts exactly the served rows, and its
    decoder gives prepare's pixels bit for bit."""
    import tensorflow as tf

    blob = _encoded(fmt, _picture(channels))
    path = tmp_path / f"x.{fmt}"
    path.write_bytes(blob)
    assert formats.sniff(blob).name == fmt
    offline = preprocessing.read_pixels(path)
    accepted = bool(preprocessing.tf_image_format_ok(tf.constant(blob)).numpy())
    assert accepted == formats.by_name(fmt).serving
    if accepted:
        served = preprocessing.tf_decode_image(tf.constant(blob), offline.shape[-1]).numpy()
        np.testing.assert_array_equal(served, offline)
        declared = int(preprocessing.tf_declared_pixels(tf.constant(blob)).numpy())
        assert declared == 21 * 17


def test_cmyk_jpeg_pixels_agree_between_prepare_and_serving(tmp_path):
    """The CMYK report of issue 22: Pillow and TensorFlow decode a CMYK JPEG to the same RGB
    (tests/export/test_preprocessing_parity.py pins the probabilities end to end)."""
    import tensorflow as tf

    path = tmp_path / "cmyk.jpg"
    _picture(3).convert("CMYK").save(path, quality=95)
    offline = preprocessing.read_pixels(path)
    served = preprocessing.tf_decode_image(tf.constant(path.read_bytes()), 3).numpy()
    np.testing.assert_array_equal(served, offline)


def test_the_content_decides_not_the_name(tmp_path):
    jpeg_named_png = tmp_path / "x.png"
    jpeg_named_png.write_bytes(_encoded("jpeg", _picture()))
    real = tmp_path / "x.jpg"
    real.write_bytes(jpeg_named_png.read_bytes())
    np.testing.assert_array_equal(preprocessing.read_pixels(jpeg_named_png),
                                  preprocessing.read_pixels(real))
    ppm = tmp_path / "y.png"  # a format Pillow reads but the table (and serving) does not
    _picture().save(ppm, format="PPM")
    with pytest.raises(DataError, match="first bytes match none of them"):
        preprocessing.read_pixels(ppm)


def test_a_file_differing_only_in_its_ending_is_quarantined_not_fatal(tmp_path, capsys):
    from pipelines.prepare import main

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(data / cls / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(data / "a" / "x.png", format="JPEG")
    Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(data / "a" / "x.jpg")
    out = tmp_path / "cache"
    assert main(["--dataset", "folder", "--data-dir", str(data), "--out", str(out),
                 "--image-size", "8", "--quiet", "--keep-path-ids"]) == 0, capsys.readouterr().err
    rows = (out / "quarantine.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("a/x.png,its content is JPEG but its name ends .png")
    from pipelines.cells import read_csv

    assert "a/x" in set(read_csv(out / "manifest.csv", dtype={"id": str})["id"])


def _png(width: int, height: int) -> bytes:
    """A real, valid grey PNG of zeros: 11000 x 11000 is about 120 KB on disk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(bytes(width + 1)) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_the_decode_budget_refuses_a_large_picture_before_decoding(tmp_path, monkeypatch):
    """The 11000 x 11000 PNG of issue 22 (121 million pixels, ~120 KB) is refused by default,
    from its header; prepare, explain and evaluate all read pictures through read_pixels."""
    from PIL import ImageFile

    path = tmp_path / "big.png"
    path.write_bytes(_png(11000, 11000))
    assert path.stat().st_size < 200_000
    spec = preprocessing.Preprocessing(kind="image", size=(32, 32), channels=1)

    def refuse(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    for call in (lambda: preprocessing.read_pixels(path), lambda: preprocessing.load_file(path, spec)):
        with pytest.raises(DataError, match=f"limit of {preprocessing.MAX_IMAGE_PIXELS}"):
            call()
    assert preprocessing.MAX_IMAGE_PIXELS == 40_000_000


def test_an_accepted_picture_costs_a_bounded_multiple_of_its_pixels(tmp_path):
    """An RGB picture decoded in a fresh process: the peak memory grows by at most 24 bytes per
    declared pixel (Pillow's image, the uint8 array and the float32 RGB array; measured ~19),
    so an accepted picture costs at most ~1 GB at the 40-million-pixel cap."""
    path = tmp_path / "rgb.png"
    side = 2000
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), np.uint8)).save(path)
    code = (
        "import resource, sys\n"
        "import PIL.Image, PIL.PngImagePlugin\n"
        "from pipelines.preprocessing import read_pixels\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"read_pixels({str(path)!r})\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) * 1024)\n"
    )
    grown = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout.strip())
    assert grown <= 24 * side * side, grown / (side * side)
