"""A multi-dataset pretraining corpus (CPMID): ``python -m pipelines.corpus``.

::

    python -m pipelines.corpus --spec configs/corpus-medical.yaml --out corpora/medical-64 \\
        --image-size 64 [--exclude breastmnist]

The spec (YAML) lists the sources; each is an existing dataset adapter with its data::

    channels: 1                  # optional; required when the sources disagree (see below)
    val_fraction: 0.05           # optional; for sources without an official val split
    sources:
      - name: mednist            # the namespace of its labels: mednist/Hand
        dataset: mednist         # an adapter name (pipelines.datasets.list_adapters())
        data_dir: ../shared/data/mednist/MedNIST.tar.gz
        # archive: x.tar.gz      # data_dir is then a folder inside it (pipelines.archive)
        # max_images: 12000      # a seeded sample of at most this many training images
        options: {}              # the adapter's read_manifest keywords
        channels: 1              # folder/csv pictures: 1 (grey), 3 (colour) or auto
        modality: {Hand: X-ray, CXR: X-ray, ChestCT: CT}   # or one string for the source
        licence: CC BY-SA 4.0
        citation: B. J. Erickson, MedNIST (Mayo Clinic)

What the builder does (all refusals come before any pixel is decoded; only a hidden temp folder
is written, renamed to ``--out`` when done):

1. Read every source's manifest; drop the rows of its official ``test`` split (they never
   enter the corpus), and keep its official ``val`` split as the corpus's val rows (a source
   without one gives ``val_fraction`` of its patients or exams, or images, seeded).
2. Harmonise: every image is resized to ``--image-size`` (the cache's bilinear, antialiased
   resize) and brought to ``channels`` channels by :func:`pipelines.preprocessing.to_channels`:
   RGB -> grey is the BT.601 luma rule, grey -> 3 channels repeats the grey. When the sources
   disagree on channels the spec must say ``channels:``.
3. Deduplicate by the sha256 of the harmonised uint8 pixels: the first copy (spec order) is
   kept, later ones dropped and counted, and so is any image equal to a source's test image.
4. Labels stay namespaced (``mednist/Hand``) in one union label space. The objective
   (:func:`zoo.training.losses.make_loss` with ``groups``) is a softmax over the union masked to
   the image's own source, so a source never teaches that another source's classes are absent.

Output (a prepared cache for ``pipelines.records.make_dataset``; ``balanced="source"``)::

    dataset.json        the cache index, plus "sources" (label indices per source) and "objective"
    manifest.csv        id, patient_id, ..., labels..., split, shard, source, source_id, sha256
    corpus_card.json    images per source / class / modality, licences, citations, duplicates
    corpus_card.md      the same for people; spec_sha256 ties it to the spec
    <split>-NNNNN-of-NNNNN.tfrecord
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import cells
from pipelines.archive import extract_once
from pipelines.cache.decode import Row, to_cache_pixels
from pipelines.corpus_card import CARD_JSON, CARD_MD, SEP, card_markdown, corpus_sources, make_card
from pipelines.datasets import get_adapter
from pipelines.datasets.base import option_channels
from pipelines.fs import replace
from pipelines.manifest import DataError
from pipelines.preprocessing import to_channels
from pipelines.yamlfile import YamlFileError, read_yaml

__all__ = ["CorpusError", "build_corpus", "load_spec", "corpus_sources", "main"]



class CorpusError(ValueError):
    """A spec or a corpus the user gave is wrong: one sentence naming it and the fix."""


# -------------------------------------------------------------------------------------- spec
def load_spec(path) -> dict:
    """Read and check the YAML spec (cheap: no data is read); returns the parsed mapping."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"The corpus spec {path} does not exist; pass --spec pointing at a YAML file.")
    try:
        spec = read_yaml(path, "corpus spec") or {}
    except YamlFileError as err:
        raise CorpusError(str(err)) from None
    sources = spec.get("sources") if isinstance(spec, dict) else None
    if not isinstance(sources, list) or not sources:
        raise CorpusError(f"The corpus spec {path} needs a non-empty 'sources:' list of mappings.")
    seen = set()
    for i, source in enumerate(sources):
        if not isinstance(source, dict):
            raise CorpusError(f"Source {i + 1} of {path} is not a mapping with name, dataset and data_dir.")
        missing = [k for k in ("name", "dataset", "data_dir") if not source.get(k)]
        if missing:
            raise CorpusError(f"Source {i + 1} of {path} lacks {', '.join(missing)}; every source needs name, dataset and data_dir.")
        name = str(source["name"])
        if SEP in name or name != name.strip() or not name:
            raise CorpusError(f"Source name {name!r} in {path} may not contain '{SEP}' or spaces at the ends.")
        if name in seen:
            raise CorpusError(f"Source name {name!r} appears twice in {path}; give each source its own name.")
        seen.add(name)
        try:
            adapter = get_adapter(source["dataset"])
        except ValueError as err:
            raise CorpusError(f"Source {name!r} in {path}: {err}") from None
        if source.get("options") is not None and not isinstance(source["options"], dict):
            raise CorpusError(f"The options of source {name!r} in {path} must be a mapping of keyword: value.")
        try:  # channels: folded into the options; an option the adapter lacks is refused
            source["options"] = adapter.check_options(option_channels(source.get("options"), source.get("channels")))
        except ValueError as err:
            raise CorpusError(f"Source {name!r} in {path}: {err}") from None
        key = "archive" if source.get("archive") else "data_dir"  # a tarball: extracted at build
        found = _resolve_dir(source[key], path)
        if found is None:
            raise CorpusError(f"The {key} {source[key]!r} of source {name!r} in {path} does not exist; fix the path or remove the source.")
        source["_archive" if key == "archive" else "_data_dir"] = found
    channels = spec.get("channels")
    if channels is not None and channels not in (1, 3):
        raise CorpusError(f"channels: {channels!r} in {path} must be 1 (grey, RGB by BT.601 luma) or 3 (grey repeated).")
    spec["_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    spec["_path"] = str(path)
    return spec


def _resolve_dir(value, spec_path: Path) -> str | None:
    """A data_dir as given (relative to the working directory), else relative to the spec."""
    for candidate in (Path(value), spec_path.parent / value):
        if candidate.exists():
            return os.fspath(candidate)
    return None


def _modality(source: dict, label: str) -> str:
    value = source.get("modality")
    if isinstance(value, dict):
        return str(value.get(label, "unspecified"))
    return str(value) if value else "unspecified"


# ------------------------------------------------------------------------------------- build
def _read_sources(spec, exclude, val_fraction, seed):
    """Every kept source's manifest, channels and label names (before any pixel is decoded)."""
    names = [s["name"] for s in spec["sources"]]
    unknown = [e for e in exclude if e not in names]
    if unknown:
        raise CorpusError(f"--exclude {unknown[0]!r} is not a source of the spec; sources are {', '.join(names)}.")
    read = []
    for source in spec["sources"]:
        adapter = get_adapter(source["dataset"])
        try:
            if source.get("_archive"):
                source["_data_dir"] = os.fspath(extract_once(source["_archive"]) / str(source["data_dir"]))
            df = adapter.read_manifest(source["_data_dir"], **(source.get("options") or {}))
        except (DataError, TypeError, ValueError) as err:
            raise CorpusError(f"Source {source['name']!r} could not be read: {err}") from None
        labels = adapter.manifest_labels(df)
        df = df.reset_index(drop=True)
        split = df["split"].astype(str) if "split" in df.columns else None
        if split is None or not (split == "val").any():
            rng = np.random.default_rng([seed, len(read), len(df)])
            val = _by_group(df, rng.random(len(df))) < val_fraction
            base_split = split if split is not None else np.array(["train"] * len(df), dtype=object)
            split = np.where((np.asarray(base_split) != "test") & val, "val", np.asarray(base_split))
            split = np.where(np.isin(split, ["val", "test"]), split, "train")
        else:
            split = np.where(np.isin(split, ["val", "test"]), split, "train")
        df["split"] = split
        df = _capped(df, source, seed)
        read.append({
            "spec": source,
            "adapter": adapter,
            "df": df,
            "labels": tuple(labels),
            "channels": int(adapter.manifest_channels(df)),
            "excluded": source["name"] in exclude,
        })
    return read


def _by_group(df, draws: np.ndarray) -> np.ndarray:
    """Each row's draw replaced by its patient's first draw, so a patient (exam) is in one split."""
    if "patient_id" not in df.columns:
        return draws
    first = df.groupby(df["patient_id"].astype(str), sort=False).cumcount() == 0
    lead = dict(zip(df["patient_id"].astype(str)[first], draws[first.to_numpy()]))
    return df["patient_id"].astype(str).map(lead).to_numpy(dtype=float)


def _capped(df, source, seed):
    """At most ``max_images`` training rows of a source (a seeded sample); val and test kept."""
    cap = source.get("max_images")
    train = np.flatnonzero(df["split"].to_numpy() == "train")
    if not cap or len(train) <= int(cap):
        return df
    drop = np.random.default_rng([seed, 7, len(df)]).permutation(train)[int(cap):]
    return df.drop(index=drop).reset_index(drop=True)


def _channels(spec, read) -> int:
    kept = [r for r in read if not r["excluded"]]
    if not kept:
        raise CorpusError("Every source is excluded; leave at least one source in the corpus.")
    if spec.get("channels") is not None:
        return int(spec["channels"])
    found = {r["channels"] for r in kept}
    if len(found) > 1:
        a = next(r for r in kept if r["channels"] == min(found))
        b = next(r for r in kept if r["channels"] == max(found))
        raise CorpusError(
            f"Sources {a['spec']['name']!r} ({a['channels']} channel) and {b['spec']['name']!r} "
            f"({b['channels']} channels) disagree on channels and the spec gives no rule; add "
            "'channels: 1' (RGB to grey by BT.601 luma) or 'channels: 3' (grey repeated) to it."
        )
    return found.pop()


def _pixels(adapter, row, data_dir, size, channels) -> np.ndarray:
    image = adapter.load(Row(row), data_dir, None)
    return to_cache_pixels(to_channels(np.asarray(image, np.float32), channels), size)


def _digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes() + str(pixels.shape).encode()).hexdigest()


@dataclass
class _Build:
    """One build's facts, as its steps read them: the harmonised shape, the union label space,
    the hidden folder it writes and the pseudonym salt."""

    out: Path
    tmp: Path
    size: tuple
    channels: int
    labels: list
    groups: list
    settings: dict
    shard_size: int
    salt: str
    test_hashes: set


def build_corpus(spec_path, out, *, image_size=64, exclude=(), seed: int = 0,
                 shard_size: int = 8192, progress: bool = True) -> Path:
    """Build the corpus that ``spec_path`` describes into ``out``; returns ``out``.

    Refuses (:class:`CorpusError`, before decoding anything) a missing source, an unknown
    adapter, sources that disagree on channels without a ``channels:`` rule, an unknown
    ``exclude`` name, and an existing ``out`` built from another spec or settings. The corpus is
    written into a hidden sibling folder and renamed to ``out`` at the end (atomic: an
    interrupted build leaves no ``out``; the next run starts over).
    """
    from pipelines.cache.format import INFO_FILE, parse_image_size  # imports TensorFlow

    start = time.perf_counter()
    spec = load_spec(spec_path)
    size = parse_image_size(image_size)
    exclude = sorted(set(exclude or ()))
    val_fraction = float(spec.get("val_fraction", 0.05))
    settings = {"spec_sha256": spec["_sha256"], "image_size": list(size), "exclude": exclude,
                "seed": seed, "val_fraction": val_fraction}
    out = Path(out)
    if (out / INFO_FILE).is_file():
        stored = json.loads((out / CARD_JSON).read_text()).get("settings", {}) if (out / CARD_JSON).is_file() else {}
        if stored != settings:
            raise CorpusError(f"The corpus {out} was built from another spec or settings; pass a new --out or delete it.")
        if progress:
            print(f"{out} is already built; nothing to do.", file=sys.stderr)
        return out
    if out.exists():
        raise CorpusError(f"{out} exists and is not a finished corpus; pass a new --out or delete it.")

    read = _read_sources(spec, exclude, val_fraction, seed)
    channels = _channels(spec, read)
    kept = [r for r in read if not r["excluded"]]
    build = _Build(
        out=out, tmp=out.parent / f".{out.name}.partial-{os.getpid()}", size=size,
        channels=channels,
        labels=[f"{r['spec']['name']}{SEP}{label}" for r in kept for label in r["labels"]],
        groups=[i for i, r in enumerate(kept) for _ in r["labels"]], settings=settings,
        shard_size=shard_size, salt=os.urandom(16).hex(),
        test_hashes=_test_hashes(read, size, channels),
    )
    shutil.rmtree(build.tmp, ignore_errors=True)
    build.tmp.mkdir(parents=True)
    try:
        rows_out, stats = _write_images(build, kept, progress=progress)
        manifest = _write_index(build, spec, read, kept, rows_out, stats)
        out.parent.mkdir(parents=True, exist_ok=True)
        replace(build.tmp, out)
    except BaseException:
        shutil.rmtree(build.tmp, ignore_errors=True)
        raise
    if progress:
        dropped = sum(v for s in stats.values() for k, v in s.items() if k.startswith("dropped"))
        print(f"built {out}: {len(manifest)} images from {len(kept)} sources, {len(build.labels)} labels, "
              f"{dropped} duplicates dropped, in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return out


def _test_hashes(read, size, channels) -> set:
    """The test images of every source (excluded ones too): nothing equal to them enters the
    corpus."""
    test_hashes = set()
    for r in read:
        test_rows = r["df"][r["df"]["split"] == "test"]
        for row in test_rows.to_dict("records"):
            try:
                test_hashes.add(_digest(_pixels(r["adapter"], row, r["spec"]["_data_dir"], size, channels)))
            except (DataError, OSError, ValueError):
                continue
    return test_hashes


def _keep(build: _Build, kept, bar) -> tuple[list, dict]:
    """Pass 1, in spec order (so the first copy of a duplicate is the one kept): decode, hash and
    decide every non-test image. Returns ``[(source index, row, label index)]`` and the counts."""
    seen: dict[str, str] = {}
    keep, offset = [], 0
    stats = {r["spec"]["name"]: Counter() for r in kept}
    for i, r in enumerate(kept):
        name, df = r["spec"]["name"], r["df"]
        st = stats[name]
        st["test_rows_left_out"] = int((df["split"] == "test").sum())
        for row in df[df["split"] != "test"].to_dict("records"):
            if bar is not None:
                bar.update(1)
            try:
                digest = _digest(_pixels(r["adapter"], row, r["spec"]["_data_dir"], build.size, build.channels))
            except (DataError, OSError, ValueError):
                st["unreadable"] += 1
                continue
            if digest in build.test_hashes:
                st["dropped_equal_to_a_test_image"] += 1
                continue
            if digest in seen:
                st["dropped_duplicate_within_source" if seen[digest] == name else "dropped_duplicate_across_sources"] += 1
                continue
            seen[digest] = name
            k = int(np.argmax([row[lab] for lab in r["labels"]]))
            keep.append((i, row, offset + k, digest))
            st["images"] += 1
            st[f"class:{r['labels'][k]}"] += 1
            st[f"modality:{_modality(r['spec'], r['labels'][k])}"] += 1
            st[f"split:{row['split']}"] += 1
        offset += len(r["labels"])
    return keep, stats


def _write_images(build: _Build, kept, *, progress: bool):
    """Decode, harmonise, deduplicate (:func:`_keep`) and write every kept source's non-test
    images to the temporary shards; ``(rows, stats)``: the manifest rows and per-source counts.

    Pass 2 writes in a seeded random order across sources and classes, as prepare's writer
    does: the reader's shuffle buffer is local, and shards in spec and class order would feed
    training one class after another."""
    from pipelines.cache.format import (  # TensorFlow
        pseudonym,
        rename_shards,
        serialize_example,
        shard_writer,
    )

    shape = (build.size[0], build.size[1], build.channels)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = 2 * sum(int((r["df"]["split"] != "test").sum()) for r in kept)
        bar = tqdm(total=total, unit="img", desc="corpus", file=sys.stderr, dynamic_ncols=True)
    writers: dict[str, list] = {}
    rows_out = []
    try:
        keep, stats = _keep(build, kept, bar)
        order = np.random.default_rng([int(build.settings.get("seed", 0)), 11, len(keep)]).permutation(len(keep))
        for j in order:
            i, row, index, digest = keep[j]
            r = kept[i]
            name = r["spec"]["name"]
            if bar is not None:
                bar.update(1)
            pixels = _pixels(r["adapter"], row, r["spec"]["_data_dir"], build.size, build.channels)
            label = np.zeros(len(build.labels), np.float32)
            label[index] = 1.0
            split = str(row["split"])
            ident = f"{name}{SEP}{row['id']}"
            patient = pseudonym(build.salt, f"{name}{SEP}{row.get('patient_id', row['id'])}")
            writer = shard_writer(writers, build.tmp, split, build.shard_size)
            writer[0].write(serialize_example(pixels.tobytes(), shape, label, ident, patient))
            writer[1] += 1
            rows_out.append({"id": ident, "patient_id": patient, "study_id": patient,
                             "series_id": patient, "slice": -1, "label": index,
                             "split": split, "shard": writer[2], "source": name,
                             "source_id": str(row["id"]), "sha256": digest[:16]})
    finally:
        for shards in writers.values():
            for w in shards:
                w[0].close()
        if bar is not None:
            bar.close()
    shards = rename_shards(build.tmp, writers)
    for row in rows_out:
        row["shard"] = shards[row["shard"]]
    return rows_out, stats


def _write_index(build: _Build, spec, read, kept, rows_out, stats) -> pd.DataFrame:
    """manifest.csv, quarantine.csv, dataset.json and the corpus card in the temporary folder;
    returns the manifest."""
    from pipelines.cache.format import (  # imports TensorFlow
        FORMAT_VERSION,
        INFO_FILE,
        MANIFEST_FILE,
        RECORD_FEATURES,
    )

    tmp, labels, groups = build.tmp, build.labels, build.groups
    table = pd.DataFrame(rows_out)
    onehot = np.zeros((len(table), len(labels)), dtype="int64")
    onehot[np.arange(len(table)), table["label"].to_numpy()] = 1
    columns = {"id": table["id"], "patient_id": table["patient_id"], "study_id": table["study_id"],
               "series_id": table["series_id"], "slice": table["slice"]}
    manifest = pd.DataFrame(columns)
    manifest = pd.concat([manifest, pd.DataFrame(onehot, columns=labels)], axis=1)
    for column in ("split", "shard", "source", "source_id", "sha256"):
        manifest[column] = table[column]
    cells.write_frame(manifest, tmp / MANIFEST_FILE)
    (tmp / "quarantine.csv").write_text("path,reason\n")
    shards = sorted(set(table["shard"]))
    splits = {s: int((manifest["split"] == s).sum()) for s in ("train", "val") if (manifest["split"] == s).any()}
    info = {
        "format_version": FORMAT_VERSION,
        "dataset": f"corpus:{build.out.name}",
        "labels": labels,
        "task": "multi-class",
        "image_size": list(build.size),
        "channels": build.channels,
        "windows": None,
        "splits": splits,
        "shards": {s: sorted(v for v in shards if v.startswith(f"{s}-")) for s in splits},
        "quarantined": 0,
        "record_features": {k: v.format(num_labels=len(labels)) for k, v in RECORD_FEATURES.items()},
        "sources": {r["spec"]["name"]: [i for i, g in enumerate(groups) if g == j] for j, r in enumerate(kept)},
        "label_groups": groups,
        "objective": "source-masked softmax over the union of namespaced labels",
        "settings": build.settings,
    }
    card = make_card(spec, read, kept, stats, labels, build.channels, build.size, build.settings)
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
    card["size_on_disk_bytes"] = sum(f.stat().st_size for f in tmp.iterdir() if f.is_file())
    (tmp / CARD_JSON).write_text(json.dumps(card, indent=2))
    (tmp / CARD_MD).write_text(card_markdown(card))
    return manifest


# --------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.corpus",
                                description="Build a multi-dataset pretraining corpus (a prepared cache).")
    p.add_argument("--spec", required=True, help="YAML spec: sources with name, dataset, data_dir, options, licence, citation")
    p.add_argument("--out", required=True, help="corpus folder (written atomically)")
    p.add_argument("--image-size", type=int, default=64, help="square size every image is resized to (default 64)")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME",
                   help="leave the source NAME out (leave-one-dataset-out; repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seeds the val rows of sources without an official val split")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        build_corpus(args.spec, args.out, image_size=args.image_size, exclude=args.exclude,
                     seed=args.seed, progress=not args.quiet)
    except (CorpusError, DataError, FileNotFoundError, ValueError) as err:
        if os.environ.get("MEDZOO_DEBUG"):
            raise
        print(f"pipelines.corpus: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
