"""Grey or colour: the ``channels=1|3|auto`` option of the picture adapters (``folder``, ``csv``).

When to choose 3: where colour is signal. Fundus photographs (the red of haemorrhages, the
yellow of exudates), dermoscopy, microscopy and stained pathology (H&E, Giemsa and
May-Grünwald smears: the stain *is* the signal that separates an eosinophil from a
neutrophil). Keep 1 (the default) for radiographs, CT and MRI exports, ultrasound: their RGB
files carry the same grey three times, and one channel is a third of the cache.

* ``channels=1`` (default): every picture becomes grey; colour by BT.601 luma on the float
  values (:func:`pipelines.preprocessing.to_channels`). The cache is byte for byte what it was
  before the option existed, and so is its key (an explicit ``channels=1`` is dropped from
  the settings).
* ``channels=3``: RGB. Colour stays colour; a grey picture is repeated into 3 equal planes.
* ``channels=auto``: 3 when any picture of the manifest is colour, else 1, decided from the
  files' own modes in a header-only pass (Pillow's ``Image.open`` reads the header; no pixel
  is decoded). The rule is by mode, not by pixels: an RGB JPEG whose planes happen to be equal
  still counts as colour (pass ``channels=1`` for such a dataset).

Modes: grey are ``1``, ``L``, ``LA``, ``La``, ``I``, ``I;16*`` and ``F``; palette images
(``P``, ``PA``) are grey when every palette entry has r = g = b (read from the header's
palette, e.g. PNG's PLTE chunk), else colour; every other mode (RGB, RGBA, RGBX, CMYK, YCbCr,
LAB, HSV) is colour. A mixed folder therefore prepares as 3 channels, its grey pictures
repeated to 3 planes. A file whose header cannot be read does not vote; it is quarantined
when it is decoded, as before.

Alpha is dropped, not composited: RGBA -> RGB and grey+alpha -> grey keep the stored colour
values under any transparency (a transparent pixel becomes its colour, not black). Prepare
(:func:`pipelines.preprocessing.read_pixels`) and the serving graph
(:func:`pipelines.preprocessing.tf_channels`) both do exactly this, so they agree.
CMYK (JPEG) becomes RGB by Pillow's conversion, which TensorFlow's JPEG decoder matches bit
for bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

CHOICES = ("1", "3", "auto")
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
PALETTE_MODES = frozenset({"P", "PA"})


def parse_channels(value) -> int | str:
    """The ``channels`` option -> 1, 3 or ``"auto"`` (None is the default, 1)."""
    if value is None:
        return 1
    text = str(value).strip().lower()
    if text not in CHOICES:
        raise ValueError(f"option channels={value!r} is not one of 1, 3 or auto; pass channels=1 "
                         "(grey), channels=3 (colour) or channels=auto (colour if any image is)")
    return text if text == "auto" else int(text)


def _palette_is_grey(image) -> bool:
    """Whether a palette image's palette (from the header, no pixels) holds only greys."""
    palette = getattr(image, "palette", None)
    raw = getattr(palette, "palette", None)
    if not raw:
        return False
    width = len(getattr(palette, "mode", "RGB") or "RGB")
    if width < 3:  # a grey palette ("L" / "LA")
        return True
    entries = [raw[i:i + 3] for i in range(0, len(raw) - width + 1, width)]
    return all(e[0] == e[1] == e[2] for e in entries)


def mode_is_colour(image) -> bool:
    """Whether an opened (not loaded) Pillow image is colour, by its mode (and palette)."""
    mode = image.mode
    if mode in GREY_MODES or mode.startswith("I;16"):
        return False
    if mode in PALETTE_MODES:
        return not _palette_is_grey(image)
    return True


def file_is_colour(path) -> bool | None:
    """Whether the picture at ``path`` is colour, from its header only; None when the header
    cannot be read (the decode step quarantines such a file later)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: the decoder refuses later
            with Image.open(path) as image:
                return mode_is_colour(image)
    except Exception:  # noqa: BLE001 - any unreadable header: this file does not vote
        return None


def auto_channels(paths: Iterable) -> int:
    """3 when any picture in ``paths`` is colour (stops at the first), else 1."""
    for path in paths:
        if file_is_colour(path):
            return 3
    return 1


def resolve_channels(value, paths: Iterable) -> int:
    """The ``channels`` option for pictures at ``paths`` -> 1 or 3 (``auto`` reads headers)."""
    choice = parse_channels(value)
    return auto_channels(paths) if choice == "auto" else choice
