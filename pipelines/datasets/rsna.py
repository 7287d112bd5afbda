"""RSNA Intracranial Hemorrhage Detection (2019), in its Kaggle on-disk layout.

::

    data_dir/
      stage_2_train.csv         ID,Label   with ID = ID_<image>_<subtype>, six rows per image
      stage_2_train/ID_<image>.dcm

The six rows per image are pivoted to the label columns (``any, epidural,
intraparenchymal, intraventricular, subarachnoid, subdural``). PatientID,
StudyInstanceUID, SeriesInstanceUID (and the slice position) come from each DICOM header,
read without pixel data and only those fields (:func:`pipelines.dicom.read_header_safe`).
Identical duplicate CSV rows (the real file has some) are dropped; conflicting ones are an
error. An image whose header cannot be read is left out of the manifest and listed in
``df.attrs["quarantine"]`` (``strict=True`` raises instead). If ``masks/ID_<image>.png``
exists (the synthetic generator writes them) the row's ``mask_path`` points at it.

Options: ``csv`` (default stage_2_train.csv), ``image_dir`` (default stage_2_train),
``workers`` (header-reading processes, default 1), ``strict`` (default False).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import labels
from pipelines.datasets import base
from pipelines.datasets.base import Adapter, register_adapter
from pipelines.manifest import DataError, read_table, require_dir, show, validate_manifest

LABELS = labels.RSNA_ICH
CSV = "stage_2_train.csv"
IMAGE_DIR = "stage_2_train"


def read_labels(csv_path) -> pd.DataFrame:
    """stage_2_train.csv -> DataFrame indexed by image id (``ID_xxx``) with the 6 label columns."""
    table = read_table(csv_path, required=("ID", "Label"), what="RSNA label CSV", dtype={"ID": str})
    ids = table["ID"].astype(str).str.strip()
    parts = ids.str.rsplit("_", n=1, expand=True)
    if parts.shape[1] != 2 or parts[1].isna().any() or not ids.str.startswith("ID_").all():
        bad = ids[~ids.str.match(r"^ID_[^_]+_[A-Za-z]+$")].iloc[0]
        raise DataError(csv_path, f"row ID {bad!r} is not of the form ID_<image>_<subtype>")
    table = pd.DataFrame({"image": parts[0], "subtype": parts[1], "label": table["Label"]})
    unknown = sorted(set(table["subtype"]) - set(LABELS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], LABELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            csv_path, f"unknown subtype {unknown[0]!r}{hint}; the RSNA subtypes are {', '.join(LABELS)}"
        )
    values = pd.to_numeric(table["label"], errors="coerce")
    if not values.isin((0, 1)).all():
        raw = table.loc[~values.isin((0, 1)), "label"].iloc[0]
        raise DataError(csv_path, f"Label must be 0 or 1 but one row has {show(raw)}")
    table["label"] = values.astype("int64")
    table = table.drop_duplicates()
    clash = table.duplicated(["image", "subtype"], keep=False)
    if clash.any():
        first = table.loc[clash].iloc[0]
        raise DataError(
            csv_path, f"image {first['image']} has conflicting Labels for subtype {first['subtype']!r}"
        )
    wide = table.pivot(index="image", columns="subtype", values="label")
    incomplete = wide.isna().any(axis=1)
    if incomplete.any():
        image = wide.index[incomplete][0]
        have = int(wide.loc[image].notna().sum())
        raise DataError(csv_path, f"image {image} has rows for only {have} of the {len(LABELS)} subtypes")
    return wide.reindex(columns=list(LABELS)).astype("int64")


@register_adapter
class Rsna(Adapter):
    """RSNA Intracranial Hemorrhage Detection, Kaggle layout: one row per DICOM slice."""

    name = "rsna"
    labels = LABELS
    task = "multi-label"
    ct = True

    def read_manifest(self, data_dir, *, csv=CSV, image_dir=IMAGE_DIR, workers=1, strict=False) -> pd.DataFrame:
        root = require_dir(data_dir, "RSNA data directory")
        strict = base.as_bool(strict, "strict")
        labels = read_labels(root / csv)
        images = require_dir(root / image_dir, "RSNA image folder")
        rel = [f"{Path(image_dir).as_posix()}/{image}.dcm" for image in labels.index]
        headers = base.scan_headers([images / f"{image}.dcm" for image in labels.index],
                                    workers=base.as_int(workers, "workers"))
        rows, quarantine = [], []
        masks = root / "masks"
        for image, path, header in zip(labels.index, rel, headers):
            if isinstance(header, str):
                if strict:
                    raise DataError(root / path, header)
                quarantine.append({"path": path, "reason": header})
                continue
            row = {
                "id": image,
                "path": path,
                "slice": -1,
                # a missing ID in the header falls back to the image id: its own group, never merged
                "patient_id": header.get("patient_id") or image,
                "study_id": header.get("study_id") or image,
                "series_id": header.get("series_id") or image,
                "position": header.get("position", np.nan),
            }
            if masks.is_dir():
                mask = masks / f"{image}.png"
                row["mask_path"] = f"masks/{image}.png" if mask.is_file() else ""
            rows.append(row)
        if not rows:
            raise DataError(root / image_dir, "none of the images listed in the CSV could be read")
        df = pd.DataFrame(rows)
        df = df.join(labels, on="id")
        return validate_manifest(df, LABELS, task=self.task, quarantine=quarantine, channels=None)
