"""The one table of picture formats: which containers medzoo reads, told by their first bytes.

Prepare, explain and evaluate (:func:`pipelines.preprocessing.read_pixels`) and the export's
``serving_bytes`` signature (:func:`pipelines.preprocessing_tf.tf_image_format_ok` and its
decoder) read this table, so a file is accepted by both or the difference is written here.
A file's format is sniffed from its content (:func:`sniff`), never from its name: ``x.png``
holding a JPEG is read as the JPEG it is, and a file no row matches is a ``DataError``
(quarantined by prepare), not whatever else Pillow could open.

=======  =====================  ============  =====================================================
format   magic bytes            serving       note
=======  =====================  ============  =====================================================
png      ``\\x89PNG\\r\\n\\x1a\\n``  yes           8- and 16-bit
jpeg     ``\\xff\\xd8\\xff``        yes           accurate integer IDCT on both sides; CMYK to RGB alike
bmp      ``BM``                 yes
gif      ``GIF87a``/``GIF89a``  yes           first frame
webp     ``RIFF....WEBP``       yes           lossy and lossless
tiff     ``II*\\0``/``MM\\0*``     no            no TensorFlow decoder: prepare reads it; a client
                                              decodes it and sends pixels to ``serving_default``
=======  =====================  ============  =====================================================

Standard library only (worker processes and TensorFlow-free decoding import it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["FORMATS", "IMAGE_SUFFIXES", "SERVING_FORMATS", "ImageFormat", "by_name", "format_list",
           "sniff", "sniff_file"]

# Bytes enough to tell every format of the table apart.
HEAD_BYTES = 16


@dataclass(frozen=True)
class ImageFormat:
    """One row of the table.

    Attributes:
        name: the table's name (``"jpeg"``).
        pillow: Pillow's format id, so that Pillow opens the file as this format only.
        suffixes: the usual file name endings (used to list a folder, never to decide).
        magic: alternatives, each a tuple of ``(offset, bytes)`` that must all match.
        serving: whether ``serving_bytes`` decodes it (a TensorFlow decoder exists).
    """

    name: str
    pillow: str
    suffixes: tuple[str, ...]
    magic: tuple[tuple[tuple[int, bytes], ...], ...]
    serving: bool

    def matches(self, head: bytes) -> bool:
        return any(all(head[o:o + len(b)] == b for o, b in alternative) for alternative in self.magic)


FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("png", "PNG", (".png",), (((0, b"\x89PNG\r\n\x1a\n"),),), True),
    ImageFormat("jpeg", "JPEG", (".jpg", ".jpeg"), (((0, b"\xff\xd8\xff"),),), True),
    ImageFormat("bmp", "BMP", (".bmp",), (((0, b"BM"),),), True),
    ImageFormat("gif", "GIF", (".gif",), (((0, b"GIF87a"),), ((0, b"GIF89a"),)), True),
    ImageFormat("webp", "WEBP", (".webp",), (((0, b"RIFF"), (8, b"WEBP")),), True),
    ImageFormat("tiff", "TIFF", (".tif", ".tiff"), (((0, b"II*\x00"),), ((0, b"MM\x00*"),)), False),
)
SERVING_FORMATS: tuple[str, ...] = tuple(f.name for f in FORMATS if f.serving)
IMAGE_SUFFIXES: tuple[str, ...] = tuple(s for f in FORMATS for s in f.suffixes)


def by_name(name: str) -> ImageFormat:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise KeyError(f"{name!r} is not in the format table ({format_list()}).")


def format_list(*, serving: bool = False) -> str:
    """``"PNG, JPEG, BMP, GIF, WebP or TIFF"``: the table as a message says it."""
    shown = {"webp": "WebP"}
    names = [shown.get(f.name, f.name.upper()) for f in FORMATS if f.serving or not serving]
    return ", ".join(names[:-1]) + " or " + names[-1]


def sniff(head: bytes) -> ImageFormat | None:
    """The row whose magic bytes ``head`` (a file's first bytes) starts with; None if none."""
    for fmt in FORMATS:
        if fmt.matches(head):
            return fmt
    return None


def sniff_file(path: str | os.PathLike) -> ImageFormat | None:
    """:func:`sniff` on a file's first bytes (None for an unreadable or unknown file)."""
    try:
        with open(path, "rb") as handle:
            return sniff(handle.read(HEAD_BYTES))
    except OSError:
        return None
