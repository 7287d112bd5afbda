"""CQ500 (qure.ai, Chilamkurthy et al., Lancet 2018): head CT scans read by three radiologists.

::

    data_dir/
      reads.csv        name, Category, R1:ICH, R1:IPH, R1:IVH, R1:SDH, R1:EDH, R1:SAH, ...,
                       R2:..., R3:...   (one row per scan, e.g. name "CQ500-CT-0")
      <scan folder>/.../<series folder>/*.dcm
                       e.g. "CQ500CT0 CQ500CT0/Unknown Study/CT PLAIN THIN/CT000000.dcm"

Labels: per scan, each finding is positive when a majority of the readers marked it (2 of 3;
with R readers, more than R/2), mapped to the RSNA names: ICH -> any, EDH -> epidural,
IPH -> intraparenchymal, IVH -> intraventricular, SAH -> subarachnoid, SDH -> subdural.

Rows: one per DICOM slice, carrying its **scan's** labels (CQ500 has no slice labels; use
``zoo.metrics`` scan aggregation for scan-level evaluation). A scan's folder is found by the
number in its name (``CQ500-CT-12``, ``CQ500CT12 CQ500CT12`` both mean scan 12), so the
renamed folders of the public zips match. ``patient_id`` is the reads.csv name (one patient
per scan); ``study_id`` / ``series_id`` come from the headers (folder names if absent).

Options: ``series`` = ``all`` (default: every series of every scan, thin and bone-kernel
reconstructions included) or ``one`` (per scan, the non-bone series, by folder name or
SeriesDescription, with the fewest slices but at least ``min_slices`` = 10: the thick axial
series closest to RSNA's 5 mm slices); ``workers``; ``strict``. Scans in reads.csv without a
folder, and unreadable headers, go to ``df.attrs["quarantine"]``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import label_maps, labels
from pipelines.datasets import base
from pipelines.datasets.base import Adapter, register_adapter
from pipelines.manifest import (
    DataError,
    read_table,
    relative_posix,
    require_dir,
    show,
    validate_manifest,
)

LABELS = labels.RSNA_ICH
CSV = "reads.csv"
FINDINGS = label_maps.RSNA_TO_CQ500  # RSNA label -> reads.csv finding code (one table)
_SCAN_NUMBER = re.compile(r"CQ500[-_ ]?CT[-_ ]?(\d+)", re.IGNORECASE)


def scan_number(text: str) -> int | None:
    match = _SCAN_NUMBER.search(str(text))
    return int(match.group(1)) if match else None


def read_reads(csv_path) -> pd.DataFrame:
    """reads.csv -> DataFrame indexed by scan name with the 6 majority-vote label columns."""
    table = read_table(csv_path, required=("name",), what="CQ500 reads.csv")
    readers = sorted({c.split(":", 1)[0] for c in table.columns if re.match(r"^R\d+:", c)})
    if not readers:
        raise DataError(csv_path, "has no reader columns such as 'R1:ICH'; is this the CQ500 reads.csv?")
    needed = [f"{r}:{code}" for r in readers for code in FINDINGS.values()]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataError(csv_path, f"missing reader column(s) {', '.join(missing)}")
    votes = {}
    for label, code in FINDINGS.items():
        marks = []
        for reader in readers:
            col = f"{reader}:{code}"
            values = pd.to_numeric(table[col], errors="coerce")
            if not values.isin((0, 1)).all():
                raw = table.loc[~values.isin((0, 1)), col].iloc[0]
                raise DataError(csv_path, f"column {col!r} must hold 0 or 1 but has {show(raw)}")
            marks.append(values.to_numpy(dtype="int64"))
        votes[label] = (np.sum(marks, axis=0) * 2 > len(readers)).astype("int64")
    out = pd.DataFrame(votes, index=table["name"].astype(str).str.strip())
    if out.index.duplicated().any():
        raise DataError(csv_path, f"scan {out.index[out.index.duplicated()][0]!r} appears twice")
    return out[list(LABELS)]


def _find_series(root: Path, csv_name: str) -> dict[int, dict[str, list[Path]]]:
    """scan number -> {series folder (relative posix): [dicom paths]}."""
    scans: dict[int, dict[str, list[Path]]] = {}
    for path in base.list_images(root, suffixes=(".dcm",)):
        rel = path.relative_to(root)
        number = None
        for part in rel.parts[:-1]:
            number = scan_number(part)
            if number is not None:
                break
        if number is None:
            continue
        folder = rel.parent.as_posix()
        scans.setdefault(number, {}).setdefault(folder, []).append(path)
    return scans


def _pick_series(series: dict[str, list[Path]], headers: dict, min_slices: int) -> list[str]:
    def is_bone(folder: str, files: list[Path]) -> bool:
        desc = headers.get(str(files[0]), {})
        desc = desc.get("series_description", "") if isinstance(desc, dict) else ""
        return "bone" in folder.lower() or "bone" in desc.lower()

    candidates = [f for f, files in series.items() if not is_bone(f, files)] or list(series)
    thick = [f for f in candidates if len(series[f]) >= min_slices] or candidates
    return [min(thick, key=lambda f: (len(series[f]), f))]


@register_adapter
class Cq500(Adapter):
    """CQ500: one row per DICOM slice carrying its scan's majority-vote labels."""

    name = "cq500"
    labels = LABELS
    task = "multi-label"
    ct = True
    scan_labelled = "max"  # labels belong to whole scans: scored per scan by default
    label_map = FINDINGS

    def read_manifest(self, data_dir, *, csv=CSV, series="all", min_slices=10, workers=1, strict=False):
        root = require_dir(data_dir, "CQ500 data directory")
        strict = base.as_bool(strict, "strict")
        if series not in ("all", "one"):
            raise ValueError(f"option series={series!r} must be 'all' or 'one'")
        min_slices = base.as_int(min_slices, "min_slices")
        reads = read_reads(root / csv)
        found = _find_series(root, csv)
        if not found:
            raise DataError(root, "holds no .dcm files under a folder named like CQ500CT<number>")
        quarantine, plan = [], []
        for name in reads.index:
            number = scan_number(name)
            if number is None:
                raise DataError(root / csv, f"scan name {name!r} has no CQ500-CT-<number> in it")
            if number not in found:
                quarantine.append({"path": name, "reason": "no DICOM folder found for this scan"})
                continue
            for folder, files in sorted(found[number].items()):
                plan.extend((name, folder, f) for f in files)
        if not plan:
            raise DataError(root, "no DICOM folder matches a scan named in reads.csv")
        headers = dict(zip((str(p) for _, _, p in plan),
                           base.scan_headers([p for _, _, p in plan], workers=base.as_int(workers, "workers"))))
        if series == "one":
            keep = set()
            for name in reads.index:
                number = scan_number(name)
                if number in found:
                    for folder in _pick_series(found[number], headers, min_slices):
                        keep.add((name, folder))
            plan = [p for p in plan if (p[0], p[1]) in keep]
        rows = []
        for name, folder, path in plan:
            header = headers[str(path)]
            rel = relative_posix(root, path)
            if isinstance(header, str):
                if strict:
                    raise DataError(path, header)
                quarantine.append({"path": rel, "reason": header})
                continue
            rows.append({
                "id": rel.rsplit(".", 1)[0],
                "path": rel,
                "slice": -1,
                "patient_id": name,
                "study_id": header.get("study_id") or f"{name}/{folder.split('/')[0]}",
                "series_id": header.get("series_id") or folder,
                "position": header.get("position", np.nan),
            })
        if not rows:
            raise DataError(root, "no readable DICOM slice was found for the scans in reads.csv")
        df = pd.DataFrame(rows).join(reads, on="patient_id")
        return validate_manifest(df, LABELS, task=self.task, quarantine=quarantine)
