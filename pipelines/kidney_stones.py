"""Stone / no-stone patches from the kidney-stone CT set, for the small-lesion claims.

``../shared/data/kidney-stones/kidney-stones-yolo.tar.gz`` holds 1,300 coronal abdominal CT
slices (JPEG, 391x320, grey stored as RGB) with a YOLO box around every stone (CC BY 4.0). Almost
every slice holds a stone, so a classification task is built from patches:

* a **positive** is a square window around one stone. Its side is the stone's longer box side
  divided by ``ratio`` (the box-to-patch ratio), so after resizing to ``size`` pixels every stone
  is ``ratio * size`` pixels long: ``ratio=1/16`` at 64 px gives 4 px stones, the scale at which
  pooling can erase them. The window is shifted at random by up to ``jitter`` of its side (so
  the stone is not always in the centre, which would make a centre-biased heatmap win the
  pointing game) and then moved inside the slice.
* its **negative** is a window of the same side from the same slice that touches no stone box
  (2 px margin): first the mirrored position across the body's midline (the other kidney, at the
  same height), then shifts of half and one window up and down, then sideways. A stone with no
  such window, or whose window does not fit in the slice, is left out (small ratios keep the
  small stones: the count per split is returned).
* the **mask** is every stone box that falls in the window, in output pixels (at least one
  pixel), for the pointing game.

Splits are the set's own ``train``/``valid``/``test``; they share no source slice (the
training split holds two augmented copies of each source slice, which stay together). The
source slice is the file name before ``_png_jpg.rf.``; it starts with the slice's DICOM SOP
Instance UID, so it is only ever used as a group *index*: no name or UID reaches the output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.archive import extract_once
from pipelines.manifest import DataError

__all__ = ["DEFAULT_ARCHIVE", "MARGIN", "SPLITS", "source_of", "stone_patches"]

DEFAULT_ARCHIVE = Path("kidney-stones") / "kidney-stones-yolo.tar.gz"
SPLITS = ("train", "valid", "test")
MARGIN = 2.0  # pixels a negative window keeps from every stone box


def source_of(name: str) -> str:
    """The source slice of a Roboflow export file name (the part before ``_png_jpg.rf.``)."""
    return name.split("_png_jpg.rf.")[0]


def _split_dir(root, split) -> Path:
    root = Path(root)
    if root.is_file():
        root = extract_once(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist; pass the kidney-stone tarball "
                                f"(../shared/data/{DEFAULT_ARCHIVE}) or the folder it was extracted to.")
    found = sorted(p.parent for p in root.rglob("labels") if p.parent.name == split
                   and (p.parent / "images").is_dir())
    if not found:
        raise DataError(root, f"holds no {split}/images and {split}/labels folders; pass the "
                              "kidney-stone set's tarball or its extracted folder")
    return found[0]


def _boxes(label_file: Path, width: int, height: int) -> np.ndarray:
    """[k, 4] boxes (x0, y0, x1, y1) in pixels from a YOLO label file."""
    rows = [line.split() for line in label_file.read_text().splitlines() if line.strip()]
    try:
        b = np.array([[float(v) for v in r[1:5]] for r in rows], float).reshape(-1, 4)
    except (ValueError, IndexError):
        raise DataError(label_file, "is not a YOLO label file (class cx cy w h per line)") from None
    cx, cy, w, h = b[:, 0] * width, b[:, 1] * height, b[:, 2] * width, b[:, 3] * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _inside(x0, y0, side, width, height):
    """The window's corner moved so that the window lies inside the slice."""
    return min(max(x0, 0.0), width - side), min(max(y0, 0.0), height - side)


def _touches(boxes, x0, y0, side, margin=MARGIN) -> np.ndarray:
    return ((boxes[:, 2] + margin > x0) & (boxes[:, 0] - margin < x0 + side)
            & (boxes[:, 3] + margin > y0) & (boxes[:, 1] - margin < y0 + side))


def _negative(boxes, cx, cy, side, width, height):
    """A same-side window of the slice touching no box, or None."""
    mx = width - cx
    for dx, dy in ((mx - cx, 0), (mx - cx, side / 2), (mx - cx, -side / 2), (mx - cx, side),
                   (mx - cx, -side), (0, side), (0, -side), (side, 0), (-side, 0)):
        x0, y0 = _inside(cx + dx - side / 2, cy + dy - side / 2, side, width, height)
        if not _touches(boxes, x0, y0, side).any():
            return x0, y0
    return None


def _patch(image, x0, y0, side, size):
    from PIL import Image

    out = image.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    return np.asarray(out, np.float32) / 255.0


def _mask(boxes, x0, y0, side, size) -> np.ndarray:
    m = np.zeros((size, size), bool)
    scale = size / side
    for bx0, by0, bx1, by1 in boxes[_touches(boxes, x0, y0, side, margin=0.0)]:
        c0, r0 = int(np.floor((bx0 - x0) * scale)), int(np.floor((by0 - y0) * scale))
        c1, r1 = int(np.ceil((bx1 - x0) * scale)), int(np.ceil((by1 - y0) * scale))
        m[max(r0, 0):max(min(r1, size), r0 + 1), max(c0, 0):max(min(c1, size), c0 + 1)] = True
    return m


def stone_patches(root, split, *, size=64, ratio=1 / 16, jitter=0.25, seed=0, max_pairs=None) -> dict:
    """Stone / no-stone patches of one split, one negative per positive.

    Args:
        root: the set's tarball (extracted once into ``data/extracted``) or its folder.
        split: ``train``, ``valid`` or ``test``.
        size: output side in pixels.
        ratio: stone box side / window side; the stone is ``ratio * size`` pixels in the output.
        jitter: the largest random shift of a positive window from the stone, as a share of
            the window side.
        seed: seeds the shifts and the ``max_pairs`` draw.
        max_pairs: keep at most this many (positive, negative) pairs, drawn at random.

    Returns:
        ``x`` [n, size, size, 1] float32 in [0, 1], ``y`` [n] (1 = stone), ``mask`` [n, size,
        size] (stone boxes in the window), ``group`` [n] (index of the source slice, the same
        for both augmented copies of a slice), ``stones``: pairs built, ``skipped``: stones
        with no window that fits or no stone-free negative.
    """
    from PIL import Image

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio is a box-to-patch ratio in (0, 1], got {ratio!r}.")
    folder = _split_dir(root, split)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    images = sorted((folder / "images").glob("*.jpg"))
    sources = sorted({source_of(p.name) for p in images})
    plans, skipped = [], 0
    for path in images:
        label = folder / "labels" / (path.stem + ".txt")
        with Image.open(path) as im:
            width, height = im.size
        boxes = _boxes(label, width, height) if label.is_file() else np.zeros((0, 4))
        for bx0, by0, bx1, by1 in boxes:
            side = max(bx1 - bx0, by1 - by0) / ratio
            cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
            neg = _negative(boxes, cx, cy, side, width, height) if side <= min(width, height) else None
            if neg is None:
                skipped += 1
                continue
            sx, sy = rng.uniform(-jitter, jitter, 2) * side
            pos = _inside(cx + sx - side / 2, cy + sy - side / 2, side, width, height)
            plans.append((path, boxes, side, pos, neg, sources.index(source_of(path.name))))
    if max_pairs is not None and len(plans) > max_pairs:
        plans = [plans[i] for i in sorted(rng.permutation(len(plans))[:max_pairs])]
    x = np.zeros((2 * len(plans), size, size, 1), np.float32)
    mask = np.zeros((2 * len(plans), size, size), bool)
    y = np.tile([1, 0], len(plans))
    group = np.repeat([p[-1] for p in plans], 2)
    current = image = None
    for i, (path, boxes, side, pos, neg, _) in enumerate(plans):
        if path != current:  # plans come in file order: each slice is read once
            with Image.open(path) as im:
                current, image = path, im.convert("L")
        x[2 * i, ..., 0] = _patch(image, *pos, side, size)
        mask[2 * i] = _mask(boxes, *pos, side, size)
        x[2 * i + 1, ..., 0] = _patch(image, *neg, side, size)
    return {"x": x, "y": y, "mask": mask, "group": group, "stones": len(plans), "skipped": skipped}
