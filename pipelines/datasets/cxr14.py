"""NIH ChestX-ray14 (Wang et al., CVPR 2017): 112,120 frontal chest X-rays, 14 findings.

::

    data_dir/
      Data_Entry_2017.csv     Image Index, Finding Labels ('|'-separated), Follow-up #,
                              Patient ID, Patient Age, Patient Gender, View Position, ...
      train_val_list.txt      official split (image names, one per line), optional
      test_list.txt
      images/*.png            or the tarballs' layout images_001/images/*.png ...

``Finding Labels`` is split on '|' into the 14 columns (:data:`zoo.labels.CXR14`);
"No Finding" means all zero; any other name is an error naming it. ``split`` is ``train`` for
train_val_list.txt and ``test`` for test_list.txt (the official list has no validation part;
``pipelines.splits`` carves one out of train by patient). Grouping is by ``Patient ID``;
``study_id`` is patient + follow-up number. Images listed in the CSV but not on disk (only
some of the 12 tarballs downloaded) are left out and listed in ``df.attrs["quarantine"]``.
Images load as grey (H, W, 1) in [0, 1] (the few RGBA PNGs in the release become grey).
"""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd

from pipelines import labels
from pipelines.datasets import base
from pipelines.datasets.base import Adapter, register_adapter
from pipelines.manifest import DataError, read_table, relative_posix, require_dir, validate_manifest

LABELS = labels.CXR14
CSV = "Data_Entry_2017.csv"
NO_FINDING = "No Finding"


def _read_list(path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def parse_findings(text: str, source) -> np.ndarray:
    """'Effusion|Mass' -> 0/1 vector over :data:`LABELS` (DataError on an unknown finding)."""
    out = np.zeros(len(LABELS), dtype="int64")
    for name in str(text).split("|"):
        name = name.strip()
        if name == NO_FINDING or not name:
            continue
        if name not in LABELS:
            close = difflib.get_close_matches(name, LABELS + (NO_FINDING,), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(source, f"unknown finding {name!r}{hint}; ChestX-ray14 has {', '.join(LABELS)} and {NO_FINDING!r}")
        out[LABELS.index(name)] = 1
    return out


@register_adapter
class Cxr14(Adapter):
    """NIH ChestX-ray14: one row per frontal X-ray, 14 findings, grey PNG."""

    name = "cxr14"
    labels = LABELS
    task = "multi-label"

    def read_manifest(self, data_dir, *, csv=CSV, strict=False):
        root = require_dir(data_dir, "ChestX-ray14 data directory")
        strict = base.as_bool(strict, "strict")
        table = read_table(root / csv, required=("Image Index", "Finding Labels", "Patient ID"),
                           what="ChestX-ray14 Data_Entry CSV", dtype={"Image Index": str})
        on_disk = {p.name: p for p in base.list_images(root, suffixes=(".png",))}
        if not on_disk:
            raise DataError(root, "holds no .png images (expected images/ or images_NNN/images/)")
        train, test = _read_list(root / "train_val_list.txt"), _read_list(root / "test_list.txt")
        labels = np.stack([parse_findings(t, root / csv) for t in table["Finding Labels"].fillna("")])
        rows, quarantine = [], []
        follow = table["Follow-up #"] if "Follow-up #" in table.columns else pd.Series(0, index=table.index)
        for i, (name, patient, visit) in enumerate(zip(table["Image Index"], table["Patient ID"], follow)):
            name = str(name).strip()
            if name not in on_disk:
                if strict:
                    raise DataError(root / "images" / name, "image listed in the CSV is not on disk")
                quarantine.append({"path": f"images/{name}", "reason": "listed in the CSV but not on disk"})
                continue
            patient = str(patient).strip()
            row = {
                "id": name.rsplit(".", 1)[0],
                "path": relative_posix(root, on_disk[name]),
                "slice": -1,
                "patient_id": patient,
                "study_id": f"{patient}_{visit}",
                "series_id": name.rsplit(".", 1)[0],
            }
            row.update(zip(LABELS, labels[i].tolist()))
            if train or test:
                row["split"] = "test" if name in test else "train" if name in train else ""
            rows.append(row)
        if not rows:
            raise DataError(root, "none of the images in the CSV are on disk")
        df = pd.DataFrame(rows)
        if "split" in df.columns and (df["split"] == "").any():
            missing = df.loc[df["split"] == "", "path"].iloc[0]
            raise DataError(root / missing, "image is in neither train_val_list.txt nor test_list.txt")
        return validate_manifest(df, LABELS, task=self.task, quarantine=quarantine, channels=1)
