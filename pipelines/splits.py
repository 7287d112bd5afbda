"""Patient-grouped, label-stratified train/val/test splits, with a leak check.

``split_manifest(df, labels)`` adds a ``split`` column (``train`` / ``val`` / ``test``) to a
manifest so that every patient's images land in one split:

* **Official splits are kept.** When every row already has ``train``/``val``/``test`` (MedMNIST),
  the split is returned as it is. Rows marked ``train_val`` (or ``train`` when the dataset has
  no ``val`` rows, e.g. ChestX-ray14's train_val_list / test_list) are split into train and val
  by patient, taking ``val_fraction`` of those patients for val; the official test stays.
  Rows without a split (empty) are split into all three. A patient who already has an official
  split keeps it for all of their rows.
* **Grouping.** Fractions count patients, not images; all rows of a patient share a split.
* **Stratification (multi-label).** Each patient gets one key: the positive label (any row)
  that is rarest among the patients being split, or ``"none"`` with no positive label. Keys
  are ordered from the rarest up, patients are shuffled within each key (seeded), and the
  sequence is dealt out so that every prefix holds the target fractions as closely as whole
  patients allow (largest deficit first). Each key therefore gets its share of val and test
  within one patient, and rare labels reach val and test first. For a single-label or
  multi-class one-hot table the key is simply the patient's class.
* **Determinism.** The result depends on the seed and the set of (patient, labels), not on row
  order.
* **Small data.** Each split asked for (a fraction > 0) gets at least one patient; with fewer
  patients than splits asked for, ``ValueError`` says how many are needed.

``assert_patient_disjoint(df)`` raises :class:`PatientLeakError` naming the patients found in
more than one split. ``save_split(df, path)`` writes the split manifest as CSV (atomically) and
``load_split(path)`` reads it back with the ids as strings: public API for a user who wants
to fix a split once and share it (``prepare`` itself recomputes the split from its seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import cells

SPLITS = ("train", "val", "test")
_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "tune": "val",
    "test": "test",
    "testing": "test",
    "train_val": "train_val",
    "trainval": "train_val",
    "train-val": "train_val",
    "": "",
}


class PatientLeakError(AssertionError):
    """A patient's images are in more than one split."""


def _check_fraction(name: str, value) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.") from None
    if not 0.0 <= f < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
    return f


def _normalise_split(series: pd.Series) -> pd.Series:
    raw = series.fillna("").astype(str).str.strip().str.lower()
    bad = sorted(set(raw) - set(_ALIASES))
    if bad:
        raise ValueError(
            f"Unknown split value(s) {bad[:5]} in the 'split' column; use train, val, test "
            "or train_val (or leave it empty to assign)."
        )
    return raw.map(_ALIASES)


def _strata(pat_labels: pd.DataFrame, labels) -> pd.Series:
    """One stratification key per patient: their rarest positive label, or 'none'."""
    if not len(labels):
        return pd.Series("none", index=pat_labels.index)
    prevalence = pat_labels[list(labels)].mean(axis=0)
    # rarest first; ties broken by the label order given
    rank = sorted(labels, key=lambda lab: (prevalence[lab], list(labels).index(lab)))
    keys = pd.Series("none", index=pat_labels.index, dtype=object)
    for lab in reversed(rank):  # the rarest label written last wins
        keys[pat_labels[lab] > 0] = lab
    return keys


def _deal(patients: list, keys: pd.Series, targets: dict[str, float], seed: int) -> dict:
    """Assign patients to splits: strata (rarest first), shuffled, dealt by largest deficit."""
    names = list(targets)
    needed = [s for s in names if targets[s] > 0]
    if len(patients) < len(needed):
        raise ValueError(
            f"split_manifest needs at least {len(needed)} patients to make the splits "
            f"{needed}, but only {len(patients)} patient(s) are left to split; set "
            "val_fraction / test_fraction to 0 for the splits you do not need, or add data."
        )
    rng = np.random.default_rng(seed)
    sizes = keys.value_counts()
    order = sorted(sizes.index, key=lambda k: (sizes[k], str(k)))
    sequence = []
    for key in order:
        members = sorted(keys.index[keys == key], key=str)
        sequence.extend(members[i] for i in rng.permutation(len(members)))
    counts = dict.fromkeys(names, 0)
    assign = {}
    for i, pid in enumerate(sequence):
        deficit = {s: targets[s] * (i + 1) - counts[s] for s in names}
        best = max(names, key=lambda s: (deficit[s], -names.index(s)))
        assign[pid] = best
        counts[best] += 1
    # every split asked for gets a patient: take one from the largest split (last dealt first)
    for s in needed:
        if counts[s] == 0:
            donor = max(names, key=lambda n: counts[n])
            pid = next(p for p in reversed(sequence) if assign[p] == donor)
            assign[pid] = s
            counts[donor] -= 1
            counts[s] += 1
    return assign


def split_manifest(
    df: pd.DataFrame,
    labels,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    patient_column: str = "patient_id",
) -> pd.DataFrame:
    """A copy of ``df`` with a ``split`` column: patient-grouped, stratified, seeded (see module)."""
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must leave patients for training, got "
            f"{val_fraction} + {test_fraction} >= 1."
        )
    labels = tuple(labels or ())
    if patient_column not in df.columns:
        raise ValueError(f"The manifest has no {patient_column!r} column to group patients by.")
    missing = [lab for lab in labels if lab not in df.columns]
    if missing:
        raise ValueError(f"The manifest has no column(s) for label(s) {missing}.")
    if len(df) == 0:
        raise ValueError("The manifest is empty; there is nothing to split.")
    out = df.copy()
    pid = out[patient_column].astype(str)
    if pid.isin(["", "nan", "None"]).any():
        raise ValueError(
            f"Some rows have no {patient_column}; every image needs a patient id "
            "to split by patient (use the image id when each image is a patient)."
        )
    current = (
        _normalise_split(out["split"]) if "split" in out.columns else pd.Series("", index=out.index)
    )

    present = set(current)
    if present <= set(SPLITS) and ("val" in present or val_fraction == 0):
        out["split"] = current.astype(object)
        assert_patient_disjoint(out, patient_column=patient_column)
        return out
    if "val" not in present and "train" in present and "test" in present:
        current = current.replace({"train": "train_val"})  # e.g. ChestX-ray14: carve val out

    fixed = current.isin(SPLITS)
    pool = ~fixed
    # a patient already placed by an official split keeps it
    official = pd.DataFrame({"pid": pid[fixed], "split": current[fixed]})
    clash = official.groupby("pid")["split"].nunique()
    if (clash > 1).any():
        assert_patient_disjoint(
            pd.DataFrame({patient_column: pid[fixed], "split": current[fixed]}),
            patient_column=patient_column,
        )
    placed = official.drop_duplicates("pid").set_index("pid")["split"]
    follow = pool & pid.isin(placed.index)
    current[follow] = pid[follow].map(placed)
    pool = pool & ~follow

    if pool.any():
        sub = pool[pool].index
        has_test = (current == "test").any() or (current[sub] == "train_val").all()
        if has_test:  # official test exists (or a train_val-only pool): split into train/val
            targets = {"train": 1.0 - val_fraction, "val": val_fraction, "test": 0.0}
        else:
            targets = {
                "train": 1.0 - val_fraction - test_fraction,
                "val": val_fraction,
                "test": test_fraction,
            }
        if labels:
            values = out.loc[sub, list(labels)].apply(pd.to_numeric, errors="coerce").fillna(0)
            pat_labels = (values > 0).astype(int).groupby(pid[sub]).max()
        else:
            pat_labels = pd.DataFrame(index=pd.Index(sorted(set(pid[sub])), name="pid"))
        keys = _strata(pat_labels, labels)
        assign = _deal(list(pat_labels.index), keys, targets, int(seed))
        current[sub] = pid[sub].map(assign)

    out["split"] = current.astype(object)
    assert_patient_disjoint(out, patient_column=patient_column)
    return out


def assert_patient_disjoint(
    df: pd.DataFrame,
    *,
    patient_column: str = "patient_id",
    split_column: str = "split",
    name_patients: bool = True,
) -> None:
    """Raise :class:`PatientLeakError` if any patient has rows in more than one split.

    ``name_patients=False`` keeps patient ids out of the message (for raw header ids, which must
    not reach logs).
    """
    for col in (patient_column, split_column):
        if col not in df.columns:
            raise ValueError(f"The manifest has no {col!r} column.")
    per_patient = df.groupby(df[patient_column].astype(str))[split_column].agg(
        lambda s: sorted(set(map(str, s)))
    )
    leaks = per_patient[per_patient.map(len) > 1]
    if len(leaks):
        shown = "; ".join(f"{p} in {', '.join(s)}" for p, s in list(leaks.items())[:5])
        more = f" and {len(leaks) - 5} more" if len(leaks) > 5 else ""
        detail = f" ({shown}{more})" if name_patients else ""
        raise PatientLeakError(
            f"{len(leaks)} patient(s) appear in more than one split{detail}; "
            "split by patient with pipelines.splits.split_manifest."
        )


def save_split(df: pd.DataFrame, path) -> Path:
    """Write the split manifest as CSV (atomically: temp file, then rename). Returns the path."""
    if "split" not in df.columns:
        raise ValueError("The manifest has no 'split' column; run split_manifest first.")
    cells.write_frame(df, path)
    return path


def load_split(path) -> pd.DataFrame:
    """Read a split manifest written by :func:`save_split` (ids and patients as strings)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Split manifest {path} does not exist; write it with save_split.")
    df = cells.read_csv(
        path,
        dtype={"id": str, "patient_id": str, "study_id": str, "series_id": str, "split": str},
        keep_default_na=False,
    )
    if "split" not in df.columns:
        raise ValueError(f"{path} has no 'split' column; it is not a split manifest.")
    return df
