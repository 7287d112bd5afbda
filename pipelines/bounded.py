"""Bounded inflation: compressed input never inflates past a stated cap.

A deflate stream can inflate about a thousand times: a 1 MB DICOM in the Deflated Explicit VR
Little Endian transfer syntax became 1 GB inside pydicom (``zlib.decompress`` on the rest of the
file, no limit), and a 3 MB one 3.2 GB. Everything the pipelines inflate is checked here first:

- :func:`inflate_limit` is the one rule: inflated data may be at most :data:`MAX_INFLATED_BYTES`
  (256 MiB) or :data:`INFLATE_RATIO` (50) times its compressed size, whichever is larger. Real
  images compress a few times; a bomb compresses a thousand times.
- :func:`check_inflated_size` refuses a size declared before reading (a tar member's
  ``size``, a zip member's ``file_size``: both readers stop at the declared size).
- :func:`check_deflate_stream` inflates a raw deflate stream in 1 MiB steps, keeping nothing,
  and refuses it once the output passes the limit (memory stays one step whatever the input),
  for readers such as pydicom that inflate a whole stream in one call.

Every refusal is a :class:`~pipelines.manifest.DataError` naming the file, so prepare
quarantines it.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

from pipelines.manifest import DataError

__all__ = ["INFLATE_RATIO", "MAX_INFLATED_BYTES", "check_deflate_stream", "check_inflated_size",
           "inflate_limit"]

# Inflated bytes always allowed (256 MiB: a 2**27-pixel 16-bit image, the largest that the DICOM
# size check lets through, fits) and the compression ratio allowed beyond that.
MAX_INFLATED_BYTES = 256 * 2**20
INFLATE_RATIO = 50
_STEP = 2**20


def inflate_limit(compressed_size: int) -> int:
    """The most bytes ``compressed_size`` bytes of compressed data may inflate to."""
    return max(MAX_INFLATED_BYTES, INFLATE_RATIO * max(0, int(compressed_size)))


def _refuse(path, what: str, limit: int):
    return DataError(
        path,
        f"{what} inflates to more than {limit} bytes (the limit is {MAX_INFLATED_BYTES // 2**20} "
        f"MiB or {INFLATE_RATIO} times the compressed size, whichever is larger), so it was "
        "refused as a decompression bomb",
    )


def check_inflated_size(path, what: str, size: int, compressed_size: int) -> None:
    """DataError if a declared inflated ``size`` exceeds :func:`inflate_limit` of its source."""
    limit = inflate_limit(compressed_size)
    if int(size) > limit:
        raise _refuse(path, what, limit)


def check_deflate_stream(stream: BinaryIO, path, what: str, *, compressed_size: int,
                         wbits: int = -zlib.MAX_WBITS) -> int:
    """Inflate ``stream`` (read to its end) without keeping it; its inflated size in bytes.

    DataError naming ``path`` once the output passes :func:`inflate_limit` of
    ``compressed_size``; a corrupt stream raises ``zlib.error`` as ``zlib.decompress`` would.
    """
    limit = inflate_limit(compressed_size)
    inflater = zlib.decompressobj(wbits)
    total = 0
    while not inflater.eof:
        data = inflater.unconsumed_tail or stream.read(_STEP)
        if not data:
            break
        total += len(inflater.decompress(data, _STEP))
        if total > limit:
            raise _refuse(path, what, limit)
    return total + len(inflater.flush())
