"""Manifest -> sharded TFRecords (``prepare``), and TFRecords -> tf.data (``make_dataset``).

Cache layout (``out``)::

    dataset.json                      what is inside; written last, so it is the done marker
    manifest.csv                      one row per written example: id, patient_id, study_id,
                                      series_id (pseudonymised), slice, labels..., split, shard
    quarantine.csv                    path, reason: files that could not be decoded
    train-00000-of-00004.tfrecord     shards; each is written to a hidden temp name and renamed
    ...                               when complete, so a re-run skips the finished ones
    .progress/                        resume state while a run is unfinished (removed at the end)

Record features: ``image`` (bytes: raw uint8 H*W*C, row-major), ``height``, ``width``,
``channels`` (int64), ``label`` (float list, one per label), ``id`` (bytes),
``patient_id`` (bytes, pseudonymised).

Privacy: patient, study and series identifiers are replaced by ``sha256(salt + value)``
(first 16 hex digits) with a random per-cache salt. The salt is kept only in ``.progress/``
while a run can still be resumed and is deleted when the cache is complete, so a finished cache
cannot be linked back to header values by hashing candidate IDs. Nothing else from the
headers is written to the records, the manifest or the logs; image paths appear only in
``quarantine.csv`` (the reader needs them to find the broken files).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from pipelines import prepare as _decode

FORMAT_VERSION = 1
INFO_FILE = "dataset.json"
MANIFEST_FILE = "manifest.csv"
QUARANTINE_FILE = "quarantine.csv"
PROGRESS_DIR = ".progress"
SHARD_TARGET_BYTES = 64 * 2**20
SPLIT_ORDER = ("train", "val", "test")
PSEUDONYM_HEX = 16

__all__ = ["PrepareError", "prepare", "read_info", "make_dataset", "shard_files", "parse_batch"]


class PrepareError(RuntimeError):
    """A cache could not be prepared (strict mode, changed settings on resume, ...)."""


# --------------------------------------------------------------------------------------------
# Small helpers


def _image_size(image_size) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"image_size={image_size!r} is not N or (height, width); pass e.g. 256.")
    if min(size) < 1:
        raise ValueError(f"image_size={image_size!r} must be positive; pass e.g. 256.")
    return size


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _pseudonym(salt: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "":
        return ""
    digest = hashlib.sha256((salt + str(value)).encode("utf-8")).hexdigest()
    return digest[:PSEUDONYM_HEX]


def _seed(*parts: int) -> int:
    """A 31-bit seed that depends on every part (seed, epoch, purpose)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


def _shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _split_names(splits) -> list[str]:
    names = list(dict.fromkeys(splits))
    return [s for s in SPLIT_ORDER if s in names] + sorted(s for s in names if s not in SPLIT_ORDER)


# --------------------------------------------------------------------------------------------
# The record format


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int64(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _float(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def serialize_example(image: bytes, shape, label, example_id: str, patient_id: str) -> bytes:
    """One ``tf.train.Example``: raw uint8 pixels, their shape, labels and the two ids."""
    height, width, channels = shape
    features = {
        "image": _bytes([image]),
        "height": _int64([height]),
        "width": _int64([width]),
        "channels": _int64([channels]),
        "label": _float([float(v) for v in label]),
        "id": _bytes([str(example_id).encode("utf-8")]),
        "patient_id": _bytes([str(patient_id).encode("utf-8")]),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def feature_spec(num_labels: int) -> dict:
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "channels": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([num_labels], tf.float32),
        "id": tf.io.FixedLenFeature([], tf.string),
        "patient_id": tf.io.FixedLenFeature([], tf.string),
    }


def parse_batch(serialized, *, image_shape, num_labels):
    """A batch of serialized records -> (float32 images [B,H,W,C] in [0, 1], labels, ids)."""
    height, width, channels = image_shape
    parsed = tf.io.parse_example(serialized, feature_spec(num_labels))
    pixels = tf.io.decode_raw(parsed["image"], tf.uint8)
    images = tf.reshape(pixels, [-1, height, width, channels])
    images = tf.cast(images, tf.float32) * (1.0 / 255.0)
    ids = {"id": parsed["id"], "patient_id": parsed["patient_id"]}
    return images, parsed["label"], ids


# --------------------------------------------------------------------------------------------
# prepare: manifest -> shards


def _adapter_name(dataset) -> str:
    if isinstance(dataset, str):
        return dataset
    name = getattr(dataset, "NAME", None) or getattr(dataset, "__name__", None)
    return str(name or type(dataset).__name__).rsplit(".", 1)[-1]


def _plan(
    manifest: pd.DataFrame,
    labels,
    salt: str,
    seed: int,
    bytes_per_example: int,
    shard_size: int | None,
) -> pd.DataFrame:
    """Pseudonymise ids, give each row a shard; rows are mixed within a split by ``seed``."""
    plan = manifest.copy()
    for column in ("patient_id", "study_id", "series_id"):
        if column in plan.columns:
            plan[column] = [_pseudonym(salt, v) for v in plan[column]]
        else:
            plan[column] = ""
    if "slice" not in plan.columns:
        plan["slice"] = -1
    plan["id"] = plan["id"].astype(str)
    for label in labels:
        plan[label] = plan[label].astype(int)
    pieces = []
    for split in _split_names(plan["split"].unique()):
        part = plan[plan["split"] == split].sort_values("id", kind="stable")
        order = np.random.default_rng(_seed(seed, 7, len(part))).permutation(len(part))
        part = part.iloc[order].reset_index(drop=True)
        per_shard = shard_size or max(1, SHARD_TARGET_BYTES // max(1, bytes_per_example))
        total = max(1, math.ceil(len(part) / per_shard))
        part["shard"] = [_shard_name(split, i // per_shard, total) for i in range(len(part))]
        pieces.append(part)
    return pd.concat(pieces, ignore_index=True)


def _settings(
    name, data_dir, size, windows, val_fraction, test_fraction, seed, shard_size, options
) -> dict:
    """The arguments that define a cache; a re-run with other values is refused."""
    return _jsonable(
        {
            "dataset": name,
            "data_dir": str(Path(data_dir).resolve()),
            "image_size": list(size),
            "windows": windows,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "seed": seed,
            "shard_size": shard_size,
            "options": options or {},
        }
    )


def _check_same(settings: dict, stored: dict, out: Path) -> None:
    changed = [k for k in settings if k in stored and stored[k] != settings[k]]
    if changed:
        detail = ", ".join(f"{k} {stored[k]!r} -> {settings[k]!r}" for k in changed)
        raise PrepareError(
            f"The cache {out} was prepared with other settings ({detail}); "
            "use a new --out folder or delete this one."
        )


def _decoded_rows(todo, payloads, ref, data_dir, windows, size, channels, workers):
    """Yield (position, bytes | None, error | None) in order, from workers or in-process."""
    tasks = ((i, payloads[i]) for i in range(len(todo)))
    if workers <= 1 or len(todo) <= 1:
        _decode.init_worker(ref, str(data_dir), windows, size, channels)
        for task in tasks:
            yield _decode.work(task)
        return
    context = multiprocessing.get_context("spawn")
    chunk = max(1, min(16, len(todo) // (workers * 8) or 1))
    with context.Pool(
        workers,
        initializer=_decode.init_worker,
        initargs=(ref, str(data_dir), windows, size, channels),
    ) as pool:
        try:
            yield from pool.imap(_decode.work, tasks, chunksize=chunk)
        finally:
            pool.terminate()


def prepare(
    dataset,
    data_dir,
    out,
    *,
    image_size=256,
    windows=None,
    workers: int = 1,
    strict: bool = False,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    progress: bool = True,
    shard_size: int | None = None,
    options: dict | None = None,
) -> Path:
    """Decode ``dataset`` once into a sharded TFRecord cache at ``out``; returns ``out``.

    Args:
        dataset: adapter name (``pipelines.datasets.DATASETS``) or an adapter object (LABELS,
            TASK, read_manifest, load, channels).
        data_dir: the dataset's root folder in its published layout.
        out: cache folder; created, or resumed when a previous run with the same settings
            stopped part-way (finished shards are kept, the rest is redone).
        image_size: N or (H, W); every image is resized (plain bilinear, aspect not kept).
        windows: CT windows stacked as channels (names / "c/w" string or tuple); None = the
            default brain, subdural, bone. 8-bit image datasets ignore them.
        workers: decode processes (spawned; 1 = in this process).
        strict: raise at the first unreadable file instead of writing it to quarantine.csv.
        val_fraction, test_fraction, seed: passed to ``pipelines.splits.split_manifest``,
            which keeps an official split when the dataset ships one.
        progress: tqdm bar and a printed summary.
        shard_size: examples per shard (default: about 64 MiB of pixels per shard).
        options: extra keyword arguments for the adapter's ``read_manifest``.
    """
    from pipelines.datasets import (
        CT_DATASETS,
        manifest_channels,
        manifest_labels,
        manifest_task,
    )
    from pipelines.manifest import quarantined, validate_manifest
    from pipelines.splits import assert_patient_disjoint, split_manifest
    from pipelines.transforms import format_windows, parse_windows

    start = time.perf_counter()
    out = Path(out)
    data_dir = Path(data_dir)
    size = _image_size(image_size)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer; pass e.g. 2.")
    if shard_size is not None and (not isinstance(shard_size, int) or shard_size < 1):
        raise ValueError(f"shard_size={shard_size!r} must be a positive integer or None.")
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"The data directory {data_dir} does not exist; pass --data-dir pointing at the "
            "dataset's root folder."
        )
    adapter = dataset
    if isinstance(dataset, str):
        from pipelines.datasets import get_adapter

        adapter = get_adapter(dataset)
    name = _adapter_name(dataset)
    windows = parse_windows(windows)
    settings = _settings(
        name, data_dir, size, windows, val_fraction, test_fraction, seed, shard_size, options
    )

    info_path = out / INFO_FILE
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        _check_same(settings, info.get("settings", {}), out)
        if progress:
            print(
                f"{out} is already prepared ({_counts_text(info['splits'])}); nothing to do.",
                file=sys.stderr,
            )
        return out

    # Read, validate, split. This is redone on resume; the stored salt keeps the pseudonyms
    # and the seed keeps the split and the shard plan the same. Labels, task and channels
    # come from the manifest where the adapter learns them from the data (folder, csv, ...).
    manifest = adapter.read_manifest(data_dir, **(options or {}))
    labels = manifest_labels(adapter, manifest)
    task = manifest_task(adapter, manifest)
    channels = int(manifest_channels(adapter, manifest, windows))
    is_ct = bool(manifest.attrs.get("ct", name in CT_DATASETS))
    left_out = [[str(q.get("path", "")), str(q.get("reason", ""))] for q in quarantined(manifest)]
    if strict and left_out:
        raise PrepareError(
            f"Could not read {left_out[0][0]} ({left_out[0][1]}); fix or remove the file, or run "
            "without --strict to quarantine it and go on."
        )
    manifest = validate_manifest(manifest, labels)
    manifest = split_manifest(
        manifest, labels, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    assert_patient_disjoint(manifest, name_patients=False)  # raw header ids stay out of logs

    progress_dir = out / PROGRESS_DIR
    progress_dir.mkdir(parents=True, exist_ok=True)
    state_path = progress_dir / "state.json"
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        _check_same(settings, state["settings"], out)
    else:
        state = {"settings": settings, "salt": secrets.token_hex(16)}
        _atomic_write_text(state_path, json.dumps(state, indent=2))

    original = {str(r["id"]): r for r in manifest.to_dict("records")}
    plan = _plan(manifest, labels, state["salt"], seed, size[0] * size[1] * channels, shard_size)

    shards = list(dict.fromkeys(plan["shard"]))
    done = {s for s in shards if (out / s).is_file() and (progress_dir / f"{s}.json").is_file()}
    todo = plan[~plan["shard"].isin(done)].reset_index(drop=True)
    rows = todo.to_dict("records")
    payloads = [original[row["id"]] for row in rows]

    shape = (size[0], size[1], channels)
    ref = _decode.AdapterRef(dataset if isinstance(dataset, str) else adapter)
    quarantined = 0
    bar = _progress_bar(len(todo), progress, skipped=len(done), shards=len(shards))
    writer = None
    current = None
    tmp = None
    written: list[str] = []
    bad: list[list[str]] = []
    results = _decoded_rows(todo, payloads, ref, data_dir, windows, size, channels, workers)
    first_result = last_result = None
    try:
        for (position, pixels, error), row in zip(results, rows):
            last_result = time.perf_counter()
            first_result = first_result or last_result
            if row["shard"] != current:
                if writer is not None:
                    _finish_shard(writer, tmp, out, progress_dir, current, written, bad)
                current, written, bad = row["shard"], [], []
                tmp = out / f".{current}.tmp"
                writer = tf.io.TFRecordWriter(str(tmp))
            if error is not None:
                path = str(payloads[position].get("path", ""))
                if strict:
                    raise PrepareError(
                        f"Could not decode {path} ({error}); fix or remove the file, or run "
                        "without --strict to quarantine it and go on."
                    )
                bad.append([path, error])
                quarantined += 1
                if bar is not None:
                    bar.set_postfix(quarantined=quarantined)
            else:
                label = [row[k] for k in labels]
                writer.write(serialize_example(pixels, shape, label, row["id"], row["patient_id"]))
                written.append(row["id"])
            if bar is not None:
                bar.update(1)
        if writer is not None:
            _finish_shard(writer, tmp, out, progress_dir, current, written, bad)
            writer = None
    finally:
        results.close()  # stops the worker pool at once when strict mode raised
        if writer is not None:
            writer.close()
            tmp.unlink(missing_ok=True)
        if bar is not None:
            bar.close()

    facts = {
        "dataset": name,
        "labels": list(labels),
        "task": task,
        "image_size": [size[0], size[1]],
        "channels": channels,
        "windows": format_windows(windows) if is_ct else None,
    }
    run_stats = {
        "workers": workers,
        "seconds_last_run": round(time.perf_counter() - start, 3),
        "images_last_run": len(todo),
    }
    if len(todo) > 1 and last_result > first_result:
        # decode + write rate once the workers are up (reading the manifest, splitting and
        # starting the processes excluded): the throughput a large dataset sees
        run_stats["images_per_s_steady"] = round((len(todo) - 1) / (last_result - first_result), 2)
    info = _finish_cache(out, plan, shards, progress_dir, facts, settings, run_stats, left_out)
    if progress:
        _print_summary(out, info)
    return out


def _progress_bar(total, progress, *, skipped, shards):
    if not progress:
        return None
    from tqdm.auto import tqdm

    desc = "prepare" if not skipped else f"prepare (resuming, {skipped}/{shards} shards done)"
    return tqdm(total=total, unit="img", desc=desc, file=sys.stderr, dynamic_ncols=True)


def _finish_shard(writer, tmp, out, progress_dir, shard, written, bad) -> None:
    """Close, then mark done: the sidecar (ids, quarantine) first, the shard rename last."""
    writer.close()
    marker = {"shard": shard, "ids": written, "quarantine": bad}
    _atomic_write_text(progress_dir / f"{shard}.json", json.dumps(marker))
    os.replace(tmp, out / shard)


def _finish_cache(out, plan, shards, progress_dir, facts, settings, run_stats, left_out) -> dict:
    """Gather the shard markers into manifest.csv, quarantine.csv and (last) dataset.json."""
    labels = facts["labels"]
    written_ids: set[str] = set()
    quarantine: list[list[str]] = list(left_out)
    for shard in shards:
        marker = json.loads((progress_dir / f"{shard}.json").read_text())
        written_ids.update(marker["ids"])
        quarantine.extend(marker["quarantine"])
    columns = ["id", "patient_id", "study_id", "series_id", "slice", *labels, "split", "shard"]
    if "mask_path" in plan.columns:
        columns.insert(5, "mask_path")
    final = plan[plan["id"].isin(written_ids)][columns]
    final.to_csv(out / MANIFEST_FILE, index=False)
    with open(out / QUARANTINE_FILE, "w", newline="") as handle:
        csv_writer = csv.writer(handle)
        csv_writer.writerow(["path", "reason"])
        csv_writer.writerows(quarantine)
    splits = {s: int((final["split"] == s).sum()) for s in _split_names(plan["split"].unique())}
    by_split = {s: [x for x in shards if x.startswith(f"{s}-")] for s in splits}
    seconds = run_stats["seconds_last_run"]
    run_stats["images_per_s_last_run"] = (
        round(run_stats["images_last_run"] / seconds, 2) if seconds > 0 else None
    )
    info = {
        "format_version": FORMAT_VERSION,
        **facts,
        "splits": splits,
        "shards": by_split,
        "quarantined": len(quarantine),
        "pseudonymisation": f"sha256(per-cache random salt + value), first {PSEUDONYM_HEX} hex "
        "digits; the salt was discarded when the cache was finished",
        "record_features": {
            "image": "bytes, raw uint8 H*W*C row-major",
            "height": "int64",
            "width": "int64",
            "channels": "int64",
            "label": f"float x {len(labels)}",
            "id": "bytes",
            "patient_id": "bytes, pseudonymised",
        },
        "settings": settings,
        "prepare": run_stats,
    }
    _atomic_write_text(out / INFO_FILE, json.dumps(info, indent=2))
    shutil.rmtree(progress_dir, ignore_errors=True)
    return info


def _counts_text(splits: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in splits.items())


def _print_summary(out: Path, info: dict) -> None:
    run = info["prepare"]
    rate = run["images_per_s_last_run"]
    lines = [
        f"prepared {info['dataset']} into {out} in {run['seconds_last_run']:.1f} s "
        f"({run['images_last_run']} images decoded, {rate if rate is not None else '-'} images/s, "
        f"{run['workers']} worker{'s' if run['workers'] != 1 else ''}"
        + (
            f"; {run['images_per_s_steady']} images/s once started"
            if "images_per_s_steady" in run
            else ""
        )
        + ")",
        f"  {'split':<8}{'images':>8}{'shards':>8}",
    ]
    for split, count in info["splits"].items():
        lines.append(f"  {split:<8}{count:>8}{len(info['shards'][split]):>8}")
    lines.append(
        f"  quarantined: {info['quarantined']}"
        + (f" (see {out / QUARANTINE_FILE})" if info["quarantined"] else "")
    )
    print("\n".join(lines), file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Reading the cache


def read_info(cache) -> dict:
    """The cache's dataset.json; a clear error when the folder is missing or unfinished."""
    cache = Path(cache)
    if not cache.is_dir():
        raise FileNotFoundError(
            f"The cache {cache} does not exist; create it with "
            f"`python -m pipelines.prepare --dataset NAME --data-dir DIR --out {cache}`."
        )
    path = cache / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"The cache {cache} has no {INFO_FILE} (it was never prepared or the run stopped "
            "part-way); run `python -m pipelines.prepare` with the same --out to finish it."
        )
    info = json.loads(path.read_text())
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"The cache {cache} has format version {info.get('format_version')!r}, this code "
            f"reads {FORMAT_VERSION}; prepare it again into a new folder."
        )
    return info


def shard_files(cache, split: str, info: dict | None = None) -> list[str]:
    """The split's shard paths, sorted; a clear error for an unknown split or a missing file."""
    cache = Path(cache)
    info = info or read_info(cache)
    if split not in info["splits"]:
        raise ValueError(
            f"The cache {cache} has no split {split!r}; it has {', '.join(info['splits'])}."
        )
    files = [cache / name for name in sorted(info["shards"][split])]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"The cache {cache} is missing {missing[0]}"
            + (f" and {len(missing) - 1} more shard(s)" if len(missing) > 1 else "")
            + "; prepare it again."
        )
    return [str(f) for f in files]


def _split_table(cache: Path, split: str, labels) -> pd.DataFrame:
    table = pd.read_csv(cache / MANIFEST_FILE, dtype={"id": str, "shard": str})
    return table[table["split"] == split]


def _group_of(labels_row: np.ndarray, task: str) -> int:
    if task == "multi-label" or labels_row.shape[-1] == 1:
        return int(labels_row[0] > 0.5)
    return int(np.argmax(labels_row))


def make_dataset(
    cache,
    split: str,
    *,
    batch_size: int,
    training: bool = False,
    image_size=None,
    augment=None,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    seed: int = 0,
    epoch: int = 0,
    input_context=None,
    balanced: bool = False,
    repeat: bool = False,
    with_ids: bool = False,
    drop_remainder: bool = False,
    shuffle_buffer: int = 1024,
) -> tf.data.Dataset:
    """TFRecords -> ``tf.data.Dataset`` of ``(images, labels)`` (or ``+ ids`` with with_ids).

    images: float32 [B, H, W, C] in [0, 1]; labels: float32 [B, K].

    Pipeline: shard files -> (by worker: files when there are at least as many files as input
    pipelines, else records, always before decoding) -> interleaved reads -> [training:
    shuffle | balanced: equal-weight sampling over classes] -> batch -> parse + decode ->
    optional resize -> [training: Keras augmentation layers, MixUp / CutMix] -> prefetch.

    Args:
        batch_size: the batch this dataset yields. Under tf.distribute with an input_context,
            pass ``input_context.get_per_replica_batch_size(global_batch)``.
        training: shuffle, and apply ``augment``, ``mixup``, ``cutmix`` (they are no-ops
            otherwise, like the Keras layers at inference).
        image_size: N or (H, W) to resize to (bilinear, antialiased); None = cache size.
        augment: None/False, True/"default", a spec ("flip,rotation=10,zoom=0.1"), a dict, or
            a callable on image batches; see ``pipelines.augment``.
        mixup, cutmix: MixUp alpha / CutMix factor; both > 0 alternates them by batch.
        seed, epoch: the order and the augmentation depend only on these, so a resumed run
            that passes its epoch sees the same data as an uninterrupted one.
        input_context: ``tf.distribute.InputContext``; this pipeline keeps its share.
        balanced: sample classes with equal probability (multi-label and single-output tasks:
            positive vs negative of the first label, e.g. "any"; multi-class: argmax class).
            An epoch keeps the split's length (the minority classes are oversampled).
        repeat: repeat forever (each pass reshuffled, deterministically).
        with_ids: also yield ``{"id": bytes [B], "patient_id": bytes [B]}``.
        drop_remainder: drop a last partial batch.
        shuffle_buffer: records in the shuffle buffer (serialized, so H*W*C bytes each).
    """
    from pipelines import augment as _augment

    cache = Path(cache)
    info = read_info(cache)
    files = shard_files(cache, split, info)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    labels = tuple(info["labels"])
    num_labels = len(labels)
    height, width = info["image_size"]
    shape = (height, width, int(info["channels"]))
    table = _split_table(cache, split, labels)
    if len(table) == 0:
        raise ValueError(f"The split {split!r} of the cache {cache} has no examples.")

    pipes, pipe_id = 1, 0
    if input_context is not None:
        pipes, pipe_id = input_context.num_input_pipelines, input_context.input_pipeline_id
    by_files = pipes > 1 and len(files) >= pipes
    if by_files:
        files = files[pipe_id::pipes]
        local = table[table["shard"].isin([Path(f).name for f in files])]
        local_count = len(local)
    else:
        local = table
        local_count = len(range(pipe_id, len(table), pipes))

    ds = tf.data.Dataset.from_tensor_slices(files)
    if training and len(files) > 1:
        ds = ds.shuffle(len(files), seed=_seed(seed, epoch, 1), reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=8 * 2**20),
        cycle_length=min(len(files), 8),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if pipes > 1 and not by_files:
        ds = ds.shard(pipes, pipe_id)

    buffer = max(1, min(shuffle_buffer, local_count))
    if balanced:
        ds = _balanced(ds, local, labels, info["task"], buffer, seed, epoch, num_labels)
        if not repeat:
            ds = ds.take(local_count)
    elif training:
        ds = ds.shuffle(buffer, seed=_seed(seed, epoch, 2), reshuffle_each_iteration=True)
    if repeat and not balanced:
        ds = ds.repeat()

    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    out_size = shape[:2] if image_size is None else _image_size(image_size)

    def decode(serialized):
        images, y, ids = parse_batch(serialized, image_shape=shape, num_labels=num_labels)
        if tuple(out_size) != tuple(shape[:2]):
            images = tf.image.resize(images, out_size, method="bilinear", antialias=True)
            images = tf.clip_by_value(images, 0.0, 1.0)
        return images, y, ids

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    if training:
        augmenter = _augment.build_augmentation(augment, seed=_seed(seed, epoch, 3))
        mixer = _augment.build_mix(mixup=mixup, cutmix=cutmix, seed=_seed(seed, epoch, 4))
        if augmenter is not None or mixer is not None:
            ds = ds.enumerate()
        if isinstance(augmenter, _augment.Augmentation) and _augment.stateless_ok():
            # each batch's randomness comes from (seed, epoch, batch index): parallel and
            # still deterministic
            ds = ds.map(
                lambda i, b: (i, (augmenter(b[0], batch_index=i), b[1], b[2])),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        elif augmenter is not None:
            # a callable of the caller's (or another Keras backend): one batch at a time, so
            # seeded generators advance in batch order
            ds = ds.map(lambda i, b: (i, (augmenter(b[0], training=True), b[1], b[2])))
        if mixer is not None:
            ds = ds.map(
                lambda i, b: (i, (*mixer(i, b[0], b[1]), b[2])),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        if augmenter is not None or mixer is not None:
            ds = ds.map(lambda i, b: b)
    if not with_ids:
        ds = ds.map(lambda x, y, ids: (x, y))
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _balanced(ds, local, labels, task, buffer, seed, epoch, num_labels):
    """Equal-weight sampling over the classes present (filter per class, repeat, sample)."""
    values = local[list(labels)].to_numpy(dtype=np.float32)
    present = sorted({_group_of(v, task) for v in values})
    if len(present) < 2:
        raise ValueError(
            f"balanced=True needs at least two classes in the split, but every example is in "
            f"class {present[0] if present else '-'}; use balanced=False."
        )
    multi = task == "multi-label" or num_labels == 1
    spec = {"label": tf.io.FixedLenFeature([num_labels], tf.float32)}

    def group(serialized):
        label = tf.io.parse_single_example(serialized, spec)["label"]
        if multi:
            return tf.cast(label[0] > 0.5, tf.int64)
        return tf.argmax(label, output_type=tf.int64)

    streams = []
    for k in present:
        stream = ds.filter(lambda s, k=k: tf.equal(group(s), k))
        stream = stream.shuffle(
            buffer, seed=_seed(seed, epoch, 10 + k), reshuffle_each_iteration=True
        )
        streams.append(stream.repeat())
    weights = [1.0 / len(streams)] * len(streams)
    return tf.data.Dataset.sample_from_datasets(
        streams, weights=weights, seed=_seed(seed, epoch, 5)
    )
