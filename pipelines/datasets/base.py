"""Shared pieces of the dataset adapters: option parsing, header scans, image loading.

Options reach ``read_manifest`` either as Python values or as strings from
``python -m pipelines.prepare --option KEY=VALUE``; :func:`as_list`, :func:`as_bool` and
:func:`as_int` accept both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pipelines import dicom, transforms
from pipelines.manifest import DataError, safe_join

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")




# ------------------------------------------------------------------------------------- options
def as_list(value) -> list[str] | None:
    """None -> None; "a,b" -> ["a", "b"]; a sequence -> list of str."""
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def as_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"option {name}={value!r} is not a yes/no value; use true or false")


def as_int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name}={value!r} is not an integer") from None


def field(row, key, default=None):
    """``row[key]`` for a pandas Series, dict or namedtuple row."""
    if isinstance(row, dict):
        return row.get(key, default)
    try:
        return row[key]
    except (KeyError, IndexError, TypeError):
        return getattr(row, key, default)


def row_slice(row) -> int:
    value = field(row, "slice", -1)
    return -1 if value is None else int(value)


# ------------------------------------------------------------------------------------- headers
def _header_or_error(path: str):
    try:
        return dicom.read_header_safe(path)
    except DataError as exc:
        return exc.problem


def scan_headers(paths: Sequence, workers: int = 1) -> list:
    """``read_header_safe`` for each path: a dict, or the problem (str) for an unreadable file.

    ``workers > 1`` spreads the reads over processes (header reads are ~1 ms each; the RSNA
    training set has ~750k files).
    """
    paths = [str(p) for p in paths]
    workers = max(1, int(workers))
    if workers == 1 or len(paths) < 2000:
        return [_header_or_error(p) for p in paths]
    chunk = max(64, len(paths) // (workers * 16))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_header_or_error, paths, chunksize=chunk))


# ------------------------------------------------------------------------------------- loading
def ct_channels(windows=None) -> int:
    return len(transforms.parse_windows(windows))


def load_dicom(row, data_dir, windows) -> np.ndarray:
    """A DICOM manifest row -> windowed (H, W, C) float32 in [0, 1]."""
    path = safe_join(data_dir, field(row, "path"))
    index = row_slice(row)
    hu = dicom.read_hu(path, frame=None if index < 0 else index)
    return transforms.apply_windows(hu, windows)


def read_image(path) -> np.ndarray:
    """An 8/16-bit image file -> (H, W, 1) float32 grey in [0, 1].

    Grey modes (L, I;16, I) keep their values; colour (RGB, RGBA, P, CMYK) becomes
    luminance (Pillow's ITU-R 601 "L" conversion), alpha is dropped.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file does not exist" if not path.exists() else "is not a file")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L"):
                arr = np.asarray(img, dtype=np.uint16)
                out = arr.astype(np.float32) / 65535.0
            elif img.mode == "I":
                arr = np.asarray(img, dtype=np.int64)
                peak = 65535.0 if arr.max() > 255 else 255.0
                out = np.clip(arr.astype(np.float32) / peak, 0.0, 1.0)
            elif img.mode == "F":
                out = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
            elif img.mode == "L":
                out = np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0
            else:
                rgb = img.convert("RGBA").convert("RGB") if img.mode in ("P", "PA", "LA") else img
                out = np.asarray(rgb.convert("L"), dtype=np.uint8).astype(np.float32) / 255.0
    except UnidentifiedImageError:
        raise DataError(path, "is not a readable image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"image data is truncated or corrupt ({type(exc).__name__})") from None
    return out[..., None].astype(np.float32, copy=False)


def load_image(row, data_dir) -> np.ndarray:
    return read_image(safe_join(data_dir, field(row, "path")))


def list_images(folder: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden files and folders skipped)."""
    suffixes = tuple(s.lower() for s in suffixes)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(suffixes):
                found.append(Path(root) / name)
    return sorted(found)
