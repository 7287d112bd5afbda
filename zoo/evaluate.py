"""Evaluate an export or a training run on a dataset split: metrics with intervals, plots, card.

    python -m zoo.evaluate --model saved_models/ichnet/1 --dataset synthetic --split test --out eval/
    python -m zoo.evaluate --model runs/ichnet-synthetic --cache data/cache/synth --split test --out e/
    python -m zoo.evaluate --model saved_models/ichnet/1 --dataset cq500 --data-dir ../cq500 \\
        --split all --aggregate topk_mean --top-k 3 --out eval-cq500/      # external validation

What it writes into ``--out``:

* ``predictions.csv``: ``id, patient_id``, one truth column per label (named as the label) and
  ``prob_<label>`` per model output (``predictions_scan.csv`` too when slices are aggregated);
* ``report.json`` and ``report.md``: per-class AUROC with 95% bootstrap intervals that resample
  patients (not images), macro and micro AUROC, PR-AUC, sensitivity / specificity / precision /
  F1 / accuracy at thresholds chosen on the validation split, ECE and Brier score, the optional
  temperature, the label mapping and where every number came from;
* ``roc_<label>.png`` per class, ``reliability.png``, ``confusion.png`` (single-label tasks);
* ``model_card.md`` / ``model_card.json``; for an export the card in its ``assets.extra`` is
  updated too (``--no-card`` leaves it alone).

Operating thresholds and the temperature are fitted on the ``val`` split of the same cache and
never on the evaluated split. With ``--split all`` (external data: every patient is unseen, so
all of them are evaluated) or a dataset without a validation split, they come from the model
card, where an earlier evaluation on the development data stored them ("operating_point"), or
else default to 0.5, and the report says which.

Datasets labelled per scan (CQ500) are scored per scan: slice probabilities are aggregated by
study (``--aggregate max`` or ``topk_mean`` with ``--top-k``), labels by max. The model's outputs
are paired with the dataset's columns by :mod:`pipelines.label_maps` (same name, the RSNA <->
CQ500 / PhysioNet tables, or ``--label-map model=dataset``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from zoo import metrics as M

__all__ = [
    "ModelSource",
    "load_model_source",
    "gather_predictions",
    "compute_metrics",
    "evaluate",
    "main",
]


class EvaluationError(ValueError):
    """Bad input to the evaluation; the message is one sentence naming the thing and the fix."""


# --------------------------------------------------------------------------------------------
# Models: an export version dir or a training run dir
# --------------------------------------------------------------------------------------------


@dataclass
class ModelSource:
    """What evaluation and explanation need from a trained model, wherever it was saved."""

    kind: str  # "export" or "run"
    path: Path
    model_name: str
    labels: tuple
    input_shape: tuple
    task: str
    config: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)
    card: dict | None = None
    spec: object = None  # pipelines.preprocessing.Preprocessing: how a file becomes its input
    served: object = None  # zoo.export.ExportedModel, for exports
    _predict: object = None
    _keras: object = None
    _keras_path: Path | None = None

    def __post_init__(self):
        if self.spec is None:  # derived from the facts: CT windows -> a CT spec, else pictures
            from zoo.export.signatures import resolve_spec

            facts = (self.preprocessing or {}).get("training_data") or self.preprocessing
            self.spec = resolve_spec(tuple(self.input_shape), facts or None, self.config)

    def predict(self, images, batch_size: int = 32) -> np.ndarray:
        if self._predict is not None:
            return np.asarray(self._predict(images, batch_size), dtype=np.float64)
        model = self.keras_model()
        out = model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
        return np.asarray(out, dtype=np.float64)

    def keras_model(self):
        """The Keras model (needed for Grad-CAM): a run's model.keras / best weights, or the
        ``assets.extra/model.keras`` that exports carry."""
        if self._keras is None:
            import keras

            import zoo  # noqa: F401  (registers the zoo's layers for deserialisation)

            if self._keras_path is None:
                raise EvaluationError(
                    f"{self.path} holds no Keras model (assets.extra/model.keras); re-export it "
                    "with the current zoo.export, or pass the training run directory instead."
                )
            self._keras = keras.saving.load_model(str(self._keras_path), compile=False)
        return self._keras

    @property
    def windows(self):
        """CT windows the model was trained with ("brain,subdural,bone"), or None."""
        if self.spec is not None:
            return self.spec.windows
        for source in (self.preprocessing.get("training_data", {}), self.preprocessing,
                       self.config):
            if isinstance(source, dict) and source.get("windows"):
                return source["windows"]
        return None

    @property
    def version_dir(self) -> Path | None:
        return self.path if self.kind == "export" else None


def _task_from(labels, activation, declared=None) -> str:
    if declared in ("multi-label", "multi-class", "binary"):
        return declared
    if activation == "softmax":
        return "binary" if len(labels) == 2 else "multi-class"
    return "binary" if len(labels) == 1 else "multi-label"


def _activation_of(model) -> str | None:
    try:
        act = model.get_layer("predictions").activation
    except (ValueError, AttributeError):
        return None
    return getattr(act, "__name__", None)


def load_model_source(path) -> ModelSource:
    """An export (``saved_models/<m>/<v>`` or ``saved_models/<m>``) or a training run dir."""
    path = Path(path)
    if not path.exists():
        raise EvaluationError(
            f"--model {path} does not exist; pass an export (saved_models/<model>/<version>) or a "
            "training run directory."
        )
    is_export = (path / "saved_model.pb").is_file() or any(
        p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()
        for p in (path.iterdir() if path.is_dir() else [])
    )
    if is_export:
        return _load_export_source(path)
    if (path / "config.yaml").is_file():
        return _load_run_source(path)
    raise EvaluationError(
        f"--model {path} is neither an export (no saved_model.pb) nor a training run directory "
        "(no config.yaml); pass saved_models/<model>/<version> or runs/<run>."
    )


def _load_export_source(path: Path) -> ModelSource:
    from zoo.export import load_export

    served = load_export(path)
    extra = served.path / "assets.extra"
    training = served.preprocessing.get("training_data", {}) or {}
    declared = (served.card or {}).get("task") if not training.get("activation") else None
    task = _task_from(served.labels, training.get("activation"), declared)
    keras_path = extra / "model.keras"
    return ModelSource(
        kind="export",
        path=served.path,
        model_name=served.model_name,
        labels=tuple(served.labels),
        input_shape=tuple(served.input_shape),
        task=task,
        config=served.config or {},
        preprocessing=served.preprocessing,
        card=served.card,
        spec=served.spec,
        served=served,
        _predict=served.predict,
        _keras_path=keras_path if keras_path.is_file() else None,
    )


def _load_run_source(path: Path) -> ModelSource:
    from zoo.training.rundir import read_run

    try:
        run = read_run(path)
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(str(err)) from None
    info = run.dataset_info
    prep = {"training_data": {k: info[k] for k in ("dataset", "windows", "image_size", "channels")
                              if k in info}}
    if not prep["training_data"].get("windows") and run.config.get("windows"):
        prep["training_data"]["windows"] = run.config["windows"]
    model = run.model
    from zoo.export.signatures import resolve_spec

    input_shape = tuple(int(d) for d in model.input_shape[1:])
    spec = resolve_spec(input_shape, info.get("preprocessing") or prep["training_data"], run.config)
    return ModelSource(
        kind="run", path=path, model_name=run.model_name, labels=tuple(run.labels),
        input_shape=input_shape, spec=spec,
        task=_task_from(run.labels, _activation_of(model), info.get("task")), config=run.config,
        preprocessing=prep, card=None, _keras=model, _keras_path=run.keras_path,
    )


# --------------------------------------------------------------------------------------------
# Data: a prepared cache, or a dataset prepared into one under --out
# --------------------------------------------------------------------------------------------


def _prepare_for(source: ModelSource, dataset: str, data_dir, out: Path, *, val_fraction,
                 test_fraction, seed) -> Path:
    """Prepare ``dataset`` at the model's input size and windows into ``out/cache``."""
    from pipelines.cache import prepare
    from pipelines.datasets import get_adapter

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
    from pipelines.cache import make_dataset, read_info

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
    manifest = pd.read_csv(cache / "manifest.csv", dtype=str).set_index("id")
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
    from pipelines.cache.decode import Row
    from pipelines.datasets import get_adapter
    from pipelines.manifest import safe_join
    from pipelines.preprocessing import to_channels

    if source.served is None:
        raise EvaluationError(
            f"--through serving needs an export (saved_models/<model>/<version>); {source.path} "
            "is a training run: export it first with python -m zoo.export --run-dir."
        )
    served, spec = source.served, source.spec
    adapter = get_adapter(dataset)
    from pipelines.cache.format import row_keys

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


def _select(gathered: dict, pairs, model_labels) -> tuple[np.ndarray, np.ndarray]:
    """Truth for the paired model labels [N, P] and the matching model probabilities [N, P]."""
    ds_index = {name: i for i, name in enumerate(gathered["labels"])}
    model_index = {name: i for i, name in enumerate(model_labels)}
    cols_t, cols_p = [], []
    for p in pairs:
        t = gathered["y_true"][:, ds_index[p.dataset]]
        cols_t.append(1.0 - t if p.negate else t)
        cols_p.append(gathered["y_prob"][:, model_index[p.model]])
    return np.stack(cols_t, axis=1), np.stack(cols_p, axis=1)


# --------------------------------------------------------------------------------------------
# Metrics (pure NumPy: testable without a model)
# --------------------------------------------------------------------------------------------


def compute_metrics(y_true, y_prob, *, labels, groups=None, thresholds=None, task="multi-label",
                    n_boot: int = 1000, seed: int = 0) -> dict:
    """Every number of a report for one level (images or scans).

    ``thresholds`` (one per label) must come from validation data; None means 0.5. Undefined
    values (AUROC of a class without positives) are None in the result.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    k = y_true.shape[1]
    thresholds = np.full(k, 0.5) if thresholds is None else np.asarray(thresholds, dtype=float)
    per = M.per_class_auroc(y_true, y_prob)
    macro, micro = M.macro_micro_auroc(y_true, y_prob)
    pr = M.pr_auc(y_true, y_prob)
    op = M.threshold_metrics(y_true, y_prob, thresholds)

    def all_aurocs(yt, yp):
        p = M.per_class_auroc(yt, yp)
        mac = float(np.nanmean(p)) if np.any(np.isfinite(p)) else np.nan
        return np.r_[p, mac, M.auroc(yt.ravel(), yp.ravel())]

    if n_boot > 0:
        low, high = M.bootstrap_ci(all_aurocs, y_true, y_prob, groups, n_boot=n_boot, seed=seed)
    else:
        low = high = np.full(k + 2, np.nan)
    per_class = {}
    for i, name in enumerate(labels):
        pos = int((y_true[:, i] > 0.5).sum())
        per_class[name] = {
            "auroc": per[i],
            "auroc_ci95": [low[i], high[i]],
            "auroc_status": "ok" if np.isfinite(per[i]) else (
                "undefined: no positives" if pos == 0 else "undefined: no negatives"),
            "pr_auc": pr[i],
            "positives": pos,
            "negatives": int(len(y_true) - pos),
            "threshold": float(thresholds[i]),
            **{name_: vals[i] for name_, vals in op.items()},
        }
    out = {
        "n": int(len(y_true)),
        "n_groups": int(len(np.unique(groups))) if groups is not None else int(len(y_true)),
        "per_class": per_class,
        "macro_auroc": macro,
        "macro_auroc_ci95": [low[k], high[k]],
        "micro_auroc": micro,
        "micro_auroc_ci95": [low[k + 1], high[k + 1]],
        "mean_pr_auc": float(np.nanmean(pr)) if np.any(np.isfinite(pr)) else np.nan,
        "ece": M.expected_calibration_error(y_true, y_prob),
        "brier": M.brier_score(y_true, y_prob),
        "bootstrap": {"resamples": int(n_boot), "unit": "patient" if groups is not None else
                      "image", "seed": int(seed), "interval": "95% percentile"},
    }
    single = task in ("multi-class", "binary")
    if single:
        cm, names = confusion(y_true, y_prob, thresholds, labels)
        out["confusion_matrix"] = {"classes": names, "matrix": cm.tolist()}
        out["accuracy"] = float(np.trace(cm) / max(cm.sum(), 1))
    return M.nan_to_none(out)


def confusion(y_true, y_prob, thresholds, labels):
    """Confusion matrix for single-label tasks: one output -> thresholded; two outputs (binary)
    -> the second (positive) output against its threshold; more -> argmax."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    k = y_true.shape[1]
    if k == 1:
        names = [f"not {labels[0]}", str(labels[0])]
        truth = (y_true[:, 0] > 0.5).astype(int)
        pred = (y_prob[:, 0] >= thresholds[0]).astype(int)
    elif k == 2:
        names = [str(x) for x in labels]
        truth = np.argmax(y_true, axis=1)
        pred = (y_prob[:, 1] >= thresholds[1]).astype(int)
    else:
        names = [str(x) for x in labels]
        truth, pred = np.argmax(y_true, axis=1), np.argmax(y_prob, axis=1)
    n = len(names)
    cm = np.zeros((n, n), dtype=int)
    np.add.at(cm, (truth, pred), 1)
    return cm, names


# --------------------------------------------------------------------------------------------
# The evaluation
# --------------------------------------------------------------------------------------------


def _aggregate(gathered_ids, groups, y_true, y_prob, how, top_k):
    scan_ids, yt, yp = M.aggregate_by_group(groups, y_true, y_prob, how=how, top_k=top_k)
    return scan_ids, yt, yp


def _patients_of(groups, patient_ids):
    """Map each aggregated scan id to its patient (first occurrence)."""
    first = {}
    for g, p in zip(groups, patient_ids):
        first.setdefault(g, p)
    return first


def evaluate(model, *, dataset=None, data_dir=None, cache=None, split="test", out,
             aggregate=None, top_k: int = 3, temperature: bool = False, n_boot: int = 1000,
             seed: int = 0, batch_size: int = 32, label_map=None, update_card: bool = True,
             threshold_rule: str = "youden", val_fraction=None, test_fraction=None,
             plots: bool = True, through: str = "cache") -> dict:
    """Run the whole evaluation and write its files into ``out``; returns the report dict.

    ``through="serving"`` scores an export by sending the original files through the signatures
    a TF Serving client calls (:func:`gather_serving_predictions`) instead of the cache, and
    reports how far those probabilities are from the cache path's (``report["serving"]``).
    Thresholds and temperature still come from the cache's validation split.
    """
    if through not in ("cache", "serving"):
        raise EvaluationError(f"--through {through!r} must be cache or serving.")
    from pipelines import label_maps
    from pipelines.cache import read_info

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = model if isinstance(model, ModelSource) else load_model_source(model)
    if cache is None:
        if dataset is None:
            raise EvaluationError("Pass --dataset NAME with --data-dir DIR, or --cache DIR.")
        from pipelines.datasets import get_adapter

        adapter = get_adapter(dataset)  # unknown name -> the adapters' clear error
        if data_dir is None:
            if adapter.default_data_dir is None:
                raise EvaluationError(f"--dataset {dataset} needs --data-dir (the dataset's folder) "
                                      "or --cache (a prepared cache).")
            data_dir = adapter.ensure_data()
        cfg = source.config or {}
        cache = _prepare_for(
            source, dataset, data_dir, out,
            val_fraction=cfg.get("val_fraction", 0.15) if val_fraction is None else val_fraction,
            test_fraction=cfg.get("test_fraction", 0.15) if test_fraction is None else test_fraction,
            seed=cfg.get("seed", 0))
    cache = Path(cache)
    info = read_info(cache)
    if dataset is not None and info.get("dataset") not in (None, dataset):
        raise EvaluationError(
            f"The cache {cache} holds dataset {info.get('dataset')!r}, not {dataset!r}; pass the "
            "matching --dataset or another --cache."
        )
    dataset = dataset or info.get("dataset")
    try:
        pairs = label_maps.resolve(source.labels, info["labels"],
                                   given=label_maps.parse_label_map(label_map)
                                   if isinstance(label_map, (str, type(None))) else label_map)
    except label_maps.LabelMappingError as err:
        raise EvaluationError(str(err)) from None
    labels = [p.model for p in pairs]
    if aggregate is None:
        # labels that belong to a whole scan are scored per scan by default
        from pipelines.datasets import get_adapter, list_adapters

        if str(dataset) in list_adapters():
            aggregate = get_adapter(str(dataset)).scan_labelled
    if aggregate not in (None, "none", "max", "topk_mean"):
        raise EvaluationError(f"--aggregate {aggregate!r} must be max or topk_mean.")
    aggregate = None if aggregate == "none" else aggregate
    # softmax temperature needs every output; a subset of softmax outputs is rescaled per class
    multiclass = (source.task == "multi-class" or (
        source.task == "binary" and len(source.labels) == 2)) and len(pairs) == len(source.labels)

    test = gather_predictions(source, cache, split, batch_size=batch_size)
    serving = None
    if through == "serving":
        if dataset is None or data_dir is None:
            raise EvaluationError(
                "--through serving sends the original files: pass --dataset NAME and --data-dir "
                "DIR (the folder the cache was prepared from)."
            )
        served_probs, counts = gather_serving_predictions(
            source, dataset, data_dir, test["id"], batch_size=batch_size,
            options=info.get("settings", {}).get("options") or None,
            row_keyed=info.get("ids") == "row keys")
        gap = np.abs(served_probs - test["y_prob"])
        serving = {"requests": counts, "images": int(len(gap)),
                   "max_abs_diff_vs_cache": float(gap.max()) if gap.size else 0.0,
                   "mean_abs_diff_vs_cache": float(gap.mean()) if gap.size else 0.0}
        test["y_prob"] = served_probs
    yt, yp = _select(test, pairs, source.labels)

    # --- operating thresholds and temperature: validation data only ----------------------
    val_available = split not in ("val", "all") and info["splits"].get("val", 0) > 0
    temp_value = None
    if val_available:
        val = gather_predictions(source, cache, "val", batch_size=batch_size)
        overlap = set(val["patient_id"]) & set(test["patient_id"])
        if overlap:
            raise EvaluationError(
                f"{len(overlap)} patient(s) appear in both the val and the {split} split of "
                f"{cache}; re-prepare the cache with patient-grouped splits."
            )
        vt, vp = _select(val, pairs, source.labels)
        vgroups = val["study_id"] if aggregate else None
        if aggregate:
            _, vt, vp = _aggregate(val["id"], vgroups, vt, vp, aggregate, top_k)
        if temperature:
            temp_value = M.fit_temperature(vt, vp, multiclass=multiclass)
            vp = M.apply_temperature(vp, temp_value, multiclass=multiclass)
        thresholds = M.choose_thresholds(vt, vp, rule=threshold_rule)
        op_source = {"kind": "validation split", "dataset": dataset, "split": "val",
                     "rule": threshold_rule, "n": int(len(vt))}
    else:
        stored = ((source.card or {}).get("operating_point") or {})
        if stored.get("thresholds") and all(lbl in stored["thresholds"] for lbl in labels):
            thresholds = np.array([float(stored["thresholds"][lbl]) for lbl in labels])
            if temperature and stored.get("temperature"):
                temp_value = float(stored["temperature"])
            op_source = {"kind": "model card", "from": stored.get("source")}
        else:
            thresholds = np.full(len(labels), 0.5)
            why = ("the evaluated split is the validation split" if split == "val" else
                   "no validation split and no stored operating point")
            op_source = {"kind": "fixed 0.5", "why": why}
            if split == "val":
                thresholds = M.choose_thresholds(yt, yp, rule=threshold_rule)
                op_source = {"kind": "the evaluated val split itself (optimistic)",
                             "rule": threshold_rule}
            if temperature:
                print("warning: --temperature needs a validation split; not applied.",
                      file=sys.stderr)
    if temp_value is not None:
        yp_cal = M.apply_temperature(yp, temp_value, multiclass=multiclass)
    else:
        yp_cal = yp

    # --- per image, or per scan --------------------------------------------------------
    level = "image"
    groups = test["patient_id"]
    eval_t, eval_p = yt, yp_cal
    scan_table = None
    if aggregate:
        level = "scan"
        patients = _patients_of(test["study_id"], test["patient_id"])
        scan_ids, eval_t, eval_p = _aggregate(test["id"], test["study_id"], yt, yp_cal,
                                              aggregate, top_k)
        groups = np.array([patients[s] for s in scan_ids])
        scan_table = (scan_ids, groups)
    task = source.task if len(labels) == len(source.labels) else "multi-label"
    metrics = compute_metrics(eval_t, eval_p, labels=labels, groups=groups, thresholds=thresholds,
                              task=task, n_boot=n_boot, seed=seed)
    if temp_value is not None:
        raw_t, raw_p = yt, yp
        if aggregate:
            _, raw_t, raw_p = _aggregate(test["id"], test["study_id"], yt, yp, aggregate, top_k)
        metrics["calibration_before_temperature"] = M.nan_to_none({
            "ece": M.expected_calibration_error(raw_t, raw_p),
            "brier": M.brier_score(raw_t, raw_p),
        })

    # --- files ----------------------------------------------------------------------------
    _write_predictions(out / "predictions.csv", test, pairs, source.labels, yt, yp_cal)
    if scan_table is not None:
        frame = pd.DataFrame({"scan_id": scan_table[0], "patient_id": scan_table[1]})
        for i, lbl in enumerate(labels):
            frame[lbl] = eval_t[:, i].astype(int)
        for i, lbl in enumerate(labels):
            frame[f"prob_{lbl}"] = eval_p[:, i]
        frame.to_csv(out / "predictions_scan.csv", index=False)
    report = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {"kind": source.kind, "path": os.fspath(source.path), "name": source.model_name,
                  "labels": list(source.labels), "task": source.task,
                  "input_shape": list(source.input_shape), "windows": source.windows},
        "data": {"dataset": dataset, "cache": os.fspath(cache), "split": split,
                 "splits_used": test["splits"], "images": int(len(test["id"])),
                 "patients": int(len(np.unique(test["patient_id"]))),
                 "level": level, "aggregate": aggregate,
                 "top_k": int(top_k) if aggregate == "topk_mean" else None,
                 "scan_key": "study_id" if aggregate else None},
        "label_mapping": label_maps.describe(pairs),
        "operating_point": {"thresholds": dict(zip(labels, map(float, thresholds))),
                            "source": op_source, "temperature": temp_value},
        "metrics": metrics,
        "through": through,
    }
    if serving is not None:
        report["serving"] = serving
    report = M.nan_to_none(report)
    if plots:
        report["plots"] = _write_plots(out, eval_t, eval_p, labels, metrics, thresholds)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_report(report))

    from zoo import card as card_mod

    card = card_mod.card_from_report(report, source)
    card_mod.write_card(out, card)
    if update_card and source.version_dir is not None:
        card_mod.update_export_card(source.version_dir, report, source)
    return report


def _write_predictions(path, gathered, pairs, model_labels, yt, yp_cal):
    frame = pd.DataFrame({"id": gathered["id"], "patient_id": gathered["patient_id"]})
    for i, p in enumerate(pairs):
        frame[p.model] = yt[:, i].astype(int)
    probs = gathered["y_prob"].copy()
    index = {name: i for i, name in enumerate(model_labels)}
    for i, p in enumerate(pairs):
        probs[:, index[p.model]] = yp_cal[:, i]
    for i, lbl in enumerate(model_labels):
        frame[f"prob_{lbl}"] = probs[:, i]
    frame.to_csv(path, index=False, float_format="%.9g")


def _safe_name(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(label))


def _write_plots(out: Path, y_true, y_prob, labels, metrics, thresholds) -> list[str]:
    from zoo import plots

    written = []
    for i, lbl in enumerate(labels):
        pc = metrics["per_class"][lbl]
        ci = pc["auroc_ci95"]
        path = plots.roc_curve_png(
            y_true[:, i], y_prob[:, i], out / f"roc_{_safe_name(lbl)}.png", label=lbl,
            auroc=pc["auroc"] if pc["auroc"] is not None else float("nan"),
            ci=(np.nan if ci[0] is None else ci[0], np.nan if ci[1] is None else ci[1]),
            threshold=float(thresholds[i]))
        written.append(path.name)
    written.append(plots.reliability_png(y_true, y_prob, out / "reliability.png",
                                         ece=metrics["ece"]).name)
    if "confusion_matrix" in metrics:
        cm = metrics["confusion_matrix"]
        written.append(plots.confusion_png(cm["matrix"], cm["classes"],
                                           out / "confusion.png").name)
    return written


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _f(value, digits=3):
    return "undefined" if value is None else f"{value:.{digits}f}"


def _ci(pair):
    if not pair or pair[0] is None:
        return "n/a"
    return f"{pair[0]:.3f}-{pair[1]:.3f}"


def render_report(report: dict) -> str:
    m, d = report["metrics"], report["data"]
    op = report["operating_point"]
    lines = [
        f"# Evaluation: {report['model']['name']} on {d['dataset']} ({d['split']})", "",
        f"- Model: {report['model']['kind']} `{report['model']['path']}`, task "
        f"{report['model']['task']}, input {tuple(report['model']['input_shape'])}",
        f"- Data: {d['images']} images of {d['patients']} patients from split(s) "
        f"{', '.join(d['splits_used'])} of `{d['cache']}`",
        f"- Level: {d['level']}" + (f" (slices aggregated per study by {d['aggregate']}"
                                    + (f", top-{d['top_k']}" if d.get("top_k") else "") + ")"
                                    if d["aggregate"] else ""),
        f"- Scored units: {m['n']} ({m['n_groups']} patients); 95% CIs from "
        f"{m['bootstrap']['resamples']} bootstrap resamples of {m['bootstrap']['unit']}s",
        f"- Label mapping: {'; '.join(report['label_mapping'])}",
        *([f"- Scored through the serving signatures on the original files "
           f"({', '.join(f'{k}: {v}' for k, v in report['serving']['requests'].items())}); "
           f"largest difference from the cache path {report['serving']['max_abs_diff_vs_cache']:.2e}, "
           f"mean {report['serving']['mean_abs_diff_vs_cache']:.2e}"]
          if report.get("serving") else []),
        f"- Thresholds from: {op['source'].get('kind')}"
        + (f" ({op['source'].get('rule')})" if op["source"].get("rule") else ""),
        f"- Temperature: {_f(op['temperature'])}" if op.get("temperature") else
        "- Temperature: not applied",
        "",
        "## Summary", "",
        "| metric | value | 95% CI |", "|---|---|---|",
        f"| macro AUROC | {_f(m['macro_auroc'])} | {_ci(m['macro_auroc_ci95'])} |",
        f"| micro AUROC | {_f(m['micro_auroc'])} | {_ci(m['micro_auroc_ci95'])} |",
        f"| mean PR-AUC | {_f(m['mean_pr_auc'])} | |",
        f"| ECE | {_f(m['ece'])} | |",
        f"| Brier | {_f(m['brier'])} | |",
    ]
    if "accuracy" in m:
        lines.append(f"| accuracy | {_f(m['accuracy'])} | |")
    lines += ["", "## Per class", "",
              "| label | pos | neg | AUROC | 95% CI | PR-AUC | threshold | sens | spec | F1 | acc |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for lbl, pc in m["per_class"].items():
        auroc = _f(pc["auroc"]) if pc["auroc"] is not None else pc["auroc_status"]
        lines.append(
            f"| {lbl} | {pc['positives']} | {pc['negatives']} | {auroc} | {_ci(pc['auroc_ci95'])} "
            f"| {_f(pc['pr_auc'])} | {pc['threshold']:.3f} | {_f(pc['sensitivity'])} | "
            f"{_f(pc['specificity'])} | {_f(pc['f1'])} | {_f(pc['accuracy'])} |")
    if "confusion_matrix" in m:
        cm = m["confusion_matrix"]
        lines += ["", "## Confusion matrix (rows truth, columns prediction)", "",
                  "| | " + " | ".join(cm["classes"]) + " |",
                  "|---" * (len(cm["classes"]) + 1) + "|"]
        for name, row in zip(cm["classes"], cm["matrix"]):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    lines += ["", "Not for diagnostic use: research evaluation only.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zoo.evaluate",
        description="Evaluate an export or a training run on a dataset split: AUROC with patient "
        "bootstrap CIs, thresholds from validation, calibration, plots, model card.",
    )
    p.add_argument("--model", required=True, type=Path,
                   help="export (saved_models/<model>/<version>) or training run directory")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help="dataset adapter name (e.g. synthetic, rsna, cq500)")
    data.add_argument("--data-dir", type=Path, help="the dataset's folder (prepared into OUT/cache)")
    data.add_argument("--cache", type=Path, help="a prepared cache (python -m pipelines.prepare)")
    data.add_argument("--split", default="test",
                      help="split to evaluate: test (default), val, train, or all (external data)")
    data.add_argument("--val-fraction", type=float, help="when preparing: default the run's")
    data.add_argument("--test-fraction", type=float, help="when preparing: default the run's")
    data.add_argument("--label-map", help="explicit pairs MODEL_LABEL=DATASET_LABEL,...")
    scan = p.add_argument_group("scan level (external validation)")
    scan.add_argument("--aggregate", choices=("none", "max", "topk_mean"),
                      help="slice -> scan aggregation (default: max for cq500, none otherwise)")
    scan.add_argument("--top-k", type=int, default=3, help="k for topk_mean (default 3)")
    metrics = p.add_argument_group("metrics")
    metrics.add_argument("--bootstrap", type=int, default=1000,
                         help="bootstrap resamples of patients for 95%% CIs (default 1000; 0 = off)")
    metrics.add_argument("--temperature", action="store_true",
                         help="fit a temperature on the val split and apply it")
    metrics.add_argument("--threshold-rule", choices=("youden", "f1"), default="youden")
    metrics.add_argument("--seed", type=int, default=0)
    p.add_argument("--through", choices=("cache", "serving"), default="cache",
                   help="score the cache (default) or send the original files through the export's "
                   "serving signatures, as a TF Serving client does, and report the difference")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--no-card", action="store_true", help="do not update the export's model card")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from pipelines.cache import PrepareError
    from pipelines.cli import check_writable

    if args.cache is None and args.dataset is None:
        print("error: pass --dataset NAME (with --data-dir DIR) or --cache DIR.", file=sys.stderr)
        return 2
    if args.top_k < 1:
        print(f"error: --top-k must be at least 1, got {args.top_k}.", file=sys.stderr)
        return 2
    try:
        check_writable(args.out, "--out")
        report = evaluate(
            args.model, dataset=args.dataset, data_dir=args.data_dir, cache=args.cache,
            split=args.split, out=args.out, aggregate=args.aggregate, top_k=args.top_k,
            temperature=args.temperature, n_boot=args.bootstrap, seed=args.seed,
            batch_size=args.batch_size, label_map=args.label_map, update_card=not args.no_card,
            threshold_rule=args.threshold_rule, val_fraction=args.val_fraction,
            test_fraction=args.test_fraction, through=args.through,
        )
    except (ValueError, FileNotFoundError, KeyError, PrepareError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {message}", file=sys.stderr)
        return 2
    m = report["metrics"]
    print(f"{report['model']['name']} on {report['data']['dataset']} {report['data']['split']} "
          f"({report['data']['level']} level, n={m['n']}): macro AUROC {_f(m['macro_auroc'])} "
          f"(95% CI {_ci(m['macro_auroc_ci95'])})")
    for lbl, pc in m["per_class"].items():
        auroc = _f(pc["auroc"]) if pc["auroc"] is not None else pc["auroc_status"]
        print(f"  {lbl:<20} AUROC {auroc:<8} CI {_ci(pc['auroc_ci95'])}  sens {_f(pc['sensitivity'])}"
              f"  spec {_f(pc['specificity'])}  thr {pc['threshold']:.3f}")
    if report.get("serving"):
        sv = report["serving"]
        print(f"  through serving ({', '.join(f'{k} {v}' for k, v in sv['requests'].items())}): "
              f"max |p_serving - p_cache| {sv['max_abs_diff_vs_cache']:.2e}, "
              f"mean {sv['mean_abs_diff_vs_cache']:.2e}")
    print(f"Wrote {args.out}/report.md, report.json, predictions.csv and plots.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
