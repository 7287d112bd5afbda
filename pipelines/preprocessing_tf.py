"""The TensorFlow twins of the one preprocessing: the same steps as graph ops.

Serving signatures (``zoo.export``) and ``make_dataset`` run these; :mod:`pipelines.preprocessing`
runs the NumPy originals and re-exports these names, and ``tests/pipelines/test_preprocessing.py``
pins each twin to its original. TensorFlow is imported inside each function, so that the
decoding side (:mod:`pipelines.preprocessing`, which imports this module) stays free of it.
"""

from __future__ import annotations

import numpy as np

from pipelines.formats import FORMATS
from pipelines.transforms import GREY_WEIGHTS, LEVELS, ROUND_OFFSET

__all__ = [
    "tf_channels",
    "tf_declared_pixels",
    "tf_decode_image",
    "tf_finish",
    "tf_image_format_ok",
    "tf_quantize",
    "tf_resize",
]


def tf_image_format_ok(contents):
    """True (a bool tensor) when ``contents`` starts with the magic bytes of a format that
    :data:`pipelines.formats.FORMATS` marks as served: the graph reads the same table as
    :func:`pipelines.preprocessing.read_pixels`."""
    import tensorflow as tf

    def matches(alternative):
        checks = [tf.equal(tf.strings.substr(contents, offset, len(magic)), magic)
                  for offset, magic in alternative]
        return tf.reduce_all(tf.stack(checks))

    served = [matches(alt) for fmt in FORMATS if fmt.serving for alt in fmt.magic]
    return tf.reduce_any(tf.stack(served))


def tf_decode_image(contents, channels: int):
    """Encoded PNG/JPEG/BMP/GIF/WebP bytes (a scalar string) -> float32 [H, W, channels] in [0, 1].

    The graph twin of :func:`pipelines.preprocessing.read_pixels` + :func:`~pipelines.preprocessing.to_channels`.
    """
    import tensorflow as tf

    def jpeg():
        decoded = tf.io.decode_jpeg(contents, channels=0, dct_method="INTEGER_ACCURATE")
        return tf.cast(decoded, tf.float32) / 255.0

    def png():  # 8- and 16-bit alike: an 8-bit value v comes back as v * 257
        decoded = tf.io.decode_png(contents, channels=0, dtype=tf.uint16)
        return tf.cast(decoded, tf.float32) / 65535.0

    def other():  # BMP, GIF (first frame), WebP
        decoded = tf.io.decode_image(contents, channels=0, dtype=tf.uint8, expand_animations=False)
        return tf.cast(decoded, tf.float32) / 255.0

    is_png = tf.equal(tf.strings.substr(contents, 0, 8), b"\x89PNG\r\n\x1a\n")
    image = tf.cond(tf.io.is_jpeg(contents), jpeg, lambda: tf.cond(is_png, png, other))
    image = tf.ensure_shape(image, [None, None, None])
    return tf_channels(image, channels)


def tf_declared_pixels(contents):
    """Height x width an encoded PNG/JPEG/BMP/GIF/WebP declares in its header (int64), read
    without decoding a pixel; 0 for a header too short to say (the decoder then fails cleanly)."""
    import tensorflow as tf

    def field(offset, length, little_endian):
        raw = tf.io.decode_raw(tf.strings.substr(contents, offset, length), tf.uint8,
                               little_endian=True)
        raw = tf.cast(raw, tf.int64)
        order = tf.range(length, dtype=tf.int64) if little_endian else tf.range(
            length - 1, -1, -1, dtype=tf.int64)
        return tf.reduce_sum(raw * tf.bitwise.left_shift(tf.constant(1, tf.int64), 8 * order))

    size = tf.strings.length(contents)

    def png():
        return field(16, 4, False) * field(20, 4, False)

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(contents), tf.int64)
        return shape[0] * shape[1]

    def bmp():
        height = field(22, 4, True)
        height = tf.where(height >= 2**31, 2**32 - height, height)  # top-down BMPs: negative
        return field(18, 4, True) * height

    def gif():
        return field(6, 2, True) * field(8, 2, True)

    def webp():  # the first chunk: VP8 (lossy), VP8L (lossless) or VP8X (extended)
        chunk = tf.strings.substr(contents, 12, 4)
        lossless = field(21, 4, True)
        return tf.case([
            (tf.equal(chunk, b"VP8 "), lambda: tf.bitwise.bitwise_and(field(26, 2, True), 0x3FFF)
             * tf.bitwise.bitwise_and(field(28, 2, True), 0x3FFF)),
            (tf.equal(chunk, b"VP8L"), lambda: (tf.bitwise.bitwise_and(lossless, 0x3FFF) + 1)
             * (tf.bitwise.bitwise_and(tf.bitwise.right_shift(lossless, 14), 0x3FFF) + 1)),
            (tf.equal(chunk, b"VP8X"), lambda: (field(24, 3, True) + 1) * (field(27, 3, True) + 1)),
        ], default=lambda: tf.constant(0, tf.int64), exclusive=True)

    return tf.case(
        [
            (tf.less(size, 26), lambda: tf.constant(0, tf.int64)),
            (tf.equal(tf.strings.substr(contents, 0, 8), b"\x89PNG\r\n\x1a\n"), png),
            (tf.io.is_jpeg(contents), jpeg),
            (tf.equal(tf.strings.substr(contents, 0, 2), b"BM"), bmp),
            (tf.equal(tf.strings.substr(contents, 0, 3), b"GIF"), gif),
            (tf.logical_and(tf.equal(tf.strings.substr(contents, 0, 4), b"RIFF"),
                            tf.equal(tf.strings.substr(contents, 8, 4), b"WEBP")), webp),
        ],
        default=lambda: tf.constant(0, tf.int64),
        exclusive=False,
    )


def tf_channels(image, channels: int):
    """The graph twin of :func:`pipelines.preprocessing.to_channels` for a dynamic channel count (1 to 4)."""
    import tensorflow as tf

    c = tf.shape(image)[-1]
    # grey+alpha / RGBA: drop alpha (kept when it *is* the wanted channel count)
    drop_alpha = tf.logical_and(tf.logical_or(tf.equal(c, 2), tf.equal(c, 4)),
                                tf.not_equal(c, channels))
    image = tf.cond(drop_alpha, lambda: image[..., :-1], lambda: image)
    c = tf.shape(image)[-1]
    weights = [np.float32(w) for w in GREY_WEIGHTS]

    def luma():
        return (image[..., 0:1] * weights[0] + image[..., 1:2] * weights[1]
                + image[..., 2:3] * weights[2])

    def repeat(grey):
        return tf.tile(grey, [1, 1, channels]) if channels != 1 else grey

    if channels == 3:
        out = tf.cond(tf.equal(c, 3), lambda: image, lambda: repeat(image[..., :1]))
    else:
        out = tf.cond(tf.equal(c, 3), lambda: repeat(luma()),
                      lambda: repeat(image[..., :1]) if channels != 1 else image[..., :1])
    return tf.ensure_shape(out, [None, None, channels])


def tf_resize(images, size, *, antialias: bool = True):
    """Batch [N, H, W, C] -> [N, h, w, C]: bilinear, antialiased; exact identity when it fits."""
    import tensorflow as tf

    size = tf.constant([int(size[0]), int(size[1])], tf.int32)
    same = tf.reduce_all(tf.equal(tf.shape(images)[1:3], size))
    return tf.cond(
        same,
        lambda: tf.identity(images),
        lambda: tf.image.resize(images, size, method="bilinear", antialias=antialias),
    )


def tf_quantize(images, levels: int = LEVELS):
    """Round to k/levels exactly as the uint8 cache does (:func:`pipelines.preprocessing.quantize`)."""
    import tensorflow as tf

    if not levels:
        return images
    scaled = tf.clip_by_value(images, 0.0, 1.0) * float(levels)
    return tf.floor(scaled + ROUND_OFFSET) * (1.0 / float(levels))


def tf_finish(images, spec):
    """A float batch at any size, already in the model's channels -> the model input, for a
    :class:`pipelines.preprocessing.Preprocessing` ``spec`` (its size, levels, channels)."""
    import tensorflow as tf

    out = tf_resize(images, spec.size, antialias=spec.antialias)
    out = tf_quantize(out, spec.levels)
    return tf.ensure_shape(out, [None, spec.size[0], spec.size[1], spec.channels])
