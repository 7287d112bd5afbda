"""The data of ``python -m benchmarks.ablations``: every source gives train, validation and test.

Each loader returns a *bundle*: ``{"train": (x, y), "val": (x, y), "test": {...}}`` with ``x``
float32 [n, size, size, 1] in [0, 1] and ``y`` int (1 = the positive class). The validation split
is what early stopping watches; the test split is scored once, with the best epoch's weights.
``test`` holds ``x`` and ``y`` and, where the source has them, ``mask`` (the lesion, for the
pointing game), ``diameter`` (the phantom's stone size) and ``by_noise`` ({noise: (x, y)}).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = {
    "breastmnist": ("medmnist-extra/breastmnist.npz", 0),  # (file, positive label): malignant
    "pneumoniamnist": ("medmnist/pneumoniamnist.npz", 1),  # pneumonia
}
KIDNEY = "kidney-stones/kidney-stones-yolo.tar.gz"


def resize(x, size):
    """[n, h, w, c] -> [n, size, size, c], bilinear."""
    if x.shape[1:3] == (size, size):
        return x.astype(np.float32)
    import tensorflow as tf

    return tf.image.resize(x.astype(np.float32), (size, size)).numpy()


def _subset(rng, n, limit):
    idx = np.arange(n)
    return np.sort(rng.permutation(n)[:limit]) if limit and limit < n else idx


def real_medmnist(name, size, *, n_train=None, n_test=None, data_root=SHARED, seed=0):
    """A MedMNIST file's official splits, upsampled to ``size``; ``n_train`` caps train and val
    (val at a quarter of it), ``n_test`` the test split."""
    rel, positive = REAL[name]
    path = Path(data_root) / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass --data-root (the shared data "
                                "folder) or --real none.")
    data = np.load(path)
    rng = np.random.default_rng([seed, 5])
    out = {}
    for split, limit in (("train", n_train), ("val", n_train and max(8, n_train // 4)),
                         ("test", n_test)):
        x, y = data[f"{split}_images"], data[f"{split}_labels"].reshape(-1)
        keep = _subset(rng, len(x), limit)
        x = x[keep][..., None] if x.ndim == 3 else x[keep]
        out[split] = (resize(x / 255.0, size), (y[keep] == positive).astype(int))
    return {"train": out["train"], "val": out["val"],
            "test": {"x": out["test"][0], "y": out["test"][1]}}


def user_dataset(dataset, data_dir, size, work, *, positive=None, seed=0):
    """A dataset adapter's data (as train.py reads it) through a prepared cache (70/15/15)."""
    from pipelines.records import make_dataset, prepare, read_info

    cache = prepare(dataset, data_dir, Path(work) / f"cache-{dataset}-{size}", image_size=size,
                    val_fraction=0.15, test_fraction=0.15, seed=seed, progress=False)
    labels = list(read_info(cache)["labels"])
    k = labels.index(positive) if positive is not None else len(labels) - 1
    out = {}
    for split in ("train", "val", "test"):
        xs, ys = [], []
        for x, y in make_dataset(cache, split, batch_size=64):
            xs.append(x.numpy())
            ys.append(y.numpy())
        y = np.concatenate(ys)
        y = y[:, k] if y.ndim == 2 and y.shape[1] > 1 else (y.reshape(-1) == k)
        out[split] = (np.concatenate(xs).astype(np.float32), (y > 0.5).astype(int))
    return {"train": out["train"], "val": out["val"],
            "test": {"x": out["test"][0], "y": out["test"][1]}}


def lesion_data(size, n_train, n_test, diameters, seed):
    """The small-lesion phantom: a training set per seed, one validation and one test set."""
    from pipelines.phantoms import small_lesion_set

    train = small_lesion_set(n_train, size, diameters=diameters, seed=1000 + seed)
    val = small_lesion_set(max(16, n_test // 2), size, diameters=diameters, seed=3)
    test = small_lesion_set(n_test, size, diameters=diameters, seed=7)
    return {"train": (train["x"], train["y"]), "val": (val["x"], val["y"]), "test": test}


def _speckle_mix(n, size, noises, base):
    from pipelines.phantoms import speckle_set

    per = max(1, n // len(noises))
    parts = [speckle_set(per, size, noise=s, seed=base + i) for i, s in enumerate(noises)]
    return np.concatenate([p["x"] for p in parts]), np.concatenate([p["y"] for p in parts])


def speckle_data(size, n_train, n_test, noises, seed):
    """The muscle-ultrasound speckle phantom: trained and validated on a mix of noise levels,
    tested at each level."""
    from pipelines.phantoms import speckle_set

    tests = {s: speckle_set(n_test, size, noise=s, seed=8) for s in noises}
    x = np.concatenate([t["x"] for t in tests.values()])
    y = np.concatenate([t["y"] for t in tests.values()])
    return {"train": _speckle_mix(n_train, size, noises, 2000 + 97 * seed),
            "val": _speckle_mix(max(16, n_test // 2), size, noises, 5000),
            "test": {"x": x, "y": y, "by_noise": {s: (t["x"], t["y"]) for s, t in tests.items()}}}


def kidney_data(size, ratio, *, n_train=None, n_test=None, data_root=SHARED, seed=0):
    """Stone / no-stone patches of the kidney-stone CT set (:mod:`pipelines.kidney_stones`): its
    own train / valid / test splits (no source slice in two); ``n_train`` and ``n_test`` cap
    the pairs of train (val at a quarter of it) and test."""
    from pipelines.kidney_stones import stone_patches

    path = Path(data_root) / KIDNEY
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass --data-root (the shared data "
                                "folder) or --lesion phantom.")
    parts = {split: stone_patches(path, split, size=size, ratio=ratio, seed=seed, max_pairs=cap)
             for split, cap in (("train", n_train), ("valid", n_train and max(8, n_train // 4)),
                                ("test", n_test))}
    return {"train": (parts["train"]["x"], parts["train"]["y"]),
            "val": (parts["valid"]["x"], parts["valid"]["y"]), "test": parts["test"],
            "pairs": {k: v["stones"] for k, v in parts.items()}}
