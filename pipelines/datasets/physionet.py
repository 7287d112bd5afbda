"""PhysioNet CT-ICH (Hssayeni et al., 2020): 75 head CT volumes in NIfTI with slice labels.

::

    data_dir/
      hemorrhage_diagnosis_raw_ct.csv   PatientNumber, SliceNumber (1-based), Intraventricular,
                                        Intraparenchymal, Subarachnoid, Epidural, Subdural,
                                        No_Hemorrhage, Fracture_Yes_No
      ct_scans/NNN.nii                  one volume per patient (NNN = PatientNumber, 3 digits)
      masks/NNN.nii                     hemorrhage masks, same grid (optional)

One row per labelled slice: ``path = ct_scans/NNN.nii``, ``slice = SliceNumber - 1`` (the
volume's third axis in stored order; see :mod:`pipelines.nifti` for the in-plane orientation),
``any = 1 - No_Hemorrhage``, the subtype columns renamed to the RSNA names. ``patient_id`` =
``study_id`` = ``series_id`` = ``NNN`` (one scan per patient). ``mask_path`` is ``masks/NNN.nii``
(same ``slice``) when that file exists. Patients whose volume is missing (the release lacks a
few) or whose slice count is smaller than the CSV says go to ``df.attrs["quarantine"]``
(``strict=True`` raises instead).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines import label_maps, labels, nifti
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

LABELS = labels.RSNA_ICH
CSV = "hemorrhage_diagnosis_raw_ct.csv"
# RSNA subtype -> CSV column, from the one mapping table ("any" is 1 - No_Hemorrhage, below)
SUBTYPE_COLUMNS = {k: v for k, v in label_maps.RSNA_TO_PHYSIONET.items() if k != "any"}


@register_adapter
class Physionet(Adapter):
    """PhysioNet CT-ICH: one row per labelled slice of the NIfTI volumes."""

    name = "physionet"
    labels = LABELS
    task = "multi-label"
    ct = True
    label_map = label_maps.RSNA_TO_PHYSIONET

    def read_manifest(self, data_dir, *, csv=CSV, scans="ct_scans", masks="masks", strict=False):
        root = require_dir(data_dir, "PhysioNet CT-ICH data directory")
        strict = base.as_bool(strict, "strict")
        required = ("PatientNumber", "SliceNumber", "No_Hemorrhage", *SUBTYPE_COLUMNS.values())
        table = read_table(root / csv, required=required, what="CT-ICH label CSV")
        require_dir(root / scans, "CT-ICH ct_scans folder")
        for col in required:
            values = pd.to_numeric(table[col], errors="coerce")
            ok = values.notna() & (values == values.round())
            if col not in ("PatientNumber", "SliceNumber"):
                ok &= values.isin((0, 1))
            if not ok.all():
                raw = table.loc[~ok, col].iloc[0]
                kind = "an integer" if col in ("PatientNumber", "SliceNumber") else "0 or 1"
                raise DataError(root / csv, f"column {col!r} must hold {kind} but has {show(raw)}")
            table[col] = values.astype("int64")
        if (table["SliceNumber"] < 1).any():
            raise DataError(root / csv, "SliceNumber starts at 1, but the file has a value below 1")
        rows, quarantine = [], []
        for patient, group in table.groupby("PatientNumber", sort=True):
            pid = f"{int(patient):03d}"
            rel = f"{scans}/{pid}.nii"
            path = root / rel
            if not path.is_file() and (root / f"{rel}.gz").is_file():
                rel, path = f"{rel}.gz", root / f"{rel}.gz"
            try:
                depth = nifti.volume_shape(path)[2]
            except DataError as exc:
                if strict:
                    raise
                quarantine.append({"path": rel, "reason": exc.problem})
                continue
            mask_rel = f"{masks}/{pid}.nii"
            has_mask = (root / mask_rel).is_file()
            for record in group.itertuples(index=False):
                index = int(record.SliceNumber) - 1
                if index >= depth:
                    problem = f"SliceNumber {record.SliceNumber} is beyond the {depth} slices of the volume"
                    if strict:
                        raise DataError(path, problem)
                    quarantine.append({"path": rel, "reason": problem})
                    continue
                row = {
                    "id": f"{pid}_{index:03d}",
                    "path": rel,
                    "slice": index,
                    "patient_id": pid,
                    "study_id": pid,
                    "series_id": pid,
                    "any": 1 - int(record.No_Hemorrhage),
                    "mask_path": mask_rel if has_mask else "",
                }
                for label, col in SUBTYPE_COLUMNS.items():
                    row[label] = int(getattr(record, col))
                rows.append(row)
        if not rows:
            raise DataError(root / scans, "no labelled slice could be matched to a readable volume")
        return validate_manifest(pd.DataFrame(rows), LABELS, task=self.task, quarantine=quarantine)

    def load(self, row, data_dir, windows=None) -> np.ndarray:
        path = safe_join(data_dir, base.field(row, "path"))
        return nifti.read_windows(path, base.row_slice(row), windows)
