"""The tiny synthetic head-CT cache that train.py tests run on (real prepare, 32 px)."""

from __future__ import annotations

from pathlib import Path


def head_ct_cache(root: Path) -> Path:
    """A 32 px cache of a synthetic head-CT dataset in the RSNA layout (8 patients, 4 slices)."""
    from pipelines.cache import prepare
    from pipelines.datasets.synthetic import write_head_ct

    write_head_ct(root / "head-ct", patients=8, slices=4, size=64, seed=3)
    return prepare("synthetic", root / "head-ct", root / "cache", image_size=32,
                   val_fraction=0.25, test_fraction=0.0, seed=0, progress=False)
