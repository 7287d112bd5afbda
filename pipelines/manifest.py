"""The manifest: the one table every dataset adapter returns, and the errors bad input raises.

A manifest is a :class:`pandas.DataFrame` with one row per 2-D example:

=============  =====================================================================
``id``         str, unique within the manifest
``path``       str, POSIX path relative to ``data_dir`` (never escaping it)
``slice``      int, index into a volume / multi-frame DICOM / ``.npz`` array; -1 for a
               single-image file
``patient_id`` str (grouping key for patient-disjoint splits)
``study_id``   str
``series_id``  str
<label>        one int 0/1 column per label, in label order
``split``      optional: train / val / test where the dataset ships an official split
``mask_path``  optional: lesion mask, relative path ("" where a row has none)
=============  =====================================================================

Adapters may add further informative columns (``position``: slice position along the
scanner axis in mm, for DICOM series); consumers ignore columns they do not know.

Facts that belong to the whole table travel in ``df.attrs`` (set by :func:`validate_manifest`):
``labels`` (tuple, the label columns in order), ``task``, ``channels`` where the adapter can
tell, and ``quarantine``: a list of ``{"path", "reason"}`` dicts for inputs the adapter had
to leave out (unreadable header, image listed but missing), so ``prepare`` can report them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from pipelines import formats

MANIFEST_COLUMNS = ("id", "path", "slice", "patient_id", "study_id", "series_id")
OPTIONAL_COLUMNS = ("split", "mask_path")
SPLITS = ("train", "val", "test")
TASKS = ("multi-label", "multi-class", "binary")


# How a withheld data root is recorded (dataset.json, config.yaml, the export): a digest of its
# absolute path, the same on every run from that folder (so a resume still matches), never the path.
PATH_ID_PREFIX = "sha256:"


def data_dir_id(data_dir) -> str:
    """``sha256:<16 hex>`` of the absolute data root: what every run, cache and export file
    records instead of the path (folder names often hold a patient's name or MRN), unless the
    user keeps paths (``--keep-path-ids``). An id is returned as it is."""
    if os.fspath(data_dir).startswith(PATH_ID_PREFIX):
        return os.fspath(data_dir)
    digest = hashlib.sha256(os.fspath(Path(data_dir).resolve()).encode()).hexdigest()
    return PATH_ID_PREFIX + digest[:16]


def shown_data_dir(data_dir, keep_path: bool) -> str:
    """The data root as files and logs may show it: the path with ``keep_path``, else its id."""
    return os.fspath(data_dir) if keep_path else data_dir_id(data_dir)


class DataError(ValueError):
    """Bad user data: one sentence naming the file (or folder) and the problem.

    ``path`` is the offending file as given (or ``None``), ``problem`` the bare reason, so
    ``prepare`` can write ``(path, problem)`` to its quarantine list.
    """

    def __init__(self, path, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem.rstrip(".")
        text = self.problem if path is None else f"{self.path}: {self.problem}"
        super().__init__(text + ".")


def show(value) -> str:
    """``repr`` of a value as a user wrote it (numpy scalars as plain Python numbers)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def require_dir(data_dir, what: str = "data directory") -> Path:
    """``data_dir`` as a Path, or DataError if it is missing or not a directory."""
    path = Path(data_dir)
    if not path.exists():
        raise DataError(path, f"{what} does not exist; check the --data-dir path")
    if not path.is_dir():
        raise DataError(path, f"{what} is a file, not a directory; pass the folder that holds it")
    return path


def require_file(path, what: str = "file") -> Path:
    path = Path(path)
    if not path.is_file():
        hint = "it is a directory" if path.is_dir() else "it does not exist"
        raise DataError(path, f"expected the {what} here but {hint}")
    return path


def safe_join(data_dir, relative) -> Path:
    """``data_dir / relative``, refusing absolute paths and paths that leave ``data_dir``.

    Symbolic links inside ``data_dir`` are resolved before the check, so a link pointing
    outside the data root is refused too.
    """
    rel = str(relative)
    root = Path(data_dir).resolve()
    if not rel or PurePosixPath(rel).is_absolute() or Path(rel).is_absolute():
        raise DataError(rel or "''", f"image path must be relative to the data root {root}")
    full = (root / rel).resolve()
    if full != root and root not in full.parents:
        raise DataError(rel, f"image path escapes the data root {root}; keep every image inside it")
    return full


def relative_posix(data_dir, path) -> str:
    """``path`` relative to ``data_dir`` as a POSIX string (DataError if outside)."""
    root = Path(data_dir).resolve()
    full = Path(path).resolve()
    try:
        return full.relative_to(root).as_posix()
    except ValueError:
        raise DataError(path, f"file is outside the data root {root}") from None


def read_table(path, required: Iterable[str] = (), what: str = "CSV file", **kwargs) -> pd.DataFrame:
    """Read a CSV with pandas; DataError if missing, unreadable or lacking ``required`` columns."""
    path = require_file(path, what)
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot be parsed as CSV ({type(exc).__name__}); check the file") from None
    df.columns = [str(c).lstrip("\ufeff").strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            path,
            f"missing column(s) {', '.join(repr(c) for c in missing)}; it has "
            f"{', '.join(repr(c) for c in df.columns)}",
        )
    return df


def label_columns(df: pd.DataFrame) -> tuple[str, ...]:
    """The label columns of a validated manifest (``df.attrs['labels']``)."""
    labels = df.attrs.get("labels")
    if labels is None:
        raise ValueError("manifest has no attrs['labels']; pass it through validate_manifest first")
    return tuple(labels)


def quarantined(df: pd.DataFrame) -> list[dict]:
    """Inputs the adapter left out while building the manifest: ``[{"path", "reason"}, ...]``."""
    return list(df.attrs.get("quarantine", []))


def repeated_ids(df: pd.DataFrame, data_dir=None) -> list[int]:
    """Positions of rows to quarantine because their id repeats another file's.

    Adapters that take ids from file names drop the ending, so ``x.png`` and ``x.jpg`` give one
    id. Of the rows sharing an id with *different* paths, the one kept is the first whose
    content (sniffed, :mod:`pipelines.formats`, when ``data_dir`` is given) matches its name's
    ending, else the first. Rows repeating both id and path are a broken manifest, left to
    :func:`validate_manifest`'s error.
    """
    if "path" not in df.columns or not df["id"].duplicated().any():
        return []
    root = Path(data_dir) if data_dir is not None else None

    def named_right(path: str) -> bool:
        fmt = formats.sniff_file(root / path) if root is not None else None
        return fmt is not None and PurePosixPath(path).suffix.lower() in fmt.suffixes

    ids, paths = df["id"].astype(str).tolist(), df["path"].astype(str).tolist()
    keep: dict[str, int] = {}
    for i in sorted(range(len(df)), key=lambda i: (not named_right(paths[i]), i)):
        keep.setdefault(ids[i], i)
    return [i for i in range(len(df)) if keep[ids[i]] != i and paths[i] != paths[keep[ids[i]]]]


def _repeated_reason(path: str, data_dir) -> str:
    fmt = formats.sniff_file(Path(data_dir) / path) if data_dir is not None else None
    suffix = PurePosixPath(path).suffix.lower()
    told = (f"its content is {fmt.name.upper()} but its name ends {suffix}; "
            if fmt is not None and suffix not in fmt.suffixes else "")
    return (f"{told}another file has the same name up to its ending (one id for both); rename "
            "or remove one of them")


def validate_manifest(
    df: pd.DataFrame,
    labels: Sequence[str] | None = None,
    *,
    task: str | None = None,
    quarantine: Sequence[dict] | None = None,
    channels: int | None = None,
    data_dir=None,
) -> pd.DataFrame:
    """Check ``df`` against the manifest schema and return it in canonical form.

    Canonical form: the schema columns first (typed: str ids/paths, int slice, int 0/1
    labels), then optional and extra columns, a fresh RangeIndex, and ``attrs`` holding
    ``labels`` (and ``task``, ``quarantine``, ``channels`` when given or already present).
    Empty or None ``labels`` means ``df.attrs["labels"]`` (adapters whose labels come from
    the data). Two files whose ids repeat (``x.png`` and ``x.jpg``) are not an error: all but
    one go to ``attrs["quarantine"]`` (:func:`repeated_ids`; ``data_dir`` lets the file's
    content decide which is kept). Raises :class:`DataError` with one sentence on the first
    other problem found.
    """
    labels = tuple(labels or df.attrs.get("labels") or ())
    if not labels:
        raise DataError(None, "manifest needs at least one label column")
    if len(set(labels)) != len(labels):
        raise DataError(None, f"label names repeat in {labels}")
    clash = set(labels) & set(MANIFEST_COLUMNS + OPTIONAL_COLUMNS)
    if clash:
        raise DataError(None, f"label name(s) {sorted(clash)} clash with manifest columns; rename them")
    missing = [c for c in (*MANIFEST_COLUMNS, *labels) if c not in df.columns]
    if missing:
        raise DataError(None, f"manifest lacks column(s) {missing}; it has {list(df.columns)}")
    if len(df) == 0:
        raise DataError(None, "manifest is empty: the adapter found no usable examples")

    out = df.copy()
    out.attrs = dict(df.attrs)
    repeated = repeated_ids(out.assign(id=out["id"].astype(str)), data_dir)
    left_out = [{"path": str(out["path"].iloc[i]),
                 "reason": _repeated_reason(str(out["path"].iloc[i]), data_dir)} for i in repeated]
    out = out.drop(index=out.index[repeated])
    for col in ("id", "path", "patient_id", "study_id", "series_id"):
        if out[col].isna().any():
            bad = out.loc[out[col].isna(), "id"].iloc[0]
            raise DataError(None, f"manifest column {col!r} is empty for id {bad!r}")
        out[col] = out[col].astype(str)
    try:
        out["slice"] = out["slice"].astype("int64")
    except (TypeError, ValueError):
        raise DataError(None, "manifest column 'slice' must hold integers (-1 for single images)") from None
    dup = out["id"][out["id"].duplicated()]
    if len(dup):
        raise DataError(None, f"manifest ids must be unique but {dup.iloc[0]!r} repeats")
    for p in out["path"].unique():
        _check_relative(p)
    if "mask_path" in out.columns:
        out["mask_path"] = out["mask_path"].fillna("").astype(str)
        for p in out["mask_path"].unique():
            if p:
                _check_relative(p)
    for name in labels:
        values = pd.to_numeric(out[name], errors="coerce")
        bad = ~values.isin((0, 1))
        if bad.any():
            raw = out.loc[bad, name].iloc[0]
            raise DataError(None, f"label column {name!r} must hold 0 or 1 but has {show(raw)}")
        out[name] = values.astype("int64")
    if "split" in out.columns:
        out["split"] = out["split"].astype(str)
        unknown = sorted(set(out["split"]) - set(SPLITS))
        if unknown:
            raise DataError(None, f"split column has {unknown}; allowed values are {list(SPLITS)}")

    first = [*MANIFEST_COLUMNS, *labels]
    first += [c for c in OPTIONAL_COLUMNS if c in out.columns]
    out = out[first + [c for c in out.columns if c not in first]].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    out.attrs["labels"] = labels
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"task {task!r} is not one of {TASKS}")
        out.attrs["task"] = task
    if quarantine is not None:
        out.attrs["quarantine"] = [dict(q) for q in quarantine]
    out.attrs["quarantine"] = [*out.attrs.get("quarantine", []), *left_out]
    if channels is not None:
        out.attrs["channels"] = int(channels)
    return out


def _check_relative(p: str) -> None:
    pure = PurePosixPath(p)
    if pure.is_absolute() or os.path.isabs(p) or ".." in pure.parts or "\\" in p:
        raise DataError(p, "manifest path must be POSIX and relative to the data root, without '..'")


