"""Predictions for a split: from a prepared cache, or through an export's serving signatures.

:func:`gather_predictions` scores a cache's split (what the report's numbers come from);
:func:`gather_serving_predictions` sends the original files as a TF Serving client would;
:func:`select_pairs` lines the model's outputs up with the dataset's label columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines import cells
from pipelines.cache import make_dataset, prepare, read_info
from pipelines.cache.decode import Row
from pipelines.cache.format import row_keys
from pipelines.datasets import get_adapter
from pipelines.manifest import safe_join
from pipelines.preprocessing import to_channels
from zoo.evaluation.source import EvaluationError, ModelSource

__all__ = ["SERVING_BYTES_SUFFIXES", "prepare_cache", "gather_predictions",
           "gather_serving_predictions", "select_pairs"]


def prepare_cache(source: ModelSource, dataset: str, data_dir, out: Path, *, val_fraction,
                  test_fraction, seed) -> Path:
    """Prepare ``dataset`` at the model's input size and windows into ``out/cache``."""
    h, w, c = source.input_shape
    cache = out / "cache"
    # a colour model reads colour pictures (folder/csv: channels=3)
    options = get_adapter(dataset).picture_options(c) if source.spec.kind == "image" else {}
    prepare(dataset, data_dir, cache, image_size=(h, w), windows=source.windows,
            val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, progress=False,
            options=options or None)
    return cache


def gather_predictions(source: ModelSource, cache, split: str, *, batch_size: int = 32) -> dict:
    """Predict every example of ``split`` (``"all"``: every split) of a cache.

    Returns ``{"id", "patient_id", "study_id", "y_true" [N, K_dataset], "y_prob" [N, K_model],
    "labels" (dataset labels), "mask_path"}``, in the cache's order.
    """
    cache = Path(cache)
    info = read_info(cache)
    splits = [s for s, n in info["splits"].items() if n] if split == "all" else [split]
    if split != "all" and split not in info["splits"]:
        raise EvaluationError(
            f"The cache {cache} has no {split!r} split; it has {', '.join(info['splits'])} "
            "(use --split all for external data)."
        )
    if not splits or all(not info["splits"].get(s) for s in splits):
        raise EvaluationError(
            f"The {split!r} split of {cache} is empty: there is nothing to evaluate; pick another "
            "--split or prepare the cache with a larger --test-fraction."
        )
    h, w, c = source.input_shape
    if int(info["channels"]) != c:
        raise EvaluationError(
            f"The cache {cache} has {info['channels']}-channel images but the model takes {c} "
            f"channels; prepare the data with the model's windows ({source.windows or 'grey'})."
        )
    size = None if tuple(info["image_size"]) == (h, w) else (h, w)
    ids, pids, ys, ps = [], [], [], []
    for s in splits:
        ds = make_dataset(cache, s, batch_size=batch_size, with_ids=True, image_size=size)
        for images, labels, meta in ds:
            ps.append(source.predict(images.numpy(), batch_size=batch_size))
            ys.append(labels.numpy())
            ids += [x.decode() for x in meta["id"].numpy()]
            pids += [x.decode() for x in meta["patient_id"].numpy()]
    manifest = cells.read_csv(cache / "manifest.csv", dtype=str).set_index("id")
    study = manifest["study_id"] if "study_id" in manifest else None
    masks = manifest["mask_path"] if "mask_path" in manifest else None
    out = {
        "id": np.array(ids),
        "patient_id": np.array(pids),
        "study_id": np.array([str(study.get(i, p)) if study is not None else p
                              for i, p in zip(ids, pids)]),
        "y_true": np.concatenate(ys).astype(np.float64),
        "y_prob": np.concatenate(ps).astype(np.float64),
        "labels": tuple(info["labels"]),
        "dataset": info.get("dataset"),
        "task": info.get("task"),
        "splits": splits,
    }
    if masks is not None:
        out["mask_path"] = np.array([masks.get(i, "") for i in ids], dtype=object)
    return out


SERVING_BYTES_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _manifest_rows(adapter, dataset: str, data_dir, ids, *, options, row_keyed) -> dict:
    """The adapter's manifest rows by cache id; every one of ``ids`` must be there."""
    manifest = adapter.read_manifest(data_dir, **(options or {}))
    rows = {str(r["id"]): r for r in manifest.to_dict("records")}
    if row_keyed:
        keys = row_keys(rows)
        rows = {keys[k]: row for k, row in rows.items()}
    missing = [i for i in ids if str(i) not in rows]
    if missing:
        raise EvaluationError(
            f"{len(missing)} evaluated image(s) (e.g. {missing[0]!r}) are not in the {dataset} "
            f"manifest of {data_dir}; pass the --data-dir the cache was prepared from."
        )
    return rows


def gather_serving_predictions(source: ModelSource, dataset: str, data_dir, ids, *,
                               batch_size: int = 32, options: dict | None = None,
                               row_keyed: bool = False) -> tuple[np.ndarray, dict]:
    """Probabilities for ``ids`` through the export's signatures, from the original files.

    What a TF Serving client sends: a PNG/JPEG/BMP/GIF file's own bytes to ``serving_bytes``;
    anything else (DICOM, NIfTI, arrays in .npz) decoded by the dataset's adapter at its own
    size (CT through the training windows) and sent as floats to ``serving_default``, which
    resizes and rounds in the graph. Returns (probabilities [N, K], rows per signature).
    ``options`` are the adapter options the cache was prepared with; ``row_keyed``: the cache
    stores row keys for path-derived ids (``pipelines.cache.format.row_keys``), recomputed here
    from the adapter's manifest.
    """
    if source.served is None:
        raise EvaluationError(
            f"--through serving needs an export (saved_models/<model>/<version>); {source.path} "
            "is a training run: export it first with python -m zoo.export --run-dir."
        )
    served, spec = source.served, source.spec
    adapter = get_adapter(dataset)
    rows = _manifest_rows(adapter, dataset, data_dir, ids, options=options, row_keyed=row_keyed)
    out = np.zeros((len(ids), len(source.labels)), np.float64)
    counts = {"serving_bytes": 0, "serving_default": 0}
    pending: list[tuple[int, np.ndarray]] = []  # same-size float images for one request

    def flush():
        if pending:
            batch = np.stack([image for _, image in pending])
            probs = served.predict(batch, batch_size=batch_size)
            for (k, _), p in zip(pending, probs):
                out[k] = p
            pending.clear()

    encoded: list[tuple[int, bytes]] = []
    for k, example_id in enumerate(ids):
        row = Row(rows[str(example_id)])
        rel = str(row.get("path", ""))
        path = safe_join(data_dir, rel) if rel else None
        whole_file = int(row.get("slice", -1) if row.get("slice") is not None else -1) < 0
        if (spec.kind == "image" and whole_file and path is not None
                and path.suffix.lower() in SERVING_BYTES_SUFFIXES):
            encoded.append((k, path.read_bytes()))
            counts["serving_bytes"] += 1
            continue
        image = to_channels(np.asarray(adapter.load(row, data_dir, spec.windows), np.float32),
                            spec.channels)
        if pending and (pending[0][1].shape != image.shape or len(pending) >= batch_size):
            flush()
        pending.append((k, image))
        counts["serving_default"] += 1
    flush()
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        probs = served.predict_bytes([data for _, data in chunk])
        for (k, _), p in zip(chunk, probs):
            out[k] = p
    return out, counts


def select_pairs(gathered: dict, pairs, model_labels) -> tuple[np.ndarray, np.ndarray]:
    """Truth for the paired model labels [N, P] and the matching model probabilities [N, P]."""
    ds_index = {name: i for i, name in enumerate(gathered["labels"])}
    model_index = {name: i for i, name in enumerate(model_labels)}
    cols_t, cols_p = [], []
    for p in pairs:
        t = gathered["y_true"][:, ds_index[p.dataset]]
        cols_t.append(1.0 - t if p.negate else t)
        cols_p.append(gathered["y_prob"][:, model_index[p.model]])
    return np.stack(cols_t, axis=1), np.stack(cols_p, axis=1)
