"""Pretraining and transfer glue for the training run: backbone metadata and the leak check.

``train.py --pretrain CORPUS`` trains on a corpus (pipelines.corpus) and writes, beside the
usual files, ``backbone.weights.h5`` (:func:`zoo.models.backbone.save_backbone`) and
``backbone.json`` (:func:`backbone_metadata`). ``train.py --weights <backbone.weights.h5>``
fine-tunes it; :func:`check_leak` refuses a downstream dataset that was one of the corpus
sources unless ``--allow-overlap`` says it is intended.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.fs import atomic_write_json
from zoo.models.backbone import save_backbone

__all__ = ["backbone_metadata", "write_backbone", "check_leak", "LeakError", "same_data"]


class LeakError(ValueError):
    """The downstream dataset was part of the backbone's pretraining corpus."""


def backbone_metadata(cfg, source, corpus: dict | None) -> dict:
    return {
        "format": "medzoo backbone v1",
        "model": cfg.model,
        "model_kwargs": dict(cfg.model_kwargs),
        "input_shape": list(source.input_shape),
        "image_size": list(source.input_shape[:2]),
        "channels": int(source.input_shape[2]),
        "preprocessing": dict(source.description),
        "weights_up_to": "features",
        "corpus": corpus or {},
    }


def write_backbone(model, run_dir, meta: dict) -> Path:
    """``backbone.weights.h5`` and ``backbone.json`` into ``run_dir``; returns the .h5 path."""
    run_dir = Path(run_dir)
    path = run_dir / "backbone.weights.h5"
    save_backbone(model, path, meta)
    atomic_write_json(run_dir / "backbone.json", meta)
    return path


def _stem(path) -> str:
    """pneumoniamnist_64.npz -> pneumoniamnist; MedNIST.tar.gz -> mednist; folders by name."""
    name = Path(path).name.lower()
    for suffix in (".tar.gz", ".tgz", ".tar", ".npz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return re.sub(r"_\d+$", "", name)


def same_data(a_dataset, a_dir, b_dataset, b_dir) -> bool:
    """Whether two (adapter, data_dir) pairs are the same data: the same path (or one inside
    the other), or the same published file name (``breastmnist.npz`` wherever it lies)."""
    if a_dir is None or b_dir is None:
        return False
    pa, pb = Path(a_dir).resolve(), Path(b_dir).resolve()
    if pa == pb or pa in pb.parents or pb in pa.parents:
        return True
    return str(a_dataset) == str(b_dataset) and _stem(pa) == _stem(pb) and pa.is_file() and pb.is_file()


def check_leak(meta: dict, dataset: str, data_dir, *, allow_overlap: bool = False, what: str = "--weights") -> None:
    """LeakError (one sentence) when ``(dataset, data_dir)`` is a source of the backbone's corpus."""
    if allow_overlap:
        return
    for source in (meta.get("corpus") or {}).get("datasets", []):
        if same_data(source["dataset"], source["data_dir"], dataset, data_dir):
            raise LeakError(
                f"The backbone in {what} was pretrained on a corpus that contains {source['name']} "
                f"({source['data_dir']}), the dataset you are fine-tuning on; rebuild the corpus "
                f"with --exclude {source['name']}, or pass --allow-overlap if this is intended."
            )
