"""Any CSV that lists image paths with labels (and optionally patients and a split).

::

    data_dir/
      labels.csv     path,patient,pneumonia,effusion      (multi-label: 0/1 columns)
                     path,patient,diagnosis               (multi-class: one column of names)
      images/...     the files, referenced relative to data_dir

Options (Python keywords, or ``--option KEY=VALUE`` from ``pipelines.prepare``):

* ``csv``: the file, inside ``data_dir`` (relative to it, or absolute; default: the only
  ``*.csv`` in it); a CSV outside ``data_dir`` is refused;
* ``path_column`` (default ``path``);
* ``label_columns=a,b,c``: 0/1 columns, one per label (multi-label), **or**
  ``label_column=diagnosis``: one column of class names, one-hot over ``labels=`` (given
  order; a value outside it is an error naming the value) or the sorted distinct values;
* ``patient_column`` (default: each image is its own patient), ``split_column`` (values
  train/val/test), ``slice_column`` (index into a volume / multi-frame file), ``mask_column``;
* ``task``: overrides the inferred one;
* ``channels=1|3|auto`` (pictures only): grey (the default), colour (RGB; grey pictures
  repeated to 3 planes), or 3 when any listed picture is colour, read from the files' headers
  alone. Choose 3 where colour is signal: fundus photographs, dermoscopy, microscopy and
  stained pathology (H&E, blood smears). The rules for modes, palettes, mixed lists, alpha and
  CMYK are in :mod:`pipelines.colour`.

Paths must stay inside ``data_dir``. ``.dcm`` files load as windowed CT (C = number of
windows), ``.nii``/``.nii.gz`` slices likewise, other images as grey (H, W, 1) or, with
``channels=3``, RGB (H, W, 3). ``df.attrs["ct"]`` tells which (see
:meth:`pipelines.datasets.base.Adapter.manifest_channels`).
"""

from __future__ import annotations

import difflib

import pandas as pd

from pipelines import colour
from pipelines.datasets import base
from pipelines.datasets.base import Adapter, register_adapter
from pipelines.manifest import (
    DataError,
    read_table,
    require_dir,
    safe_join,
    show,
    validate_manifest,
)

CT_SUFFIXES = (".dcm", ".nii", ".nii.gz")


def _is_ct(path: str) -> bool:
    return str(path).lower().endswith(CT_SUFFIXES)


def _column(table, name, csv_path, role):
    if name not in table.columns:
        close = difflib.get_close_matches(str(name), list(table.columns), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(csv_path, f"has no {role} column {name!r}{hint}; columns are {', '.join(map(repr, table.columns))}")
    return table[name]


def _csv_inside(root, csv):
    """The ``csv=`` option as a file inside ``data_dir`` (absolute is fine if it is inside)."""
    from pathlib import Path

    given = Path(str(csv))
    full = given.resolve() if given.is_absolute() else (root / given).resolve()
    if full != root.resolve() and root.resolve() not in full.parents:
        raise DataError(csv, f"option csv= must name a file inside the data directory {root}; "
                             "copy the CSV there or pass it relative to --data-dir")
    return full


def _with_channels(df, root, channels):
    """A picture manifest with its ``channels`` option resolved (auto: from file headers)."""
    return base.with_channels(df, colour.resolve_channels(channels, (root / p for p in df["path"])))


@register_adapter
class Csv(Adapter):
    """Any CSV listing image paths with labels; labels, task and ct from ``df.attrs``."""

    name = "csv"
    labels: tuple[str, ...] = ()  # named by the options; see df.attrs["labels"]
    task = "multi-label"
    path_ids = True  # "images/<MRN>/<UID>.dcm" -> id: pseudonymised in the cache

    def read_manifest(self, data_dir, *, csv=None, path_column="path", label_columns=None, label_column=None,
                      labels=None, patient_column=None, split_column=None, slice_column=None,
                      mask_column=None, task=None, channels=1):
        root = require_dir(data_dir, "data directory")
        colour.parse_channels(channels)  # a bad value fails before the CSV is read
        if csv is None:
            found = sorted(root.glob("*.csv"))
            if len(found) != 1:
                listing = ", ".join(f.name for f in found) or "none"
                raise DataError(root, f"needs csv=<file> to say which CSV lists the images (found {listing})")
            csv_path = found[0]
        else:
            csv_path = _csv_inside(root, csv)
        table = read_table(csv_path, what="label CSV", dtype={path_column: str})
        paths = _column(table, path_column, csv_path, "path").astype(str).str.strip()
        if paths.eq("").any() or table[path_column].isna().any():
            raise DataError(csv_path, f"column {path_column!r} has an empty path")
        for p in paths:
            safe_join(root, p)  # refuses absolute paths and paths escaping data_dir
        label_columns = base.as_list(label_columns)
        if label_columns and label_column:
            raise ValueError("give label_columns=a,b (0/1 columns) or label_column=name (class names), not both")
        if label_columns:
            names = label_columns
            values = {}
            for name in names:
                col = _column(table, name, csv_path, "label")
                numbers = pd.to_numeric(col, errors="coerce")
                bad = ~numbers.isin((0, 1))
                if bad.any():
                    raise DataError(csv_path, f"label column {name!r} must hold 0 or 1 but has {show(col[bad].iloc[0])}")
                values[name] = numbers.astype("int64").to_numpy()
            inferred = "multi-label"
        elif label_column:
            col = _column(table, label_column, csv_path, "label").astype(str).str.strip()
            names = base.as_list(labels) or sorted(col.unique())
            unknown = sorted(set(col) - set(names))
            if unknown:
                close = difflib.get_close_matches(unknown[0], names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise DataError(csv_path, f"label {unknown[0]!r} in column {label_column!r} is not one of {', '.join(names)}{hint}")
            values = {name: (col == name).astype("int64").to_numpy() for name in names}
            inferred = "binary" if len(names) == 2 else "multi-class"
        else:
            raise DataError(
                csv_path,
                "needs label_columns=a,b (0/1 columns) or label_column=<class-name column>; columns are "
                + ", ".join(map(repr, table.columns)),
            )
        ids = paths.str.replace(r"\.(nii\.gz|[A-Za-z0-9]+)$", "", regex=True)
        slices = (pd.to_numeric(_column(table, slice_column, csv_path, "slice"), errors="coerce")
                  if slice_column else pd.Series(-1, index=table.index))
        if slices.isna().any():
            raise DataError(csv_path, f"slice column {slice_column!r} must hold integers")
        if slice_column:
            ids = ids + "_" + slices.astype("int64").astype(str)
        patients = (_column(table, patient_column, csv_path, "patient").astype(str).str.strip()
                    if patient_column else ids)
        df = pd.DataFrame({
            "id": ids, "path": paths, "slice": slices.astype("int64"),
            "patient_id": patients, "study_id": patients, "series_id": ids,
        })
        for name in names:
            df[name] = values[name]
        if split_column:
            df["split"] = _column(table, split_column, csv_path, "split").astype(str).str.strip().str.lower()
        if mask_column:
            masks = _column(table, mask_column, csv_path, "mask").fillna("").astype(str).str.strip()
            for m in masks:
                if m:
                    safe_join(root, m)
            df["mask_path"] = masks
        ct = bool(df["path"].map(_is_ct).all())
        if not ct and df["path"].map(_is_ct).any():
            raise DataError(csv_path, "mixes CT files (.dcm/.nii) with 8-bit images; use one kind per CSV")
        if ct and colour.parse_channels(channels) == 3:
            raise ValueError("option channels=3 is for pictures; CT files get one channel per window (--windows)")
        dup = df["id"][df["id"].duplicated()]
        if len(dup):
            raise DataError(csv_path, f"lists {dup.iloc[0]!r} more than once")
        out = validate_manifest(df, names, task=task or inferred, channels=None if ct else 1)
        out.attrs["ct"] = ct
        return out if ct else _with_channels(out, root, channels)
