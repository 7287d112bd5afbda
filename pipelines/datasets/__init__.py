"""Dataset adapters: each public dataset's on-disk format -> the one manifest table.

Every adapter module exposes ``LABELS``, ``TASK``, ``read_manifest(data_dir, **options)``
(a DataFrame in the schema of :mod:`pipelines.manifest`), ``load(row, data_dir, windows)``
(float32 (H, W, C) in [0, 1]) and ``channels(windows)``.

Some adapters learn their labels from the data (``folder``, ``csv``, ``medmnist`` files other
than PneumoniaMNIST): the manifest's ``df.attrs`` then holds the truth (``labels``, ``task``,
``channels``, ``ct``); use :func:`manifest_labels`, :func:`manifest_task` and
:func:`manifest_channels`, which fall back to the module constants.
"""

from __future__ import annotations

import difflib
import importlib

DATASETS = ("rsna", "cq500", "physionet", "cxr14", "medmnist", "folder", "csv", "synthetic")
CT_DATASETS = ("rsna", "cq500", "physionet", "synthetic")


def get_adapter(name: str):
    """The adapter module for ``name``; ValueError with the close matches for an unknown one."""
    key = str(name).strip().lower()
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown dataset {name!r}.{hint} Known datasets: {', '.join(DATASETS)}.")
    return importlib.import_module(f"pipelines.datasets.{key}")


def _module(adapter):
    return get_adapter(adapter) if isinstance(adapter, str) else adapter


def manifest_labels(adapter, df) -> tuple[str, ...]:
    """The label columns of ``df`` (``df.attrs['labels']``, else the adapter's LABELS)."""
    labels = df.attrs.get("labels") or _module(adapter).LABELS
    return tuple(labels)


def manifest_task(adapter, df) -> str:
    return df.attrs.get("task") or _module(adapter).TASK


def manifest_channels(adapter, df, windows=None) -> int:
    """Channels ``load`` returns for this manifest: one per window for CT data, else the
    image channels the adapter recorded (``df.attrs['channels']``), else ``adapter.channels``."""
    from pipelines.transforms import parse_windows

    module = _module(adapter)
    name = getattr(module, "__name__", "").rsplit(".", 1)[-1]
    if df.attrs.get("ct", name in CT_DATASETS):
        return len(parse_windows(windows))
    return int(df.attrs.get("channels") or module.channels(windows))
