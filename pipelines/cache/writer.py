"""``prepare``: a dataset adapter's manifest -> a sharded TFRecord cache (see ``format``).

The parent process starts the decode workers first (:class:`pipelines.cache.pool.DecodePool`:
processes importing the decoders while the parent reads the manifest, so their start-up
overlaps it), reads and splits the manifest, plans the shards (pseudonymised ids, a seeded
order) and makes one :class:`~pipelines.cache.jobs.PrepareJob` per row still to decode. A
runner decodes the jobs and writes the shards: the process pool
(:func:`pipelines.cache.pool.write_shards`: pieces of consecutive rows decoded by
:mod:`pipelines.cache.decode`, in-process with ``workers=1``, appended to the shards in plan
order) or Apache Beam (:func:`pipelines.cache.beam.write_shards`). Each shard is written under
a hidden temp name and renamed when complete, with a marker in ``.progress/``; a re-run with
the same settings skips the finished shards. ``dataset.json`` is written last.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import cells
from pipelines.cache import beam, decode, pool
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
from pipelines.cache.jobs import PrepareError, PrepareJob
from pipelines.datasets import Adapter, get_adapter
from pipelines.fs import atomic_write_text, folder_lock
from pipelines.manifest import data_dir_id, quarantined, shown_data_dir, validate_manifest
from pipelines.preprocessing import Preprocessing
from pipelines.splits import assert_patient_disjoint, split_manifest
from pipelines.transforms import format_windows, parse_windows

__all__ = ["PrepareError", "prepare"]


# quarantine.csv's path for a file the adapter left out, when paths are withheld
WITHHELD = "(withheld: prepare with --keep-path-ids to list paths)"


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


def _check_same(settings: dict, stored: dict, out: Path) -> None:
    if stored.get("data_dir") and not settings.get("keep_path_ids"):  # older caches: the path
        stored = {**stored, "data_dir": data_dir_id(stored["data_dir"])}
    changed = [k for k in settings if k in stored and stored[k] != settings[k]]
    if changed:
        detail = ", ".join(f"{k} {stored[k]!r} -> {settings[k]!r}" for k in changed)
        raise PrepareError(
            f"The cache {out} was prepared with other settings ({detail}); "
            "use a new --out folder or delete this one."
        )


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
    options = adapter.check_options(options)  # an unknown option: one sentence listing them
    request = PrepareRequest(
        adapter=adapter, name=dataset if isinstance(dataset, str) else adapter.name,
        data_dir=data_dir, out=out, size=size, windows=parse_windows(windows), workers=workers,
        strict=strict, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
        progress=progress, shard_size=shard_size, options=options, runner=runner,
        beam_options=beam_options, keep_path_ids=keep_path_ids, start=start,
    )
    settings = request.settings()

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
    if runner == "beam":
        beam.check_installed()
    workers_here = workers if runner == "pool" else 1  # Beam starts its own
    with (folder_lock(out, job="prepare"),  # a second prepare into `out` stops at once
          pool.DecodePool(workers_here, ref, data_dir, request.windows, size) as decode_pool):
        return _prepare(decode_pool, request, settings)


@dataclass(frozen=True)
class PrepareRequest:
    """``prepare()``'s arguments once checked, as the steps after the checks read them."""

    adapter: Adapter
    name: str
    data_dir: Path
    out: Path
    size: tuple
    windows: object
    workers: int
    strict: bool
    val_fraction: float
    test_fraction: float
    seed: int
    progress: bool
    shard_size: int | None
    options: dict | None
    runner: str
    beam_options: object
    keep_path_ids: bool
    start: float

    @property
    def hide_paths(self) -> bool:
        """Path-derived ids (``Adapter.path_ids``) are replaced by row keys unless kept."""
        return bool(getattr(self.adapter, "path_ids", False)) and not self.keep_path_ids

    def settings(self) -> dict:
        """The arguments that define a cache; a re-run with other values is refused."""
        settings = _jsonable(
            {
                "dataset": self.name,
                "data_dir": shown_data_dir(Path(self.data_dir).resolve(), self.keep_path_ids),
                "image_size": list(self.size),
                "windows": self.windows,
                "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction,
                "seed": self.seed,
                "shard_size": self.shard_size,
                "options": self.options or {},
            }
        )
        settings["keep_path_ids"] = bool(self.keep_path_ids)
        return settings


def _prepare(decode_pool: pool.DecodePool, request: PrepareRequest, settings: dict) -> Path:
    """prepare() once the arguments are checked and the workers are starting."""
    out = request.out
    manifest, facts, left_out = _read_manifest(request)
    progress_dir = out / PROGRESS_DIR
    state = _load_state(progress_dir, settings, out)
    plan, shards, done, jobs = _make_jobs(request, manifest, facts, state["salt"])
    try:
        times = _run_jobs(request, decode_pool, jobs, progress_dir=progress_dir,
                          skipped=len(done), shards=len(shards))
    except PrepareError:  # a --strict stop: the salt must not outlive the run
        _discard(out, progress_dir, shards)
        raise

    spec = Preprocessing(kind="ct" if facts["windows"] is not None else "image",
                         size=request.size, channels=facts["channels"], windows=facts["windows"])
    facts["preprocessing"] = spec.to_dict()
    spec.save(out)
    run_stats = _run_stats(request, len(jobs), *times)
    info = _finish_cache(out, plan, shards, progress_dir, facts, settings, run_stats, left_out)
    if request.progress:
        _print_summary(out, info)
    return out


def _read_manifest(request: PrepareRequest):
    """Read, validate, split: ``(manifest, facts, left_out)``, where ``facts`` are the cache's
    facts for dataset.json and ``left_out`` the rows the adapter quarantined.

    This is redone on resume; the stored salt keeps the pseudonyms and the seed keeps the split
    and the shard plan the same. Labels, task and channels come from the manifest where the
    adapter learns them from the data (folder, csv, ...)."""
    adapter, out, hide_paths = request.adapter, request.out, request.hide_paths
    manifest = adapter.read_manifest(request.data_dir, **(request.options or {}))
    labels = adapter.manifest_labels(manifest)
    is_ct = adapter.manifest_ct(manifest)
    facts = {
        "dataset": request.name,
        "labels": list(labels),
        "task": adapter.manifest_task(manifest),
        "image_size": [request.size[0], request.size[1]],
        "channels": int(adapter.manifest_channels(manifest, request.windows)),
        "windows": format_windows(request.windows) if is_ct else None,
        "ids": "row keys" if hide_paths else "adapter ids",
    }
    left_out = [[WITHHELD if hide_paths else str(q.get("path", "")), str(q.get("reason", ""))]
                for q in quarantined(manifest)]
    if request.strict and left_out:
        raise PrepareError(
            f"Could not read {left_out[0][0]} ({left_out[0][1]}); fix or remove the file, or run "
            "without --strict to quarantine it and go on."
        )
    if left_out and len(manifest) == 0:
        out.mkdir(parents=True, exist_ok=True)
        cells.write_csv(out / QUARANTINE_FILE, left_out, ["path", "reason"])
        raise PrepareError(
            f"All {len(left_out)} files were quarantined, see {out / QUARANTINE_FILE}; fix the "
            "files (or --data-dir) and run again."
        )
    manifest = validate_manifest(manifest, labels)
    manifest = split_manifest(manifest, labels, val_fraction=request.val_fraction,
                              test_fraction=request.test_fraction, seed=request.seed)
    assert_patient_disjoint(manifest, name_patients=False)  # raw header ids stay out of logs
    return manifest, facts, left_out


def _load_state(progress_dir: Path, settings: dict, out: Path) -> dict:
    """The run's state in ``.progress/``: its settings and the pseudonym salt, made on the
    first run and checked against ``settings`` on a resume."""
    progress_dir.mkdir(parents=True, exist_ok=True)
    state_path = progress_dir / "state.json"
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        _check_same(settings, state["settings"], out)
    else:
        state = {"settings": settings, "salt": secrets.token_hex(16)}
        atomic_write_text(state_path, json.dumps(state, indent=2))
    return state


def _make_jobs(request: PrepareRequest, manifest: pd.DataFrame, facts: dict, salt: str):
    """The shard plan and the decode jobs of the shards not yet finished: ``(plan, shards,
    done, jobs)``."""
    out, labels, size = request.out, facts["labels"], request.size
    original = {str(r["id"]): r for r in manifest.to_dict("records")}
    if request.hide_paths:  # path-derived ids -> row keys before anything is written
        keys = row_keys(original)
        manifest = manifest.assign(id=manifest["id"].astype(str).map(keys))
        original = {keys[k]: row for k, row in original.items()}
    plan = _plan(manifest, labels, salt, request.seed, size[0] * size[1] * facts["channels"],
                 request.shard_size)
    shards = list(dict.fromkeys(plan["shard"]))
    progress_dir = out / PROGRESS_DIR
    done = {s for s in shards if (out / s).is_file() and (progress_dir / f"{s}.json").is_file()}
    rows = plan[~plan["shard"].isin(done)].reset_index(drop=True).to_dict("records")
    jobs = [
        PrepareJob(position=i, row=original[row["id"]], shard=row["shard"],
                   channels=facts["channels"], label=[row[k] for k in labels],
                   example_id=row["id"], patient_id=row["patient_id"])
        for i, row in enumerate(rows)
    ]
    return plan, shards, done, jobs


def _run_jobs(request: PrepareRequest, decode_pool, jobs, *, progress_dir, skipped, shards):
    """Decode ``jobs`` and write their shards with the chosen runner; ``(t0, t1, images)``
    for the steady rate."""
    if request.runner == "beam":
        return beam.write_shards(
            jobs, out=request.out, progress_dir=progress_dir, strict=request.strict,
            initargs=decode_pool.initargs, workers=request.workers,
            options=request.beam_options, progress=request.progress,
            hide_paths=request.hide_paths)
    bar = _progress_bar(len(jobs), request.progress, skipped=skipped, shards=shards)
    return pool.write_shards(decode_pool, jobs, out=request.out, progress_dir=progress_dir,
                             strict=request.strict, bar=bar, hide_paths=request.hide_paths)


def _run_stats(request: PrepareRequest, images: int, first_result, last_result,
               steady_images) -> dict:
    """dataset.json's ``prepare`` entry: the runner, the time and the rates of this run."""
    run_stats = {
        "workers": request.workers,
        "runner": request.runner,
        "seconds_last_run": round(time.perf_counter() - request.start, 3),
        "images_last_run": images,
    }
    if steady_images and first_result is not None and last_result > first_result:
        # decode + write rate once the workers are up (reading the manifest, splitting and
        # starting the processes excluded): the throughput a large dataset sees
        run_stats["images_per_s_steady"] = round(steady_images / (last_result - first_result), 2)
    return run_stats


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
    cells.write_csv(out / QUARANTINE_FILE, quarantine, ["path", "reason"])
    if final.empty:  # no cache to train on: say why, not "0 examples" later
        _discard(out, progress_dir, shards)
        raise PrepareError(
            f"All {len(quarantine)} files were quarantined, see {out / QUARANTINE_FILE}; fix "
            "the files (or --data-dir) and run again."
        )
    cells.write_frame(final, out / MANIFEST_FILE)
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
