"""Dataset adapters: each public dataset's on-disk format -> the one manifest table.

Every module in this package is imported here, and each registers its adapter class (a
subclass of :class:`pipelines.datasets.base.Adapter`) with ``@register_adapter``, so adding a
dataset is one file (plus its test)::

    from pipelines.datasets import get_adapter, list_adapters
    adapter = get_adapter("rsna")
    df = adapter.read_manifest("/data/rsna")          # the manifest (pipelines.manifest)
    image = adapter.load(df.iloc[0], "/data/rsna", "brain,subdural,bone")   # (H, W, 3)

See :mod:`pipelines.datasets.base` for the interface and the facts each adapter carries
(``labels``, ``task``, ``ct``, ``scan_labelled``, ``label_map``, ``default_data_dir``).
"""

from __future__ import annotations

import importlib
import pkgutil

from pipelines.datasets.base import Adapter, get_adapter, list_adapters, register_adapter

__all__ = ["Adapter", "get_adapter", "list_adapters", "register_adapter"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
