"""MedMNIST v2 (Yang et al., Scientific Data 2023): the published ``<name>[_<size>].npz`` files.

Each file holds ``train_images``, ``train_labels``, ``val_*`` and ``test_*`` (images (N, H, W)
grey or (N, H, W, 3) colour uint8; labels (N, 1) class index, or (N, K) 0/1 for the
multi-label ChestMNIST). The official split is kept in ``split``.

``data_dir`` is the folder holding the .npz (or the .npz file itself); with several .npz files
in the folder pass ``name=`` (e.g. ``pneumoniamnist``). Rows: ``path`` = the .npz file name,
``slice`` = the index into the file's images in the order train, val, test (so ``slice`` stays
valid whatever split a later step assigns); ``id`` = ``<split>_<index within split>``.
MedMNIST ships no patient ids, so each image is its own ``patient_id`` (the official split
is used as is).

Labels: class columns one-hot for multi-class/binary files, 0/1 columns for multi-label;
names from :data:`CLASS_NAMES` for the files we know, else ``class_0..`` unless ``labels=``
names them. ``df.attrs`` carries ``labels``, ``task`` and ``channels`` (1 or 3), which differ
between MedMNIST files: the adapter's ``labels`` / ``task`` describe PneumoniaMNIST.
"""

from __future__ import annotations

import re
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.bounded import check_inflated_size
from pipelines.datasets import base
from pipelines.datasets.base import Adapter, register_adapter
from pipelines.manifest import DataError, safe_join, validate_manifest

SPLIT_ORDER = ("train", "val", "test")
CLASS_NAMES = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal_benign"),
    "retinamnist": ("grade_0", "grade_1", "grade_2", "grade_3", "grade_4"),
    "octmnist": ("choroidal_neovascularization", "diabetic_macular_edema", "drusen", "normal"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast", "immature_granulocytes",
                   "lymphocyte", "monocyte", "neutrophil", "platelet"),
    "dermamnist": ("actinic_keratoses", "basal_cell_carcinoma", "benign_keratosis",
                   "dermatofibroma", "melanoma", "melanocytic_nevi", "vascular_lesions"),
    "chestmnist": ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
                   "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema",
                   "fibrosis", "pleural", "hernia"),
}
MULTI_LABEL = {"chestmnist"}


def _resolve(data_dir, name=None) -> tuple[Path, Path]:
    """(root folder, npz path)."""
    path = Path(data_dir)
    if path.is_file():
        if path.suffix != ".npz":
            raise DataError(path, "is not a MedMNIST .npz file")
        return path.parent, path
    if not path.exists():
        raise DataError(path, "MedMNIST data directory does not exist; check the --data-dir path")
    files = sorted(path.glob("*.npz"))
    if name:
        files = [f for f in files if dataset_name(f) == str(name).lower() or f.stem == str(name)]
        if not files:
            raise DataError(path, f"holds no {name}.npz; found {[f.name for f in sorted(path.glob('*.npz'))]}")
    if not files:
        raise DataError(path, "holds no .npz file; download e.g. pneumoniamnist.npz into it")
    if len(files) > 1:
        raise DataError(path, f"holds several .npz files ({', '.join(f.name for f in files)}); pass name=<one of them>")
    return path, files[0]


def dataset_name(npz: Path) -> str:
    """pneumoniamnist_224.npz -> pneumoniamnist."""
    return re.sub(r"_\d+$", "", Path(npz).stem).lower()


@lru_cache(maxsize=2)
def _arrays(path: str, mtime: float) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as archive:  # np.load reads a member up to its declared size
            for info in archive.infolist():
                check_inflated_size(path, f"its array {info.filename}", info.file_size, info.compress_size)
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            out = {}
            for split in SPLIT_ORDER:
                for kind in ("images", "labels"):
                    key = f"{split}_{kind}"
                    if key not in keys:
                        raise DataError(path, f"lacks the array {key!r}; is this a MedMNIST file?")
                    out[key] = npz[key]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"cannot be read as .npz ({type(exc).__name__}); the file is truncated or corrupt") from None
    return out


def read_arrays(npz) -> dict[str, np.ndarray]:
    path = Path(npz)
    if not path.is_file():
        raise DataError(path, "MedMNIST .npz file does not exist")
    return _arrays(str(path.resolve()), path.stat().st_mtime)


@register_adapter
class Medmnist(Adapter):
    """MedMNIST v2 .npz files; labels, task and channels from ``df.attrs`` (PneumoniaMNIST
    by default)."""

    name = "medmnist"
    accepts_file = True
    labels = ("normal", "pneumonia")
    task = "binary"

    def read_manifest(self, data_dir, *, name=None, labels=None):
        root, npz = _resolve(data_dir, name)
        arrays = read_arrays(npz)
        kind = dataset_name(npz)
        label_arrays = [np.asarray(arrays[f"{s}_labels"]) for s in SPLIT_ORDER]
        y = np.concatenate([a.reshape(len(a), -1) for a in label_arrays]).astype("int64")
        multi = kind in MULTI_LABEL or y.shape[1] > 1
        if multi:
            k = y.shape[1]
        else:
            if y.min() < 0:
                raise DataError(npz, "has negative class labels")
            k = int(y.max()) + 1
        names = base.as_list(labels) or list(CLASS_NAMES.get(kind, ())) or [f"class_{i}" for i in range(k)]
        if (multi and len(names) != k) or (not multi and len(names) < k):
            raise DataError(npz, f"has {k} classes but {len(names)} label names were given ({', '.join(names)})")
        k = len(names)
        if multi:
            onehot = y
        else:
            onehot = np.zeros((len(y), k), dtype="int64")
            onehot[np.arange(len(y)), y[:, 0]] = 1
        splits = np.concatenate([[s] * len(a) for s, a in zip(SPLIT_ORDER, label_arrays)])
        within = np.concatenate([np.arange(len(a)) for a in label_arrays])
        ids = [f"{s}_{i}" for s, i in zip(splits, within)]
        df = pd.DataFrame({
            "id": ids,
            "path": npz.relative_to(root).as_posix(),
            "slice": np.arange(len(y)),
            "patient_id": [f"{kind}_{i}" for i in ids],
            "study_id": [f"{kind}_{i}" for i in ids],
            "series_id": [f"{kind}_{i}" for i in ids],
        })
        for j, label in enumerate(names):
            df[label] = onehot[:, j]
        df["split"] = splits
        sample = arrays["train_images"]
        n_channels = 3 if sample.ndim == 4 and sample.shape[-1] == 3 else 1
        task = "multi-label" if multi else ("binary" if k == 2 else "multi-class")
        out = validate_manifest(df, names, task=task, channels=n_channels)
        return out

    def load(self, row, data_dir, windows=None) -> np.ndarray:
        root = Path(data_dir)
        if root.is_file():
            root = root.parent
        arrays = read_arrays(safe_join(root, base.field(row, "path")))
        index = base.row_slice(row)
        for split in SPLIT_ORDER:
            images = arrays[f"{split}_images"]
            if index < len(images):
                break
            index -= len(images)
        else:
            raise DataError(base.field(row, "path"), f"slice {base.row_slice(row)} is beyond the images in the file")
        if index < 0:
            raise DataError(base.field(row, "path"), f"slice {base.row_slice(row)} must be >= 0 for a .npz file")
        image = np.asarray(images[index])
        if image.ndim == 2:
            image = image[..., None]
        if image.dtype != np.uint8:
            raise DataError(base.field(row, "path"), f"images are {image.dtype}, expected uint8")
        return image.astype(np.float32) / 255.0
