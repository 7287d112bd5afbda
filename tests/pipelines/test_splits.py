"""Patient-grouped, stratified splits: disjointness, determinism, stratification, official splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.splits import (
    PatientLeakError,
    assert_patient_disjoint,
    load_split,
    save_split,
    split_manifest,
)

LABELS = ("any", "epidural", "subdural")


def manifest(n_patients=200, seed=0, per_patient=(1, 6)):
    """A multi-label manifest: patients with 1-5 images; epidural rare (~6 %), subdural ~25 %."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        epi, sub = rng.random() < 0.06, rng.random() < 0.25
        for i in range(int(rng.integers(*per_patient))):
            on = rng.random() < 0.7
            rows.append(
                {
                    "id": f"img{p:04d}_{i}",
                    "patient_id": f"P{p:04d}",
                    "epidural": int(epi and on),
                    "subdural": int(sub and on),
                }
            )
    df = pd.DataFrame(rows)
    df["any"] = df[["epidural", "subdural"]].max(axis=1)
    return df


def test_patient_disjoint_fractions_and_every_row_assigned():
    df = manifest()
    out = split_manifest(df, LABELS, val_fraction=0.15, test_fraction=0.2, seed=0)
    assert list(out.index) == list(df.index) and out["split"].isin(["train", "val", "test"]).all()
    assert out.groupby("patient_id")["split"].nunique().max() == 1
    assert_patient_disjoint(out)
    patients = out.drop_duplicates("patient_id")["split"].value_counts()
    assert patients["val"] == pytest.approx(0.15 * 200, abs=2)
    assert patients["test"] == pytest.approx(0.2 * 200, abs=2)
    assert "split" not in df.columns  # the input is not modified


def test_deterministic_for_a_seed_and_independent_of_row_order():
    df = manifest()
    a = split_manifest(df, LABELS, seed=3)
    b = split_manifest(df.sample(frac=1.0, random_state=1), LABELS, seed=3).loc[a.index]
    assert (a["split"] == b["split"]).all()
    c = split_manifest(df, LABELS, seed=4)
    assert (a["split"] != c["split"]).any()


def test_stratification_puts_rare_labels_in_every_split():
    df = manifest(seed=1)
    out = split_manifest(df, LABELS, val_fraction=0.15, test_fraction=0.15, seed=0)
    per_patient = out.groupby("patient_id").agg(
        {"split": "first", "epidural": "max", "subdural": "max"}
    )
    for label in ("epidural", "subdural"):
        share = per_patient.groupby("split")[label].sum() / per_patient[label].sum()
        assert share["val"] == pytest.approx(0.15, abs=0.1), label
        assert share["test"] == pytest.approx(0.15, abs=0.1), label
        assert share["val"] > 0 and share["test"] > 0


def test_stratification_beats_chance_for_rare_labels():
    """Over seeds, a stratified val split never misses the rare label; a random one often would."""
    df = manifest(n_patients=60, seed=2)
    n_epi = df.groupby("patient_id")["epidural"].max().sum()
    assert 2 <= n_epi <= 8
    for seed in range(10):
        out = split_manifest(df, LABELS, seed=seed)
        epi = out.groupby("patient_id").agg({"split": "first", "epidural": "max"})
        assert epi.loc[epi["epidural"] == 1, "split"].nunique() >= 2


def test_official_complete_split_is_kept():
    df = manifest(n_patients=30)
    df["patient_id"] = df["id"]  # medmnist-like: an image is its own patient
    official = np.array(["train", "val", "test"])[np.arange(len(df)) % 3]
    df["split"] = official
    out = split_manifest(df, LABELS, seed=7)
    assert (out["split"] == official).all()


def test_train_val_is_carved_by_patient_and_official_test_kept():
    df = manifest(n_patients=100)
    test_patients = {f"P{p:04d}" for p in range(0, 100, 5)}
    df["split"] = np.where(df["patient_id"].isin(test_patients), "test", "train_val")
    out = split_manifest(df, LABELS, val_fraction=0.1, test_fraction=0.3, seed=0)
    assert (out.loc[df["split"] == "test", "split"] == "test").all()
    rest = out[df["split"] != "test"]
    assert set(rest["split"]) == {"train", "val"}
    assert rest.drop_duplicates("patient_id")["split"].value_counts()["val"] == 8  # 10 % of 80
    assert_patient_disjoint(out)
    # ChestX-ray14 style: only train and test given -> val carved from train
    df["split"] = np.where(df["patient_id"].isin(test_patients), "test", "train")
    out2 = split_manifest(df, LABELS, val_fraction=0.1, seed=0)
    assert (out2["split"] == out["split"]).all()


def test_unassigned_rows_follow_their_patients_official_split():
    df = manifest(n_patients=40)
    df["split"] = ""
    first = df.groupby("patient_id").head(1).index[:10]
    df.loc[first, "split"] = "test"  # one official image for 10 patients
    out = split_manifest(df, LABELS, seed=0)
    placed = set(df.loc[first, "patient_id"])
    assert (out.loc[df["patient_id"].isin(placed), "split"] == "test").all()
    assert_patient_disjoint(out)


def test_tiny_datasets():
    df = manifest(n_patients=3, per_patient=(2, 3))
    out = split_manifest(df, LABELS, seed=0)  # one patient per split
    assert sorted(out.drop_duplicates("patient_id")["split"]) == ["test", "train", "val"]
    with pytest.raises(ValueError, match="at least 3 patients.*only 2"):
        split_manifest(manifest(n_patients=2), LABELS)
    two = split_manifest(manifest(n_patients=2), LABELS, test_fraction=0)
    assert sorted(two.drop_duplicates("patient_id")["split"]) == ["train", "val"]
    one = split_manifest(manifest(n_patients=1), LABELS, val_fraction=0, test_fraction=0)
    assert set(one["split"]) == {"train"}


def test_bad_input_is_one_clear_sentence():
    df = manifest(n_patients=10)
    with pytest.raises(ValueError, match="no column.*'edh'"):
        split_manifest(df, ("edh",))
    with pytest.raises(ValueError, match="val_fraction must be in"):
        split_manifest(df, LABELS, val_fraction=1.5)
    with pytest.raises(ValueError, match="leave patients for training"):
        split_manifest(df, LABELS, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="'patient_id' column"):
        split_manifest(df.drop(columns="patient_id"), LABELS)
    with pytest.raises(ValueError, match="Unknown split value"):
        split_manifest(df.assign(split="holdout"), LABELS)
    with pytest.raises(ValueError, match="empty"):
        split_manifest(df.iloc[:0], LABELS)


def test_assert_patient_disjoint_names_the_patients():
    df = pd.DataFrame(
        {"patient_id": ["a", "a", "b", "c", "c"], "split": ["train", "val", "test", "val", "val"]}
    )
    with pytest.raises(PatientLeakError, match=r"1 patient\(s\).*a in train, val") as err:
        assert_patient_disjoint(df)
    assert isinstance(err.value, AssertionError) and "'b'" not in str(err.value)
    assert_patient_disjoint(df.iloc[2:])
    # an official split that itself leaks is refused, not silently kept
    with pytest.raises(PatientLeakError):
        split_manifest(df.assign(any=0), ("any",))


def test_save_and_load_split(tmp_path):
    out = split_manifest(manifest(n_patients=20), LABELS, seed=0)
    path = save_split(out, tmp_path / "deep" / "split.csv")
    back = load_split(path)
    assert list(back.columns) == list(out.columns)
    assert (back["split"].values == out["split"].values).all()
    assert (back["patient_id"].values == out["patient_id"].values).all()
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(ValueError, match="no 'split' column"):
        save_split(manifest(n_patients=2), tmp_path / "x.csv")


def test_leak_message_can_keep_patient_ids_out():
    import pandas as pd
    import pytest

    from pipelines.splits import PatientLeakError, assert_patient_disjoint

    df = pd.DataFrame({"patient_id": ["ID_secret", "ID_secret"], "split": ["train", "test"]})
    with pytest.raises(PatientLeakError) as err:
        assert_patient_disjoint(df, name_patients=False)
    assert "ID_secret" not in str(err.value) and "1 patient" in str(err.value)
