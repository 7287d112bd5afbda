"""Colour test data: a real subset of the PBC blood-cell smears, and a tiny folder of every
Pillow mode the adapters meet (grey, 16-bit, grey+alpha, RGB, RGBA, palettes, CMYK)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

PBC_TARBALL = Path("pbc") / "pbc-96.tar.gz"


def extract_pbc(shared_data: Path, dest: Path, per_class: int = 8) -> Path:
    """The first ``per_class`` JPEGs of every PBC class, read from the tarball in place (only
    those members are extracted) into ``dest/<class>/``; returns ``dest``."""
    taken: dict[str, int] = {}
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(shared_data / PBC_TARBALL, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or not parts[2].lower().endswith(".jpg"):
                continue
            cls = parts[1]
            if taken.get(cls, 0) >= per_class:
                continue
            taken[cls] = taken.get(cls, 0) + 1
            (dest / cls).mkdir(exist_ok=True)
            (dest / cls / parts[2]).write_bytes(tar.extractfile(member).read())
    return dest


def _scene(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth, seeded float picture in [0, 1] (H, W, 3) whose planes differ."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    planes = [0.5 + 0.4 * np.sin((3 + k) * xx + rng.uniform(0, 3)) * np.cos((2 + k) * yy)
              for k in range(3)]
    return np.clip(np.dstack(planes), 0, 1)


def mode_images(seed: int = 0) -> dict[str, Image.Image]:
    """One small picture per mode: name -> Pillow image (saved as PNG, CMYK as JPEG)."""
    rgb = (_scene(21, 17, seed) * 255).round().astype(np.uint8)
    grey = rgb[..., 1]
    alpha = np.tile(np.linspace(0, 255, 17).astype(np.uint8), (21, 1))
    colour_palette = Image.fromarray(rgb).quantize(colors=16, dither=Image.Dither.NONE)
    grey_palette = Image.fromarray(grey).convert("P")  # Pillow's grey ramp: r == g == b
    return {
        "grey.png": Image.fromarray(grey, "L"),
        "deep16.png": Image.fromarray(grey.astype(np.uint16) * 257),
        "grey_alpha.png": Image.fromarray(np.dstack([grey, alpha]), "LA"),
        "rgb.png": Image.fromarray(rgb, "RGB"),
        "rgba.png": Image.fromarray(np.dstack([rgb, alpha]), "RGBA"),
        "palette.png": colour_palette,
        "grey_palette.png": grey_palette,
        "cmyk.jpg": Image.fromarray(rgb, "RGB").convert("CMYK"),
    }


def save_image(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=95)
    else:
        image.save(path)
    return path


def write_mode_folder(root: Path) -> Path:
    """Two classes holding every mode of :func:`mode_images` (different seeds): the tiny,
    deterministic folder whose channels=1 cache is pinned by a golden hash."""
    for k, cls in enumerate(("a", "b")):
        for name, image in mode_images(seed=k).items():
            save_image(image, root / cls / name)
    return root


def cache_digest(cache: Path) -> str:
    """sha256 of a cache's shards, manifest.csv and preprocessing.json (names and bytes, in
    sorted order): equal digests are byte-identical caches. dataset.json is left out (it
    holds timings and the data folder's absolute path)."""
    import hashlib

    digest = hashlib.sha256()
    names = sorted(p.name for p in Path(cache).iterdir()
                   if p.suffix == ".tfrecord" or p.name in ("manifest.csv", "preprocessing.json"))
    for name in names:
        digest.update(name.encode() + b"\0" + (Path(cache) / name).read_bytes())
    return digest.hexdigest()


FIXED_SALT = "0123456789abcdef0123456789abcdef"


def fixed_salt(monkeypatch) -> None:
    """Pin the cache's pseudonym salt (random per cache) so two runs write the same bytes."""
    import pipelines.cache.writer as writer

    monkeypatch.setattr(writer.secrets, "token_hex", lambda n=16: FIXED_SALT[: 2 * n])
