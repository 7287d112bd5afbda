"""``prepare``: a dataset adapter's manifest -> a sharded TFRecord cache (see ``format``).

The parent process starts the decode workers first (spawned processes importing the decoders
while the parent reads the manifest, so their start-up overlaps it), reads and splits the
manifest, plans the shards (pseudonymised ids, a seeded order), hands the decoding, the
record encoding and framing to :mod:`pipelines.cache.decode` (in-process with ``workers=1``),
a piece of consecutive rows at a time, and appends the workers' piece files to the shards in
plan order. Each shard is written
under a hidden temp name and renamed when complete, with a marker in ``.progress/``; a re-run
with the same settings skips the finished shards. ``dataset.json`` is written last.
"""

from __future__ import annotations

import csv
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

from pipelines.cache import decode
from pipelines.fs import atomic_write_text, replace
from pipelines.cache.format import (
    FORMAT_VERSION,
    INFO_FILE,
    MANIFEST_FILE,
    PROGRESS_DIR,
    PSEUDONYM_HEX,
    QUARANTINE_FILE,
    RECORD_FEATURES,
    SHARD_TARGET_BYTES,
    derive_seed,
    parse_image_size,
    pseudonym,
    row_keys,
    shard_name,
    split_names,
)

__all__ = ["PrepareError", "prepare"]


# quarantine.csv's path for a file the adapter left out, when paths are withheld
WITHHELD = "(withheld: prepare with --keep-path-ids to list paths)"


class PrepareError(RuntimeError):
    """A cache could not be prepared (strict mode, changed settings on resume, ...)."""


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



def _resolve_adapter(dataset):
    """A registered name or an Adapter instance -> the adapter; TypeError for anything else."""
    from pipelines.datasets import Adapter, get_adapter

    adapter = get_adapter(dataset) if isinstance(dataset, str) else dataset
    if not isinstance(adapter, Adapter):
        raise TypeError(
            f"dataset={dataset!r} is neither an adapter name nor an adapter; pass a name from "
            "pipelines.datasets.list_adapters() or an instance of pipelines.datasets.base.Adapter."
        )
    return adapter


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
            plan[column] = [pseudonym(salt, v) for v in plan[column]]
        else:
            plan[column] = ""
    if "slice" not in plan.columns:
        plan["slice"] = -1
    plan["id"] = plan["id"].astype(str)
    for label in labels:
        plan[label] = plan[label].astype(int)
    pieces = []
    for split in split_names(plan["split"].unique()):
        part = plan[plan["split"] == split].sort_values("id", kind="stable")
        order = np.random.default_rng(derive_seed(seed, 7, len(part))).permutation(len(part))
        part = part.iloc[order].reset_index(drop=True)
        per_shard = shard_size or max(1, SHARD_TARGET_BYTES // max(1, bytes_per_example))
        total = max(1, math.ceil(len(part) / per_shard))
        part["shard"] = [shard_name(split, i // per_shard, total) for i in range(len(part))]
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


def _worker_context():
    """A forkserver that has imported the decoders (workers fork from it, already warm); plain
    spawn where there is no forkserver. Never a bare fork: the parent runs TensorFlow threads."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # __main__ as spawn would import it (an adapter class defined in a script must unpickle)
    context.set_forkserver_preload(["__main__", "pipelines.cache.decode", "pipelines.datasets"])
    return context


class DecodePool:
    """The decode workers: started early, fed later.

    ``DecodePool(workers, ref, data_dir, windows, size)`` spawns the processes at once (their
    start-up, about a second of imports each, overlaps the parent's manifest reading);
    ``results(pieces)`` yields ``decode.work_piece`` results in piece order. ``workers=1``
    decodes in this process. ``close()`` (or the with-block) stops the workers at once.

    Why 2 workers used to be no faster than 1, in four steps:

    * each worker was a fresh spawned interpreter importing numpy, pandas, scipy and pydicom
      (3.7 to 5 s for a pool of 2 on the loaded 2-core machine), started only after the
      manifest was read: now they fork from a forkserver that imported the decoders once and
      start while the manifest is read;
    * the parent built every ``tf.train.Example`` itself: now the workers encode the records;
    * every record (196 KB at 256x256x3) still crossed the pool's result pipe, which all
      workers share under one lock and which holds 64 KB: a worker blocked until the parent
      was scheduled to drain it, so 2 workers ran 0.9-1.0x of one (280 images/s against 300).
      Now a worker writes the framed records of a piece (consecutive rows of one shard) to a
      file beside the shard and sends back one outcome per row; the parent appends the file to
      the shard (the same pool ran 1.7x of one once only the outcomes came back);
    * each slice's few MB of arrays went back to the kernel when freed and were faulted in
      again for the next (twice the decode time in a process that had imported TensorFlow):
      ``decode.keep_freed_memory`` in every decoding process. 2 workers now run 1.8-2.0x of
      one once up (``python -m benchmarks.pipeline``).
    """

    def __init__(self, workers, ref, data_dir, windows, size):
        self.workers = workers
        self.initargs = (ref, str(data_dir), windows, tuple(size))
        self.pool = None
        if workers > 1:
            context = _worker_context()
            self.pool = context.Pool(workers, initializer=decode.init_worker,
                                     initargs=self.initargs)

    def piece_rows(self, count: int) -> int:
        """Rows per piece: enough to amortise a piece file, few enough to keep every worker
        busy to the end (at least 4 pieces per worker)."""
        return max(1, min(16, count // (self.workers * 4)))

    def results(self, pieces):
        if self.pool is None:
            decode.init_worker(*self.initargs)
            for piece in pieces:
                yield decode.work_piece(piece)
            return
        yield from self.pool.imap(decode.work_piece, pieces)

    def close(self):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
    runner: str = "pool",
    beam_options=None,
    keep_path_ids: bool = False,
) -> Path:
    """Decode ``dataset`` once into a sharded TFRecord cache at ``out``; returns ``out``.

    Args:
        dataset: adapter name (``pipelines.datasets.list_adapters()``) or an adapter instance
            (a subclass of ``pipelines.datasets.base.Adapter``; it need not be registered).
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
        runner: ``"pool"`` (worker processes on this machine) or ``"beam"`` (an Apache Beam
            pipeline, :mod:`pipelines.cache.beam`: decode, quarantine and shard writing as
            Beam transforms; the same records, the same cache).
        beam_options: Beam pipeline options (a list of ``--flag=value`` strings); default the
            DirectRunner with ``workers`` processes.
        keep_path_ids: where the adapter derives ids from file paths (``Adapter.path_ids``:
            csv, folder), keep them in the manifest, the records and quarantine.csv. Off by
            default: paths often hold MRNs, names or UIDs, so the cache stores row keys
            (:func:`pipelines.cache.format.row_keys`) and quarantine.csv names the row key.
    """
    from pipelines.transforms import parse_windows

    start = time.perf_counter()
    out = Path(out)
    data_dir = Path(data_dir)
    size = parse_image_size(image_size)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer; pass e.g. 2.")
    if runner not in ("pool", "beam"):
        raise ValueError(f"runner={runner!r} is not 'pool' or 'beam'.")
    if shard_size is not None and (not isinstance(shard_size, int) or shard_size < 1):
        raise ValueError(f"shard_size={shard_size!r} must be a positive integer or None.")
    adapter = _resolve_adapter(dataset)
    if not (data_dir.is_dir() or (adapter.accepts_file and data_dir.is_file())):
        raise FileNotFoundError(
            f"The data directory {data_dir} does not exist; pass --data-dir pointing at the "
            "dataset's root folder"
            + (" or its file." if adapter.accepts_file else ".")
        )
    name = dataset if isinstance(dataset, str) else adapter.name
    windows = parse_windows(windows)
    settings = _settings(
        name, data_dir, size, windows, val_fraction, test_fraction, seed, shard_size, options
    )
    hide_paths = bool(getattr(adapter, "path_ids", False)) and not keep_path_ids
    settings["keep_path_ids"] = bool(keep_path_ids)

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

    ref = decode.AdapterRef(dataset if isinstance(dataset, str) else adapter)
    beam = None  # the Beam runner's options, when it runs
    if runner == "beam":
        from pipelines.cache import beam as beam_module

        beam_module.check_installed()
        beam = {"options": beam_options}
    with DecodePool(workers if beam is None else 1, ref, data_dir, windows, size) as pool:
        return _prepare(pool, adapter, name, data_dir, out, size, windows, workers, strict,
                        val_fraction, test_fraction, seed, progress, shard_size, options,
                        settings, start, beam, hide_paths)


def _prepare(pool, adapter, name, data_dir, out, size, windows, workers, strict, val_fraction,
             test_fraction, seed, progress, shard_size, options, settings, start, beam=None,
             hide_paths=False):
    """prepare() once the arguments are checked and the workers are starting."""
    from pipelines.manifest import quarantined, validate_manifest
    from pipelines.preprocessing import Preprocessing
    from pipelines.splits import assert_patient_disjoint, split_manifest
    from pipelines.transforms import format_windows

    # Read, validate, split. This is redone on resume; the stored salt keeps the pseudonyms
    # and the seed keeps the split and the shard plan the same. Labels, task and channels
    # come from the manifest where the adapter learns them from the data (folder, csv, ...).
    manifest = adapter.read_manifest(data_dir, **(options or {}))
    labels = adapter.manifest_labels(manifest)
    task = adapter.manifest_task(manifest)
    channels = int(adapter.manifest_channels(manifest, windows))
    is_ct = adapter.manifest_ct(manifest)
    left_out = [[WITHHELD if hide_paths else str(q.get("path", "")), str(q.get("reason", ""))]
                for q in quarantined(manifest)]
    if strict and left_out:
        raise PrepareError(
            f"Could not read {left_out[0][0]} ({left_out[0][1]}); fix or remove the file, or run "
            "without --strict to quarantine it and go on."
        )
    if left_out and len(manifest) == 0:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / QUARANTINE_FILE, "w", newline="") as handle:
            csv.writer(handle).writerows([["path", "reason"], *left_out])
        raise PrepareError(
            f"All {len(left_out)} files were quarantined, see {out / QUARANTINE_FILE}; fix the "
            "files (or --data-dir) and run again."
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
        atomic_write_text(state_path, json.dumps(state, indent=2))

    original = {str(r["id"]): r for r in manifest.to_dict("records")}
    if hide_paths:  # path-derived ids -> row keys before anything is written
        keys = row_keys(original)
        manifest = manifest.assign(id=manifest["id"].astype(str).map(keys))
        original = {keys[k]: row for k, row in original.items()}
    plan = _plan(manifest, labels, state["salt"], seed, size[0] * size[1] * channels, shard_size)

    shards = list(dict.fromkeys(plan["shard"]))
    done = {s for s in shards if (out / s).is_file() and (progress_dir / f"{s}.json").is_file()}
    todo = plan[~plan["shard"].isin(done)].reset_index(drop=True)
    rows = todo.to_dict("records")
    payloads = [original[row["id"]] for row in rows]

    tasks = [
        (i, payloads[i], (channels, [row[k] for k in labels], row["id"], row["patient_id"]))
        for i, row in enumerate(rows)
    ]
    try:
        if beam is not None:
            from pipelines.cache import beam as beam_module

            first_result, last_result, steady_images = beam_module.write_shards(
                list(zip((row["shard"] for row in rows), tasks)), out=out,
                progress_dir=progress_dir, strict=strict, initargs=pool.initargs, workers=workers,
                options=beam["options"], progress=progress, hide_paths=hide_paths)
        else:
            bar = _progress_bar(len(todo), progress, skipped=len(done), shards=len(shards))
            first_result, last_result, steady_images = _write_shards(
                pool, tasks, rows, payloads, out, progress_dir, strict, bar, hide_paths)
    except PrepareError:  # a --strict stop: the salt must not outlive the run
        _discard(out, progress_dir, shards)
        raise

    facts = {
        "dataset": name,
        "labels": list(labels),
        "task": task,
        "image_size": [size[0], size[1]],
        "channels": channels,
        "windows": format_windows(windows) if is_ct else None,
        "ids": "row keys" if hide_paths else "adapter ids",
    }
    spec = Preprocessing(kind="ct" if is_ct else "image", size=size, channels=channels,
                         windows=facts["windows"])
    facts["preprocessing"] = spec.to_dict()
    spec.save(out)
    run_stats = {
        "workers": workers,
        "runner": "beam" if beam is not None else "pool",
        "seconds_last_run": round(time.perf_counter() - start, 3),
        "images_last_run": len(todo),
    }
    if steady_images and first_result is not None and last_result > first_result:
        # decode + write rate once the workers are up (reading the manifest, splitting and
        # starting the processes excluded): the throughput a large dataset sees
        run_stats["images_per_s_steady"] = round(steady_images / (last_result - first_result), 2)
    info = _finish_cache(out, plan, shards, progress_dir, facts, settings, run_stats, left_out)
    if progress:
        _print_summary(out, info)
    return out


PIECE_SUFFIX = ".part"


def _pieces(rows, out, piece_rows):
    """Consecutive rows of one shard, at most ``piece_rows`` of them: ``[(shard, first row
    index, row count, piece path), ...]`` in plan order."""
    pieces = []
    first = 0
    while first < len(rows):
        shard = rows[first]["shard"]
        stop = first + 1
        while stop < len(rows) and stop - first < piece_rows and rows[stop]["shard"] == shard:
            stop += 1
        pieces.append((shard, first, stop - first, out / f".{shard}.{len(pieces):06d}{PIECE_SUFFIX}"))
        first = stop
    return pieces


def _remove_pieces(out: Path) -> None:
    for path in out.glob(f".*{PIECE_SUFFIX}"):
        path.unlink(missing_ok=True)


def _write_shards(pool, tasks, rows, payloads, out, progress_dir, strict, bar, hide_paths=False):
    """The workers' piece files -> shard files, in plan order. Returns ``(t0, t1, images)``
    for the steady rate: ``t0`` when each worker has delivered a piece (the first ``workers``
    pieces, which include the start-up), ``t1`` at the last piece, ``images`` those of the
    pieces after ``t0``."""
    pieces = _pieces(rows, out, pool.piece_rows(len(rows)))
    last_piece = {shard: k for k, (shard, *_rest) in enumerate(pieces)}
    _remove_pieces(out)  # a killed run's leftovers
    quarantined = 0
    handle = None
    current = tmp = None
    written: list[str] = []
    bad: list[list[str]] = []
    results = pool.results((path, tasks[first:first + count])
                           for _, first, count, path in pieces)
    first_result = last_result = None
    steady_images = 0
    warm_up = max(1, pool.workers)
    try:
        for k, ((shard, first, count, path), (_, outcomes)) in enumerate(zip(pieces, results)):
            last_result = time.perf_counter()
            if k + 1 == warm_up:  # every worker has delivered a piece: the steady window opens
                first_result = last_result
            elif k + 1 > warm_up:
                steady_images += count
            if shard != current:
                current, written, bad = shard, [], []
                tmp = out / f".{current}.tmp"
                handle = open(tmp, "wb")
            for position, error in zip(range(first, first + count), outcomes):
                row = rows[position]
                if error is not None:
                    where = row["id"] if hide_paths else str(payloads[position].get("path", ""))
                    if strict:
                        raise PrepareError(strict_message(where, error))
                    bad.append([where, error])
                    quarantined += 1
                    if bar is not None:
                        bar.set_postfix(quarantined=quarantined)
                else:
                    written.append(row["id"])
            with open(path, "rb") as piece:
                shutil.copyfileobj(piece, handle, 1 << 20)
            os.unlink(path)
            if bar is not None:
                bar.update(count)
            if last_piece[shard] == k:  # the shard is complete: finish it now
                _finish_shard(handle, tmp, out, progress_dir, current, written, bad)
                handle = None
    finally:
        results.close()
        pool.close()  # stops the workers at once when strict mode raised
        if handle is not None:
            handle.close()
            tmp.unlink(missing_ok=True)
        _remove_pieces(out)
        if bar is not None:
            bar.close()
    return first_result, last_result, steady_images


def strict_message(path, error) -> str:
    return (f"Could not decode {path} ({error}); fix or remove the file, or run without "
            "--strict to quarantine it and go on.")


def _progress_bar(total, progress, *, skipped, shards):
    if not progress:
        return None
    from tqdm.auto import tqdm

    desc = "prepare" if not skipped else f"prepare (resuming, {skipped}/{shards} shards done)"
    return tqdm(total=total, unit="img", desc=desc, file=sys.stderr, dynamic_ncols=True)


def _discard(out: Path, progress_dir: Path, shards) -> None:
    """Remove a stopped run's state (the salt) and the shards it finished: pseudonyms made
    with a salt that is gone could not be matched by a resumed run anyway."""
    for shard in shards:
        (out / shard).unlink(missing_ok=True)
    shutil.rmtree(progress_dir, ignore_errors=True)


def _finish_shard(handle, tmp, out, progress_dir, shard, written, bad) -> None:
    """Close, then mark done: the sidecar (ids, quarantine) first, the shard rename last."""
    handle.close()
    marker = {"shard": shard, "ids": written, "quarantine": bad}
    atomic_write_text(progress_dir / f"{shard}.json", json.dumps(marker))
    replace(tmp, out / shard)


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
    with open(out / QUARANTINE_FILE, "w", newline="") as handle:
        csv_writer = csv.writer(handle)
        csv_writer.writerow(["path", "reason"])
        csv_writer.writerows(quarantine)
    if final.empty:  # no cache to train on: say why, not "0 examples" later
        _discard(out, progress_dir, shards)
        raise PrepareError(
            f"All {len(quarantine)} files were quarantined, see {out / QUARANTINE_FILE}; fix "
            "the files (or --data-dir) and run again."
        )
    final.to_csv(out / MANIFEST_FILE, index=False)
    splits = {s: int((final["split"] == s).sum()) for s in split_names(plan["split"].unique())}
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
            k: v.format(num_labels=len(labels)) for k, v in RECORD_FEATURES.items()
        },
        "settings": settings,
        "prepare": run_stats,
    }
    atomic_write_text(out / INFO_FILE, json.dumps(info, indent=2))
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
