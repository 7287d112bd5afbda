"""Every dataset adapter on small files in its published layout (medmnist on the real .npz)."""

import numpy as np
import pandas as pd
import pytest
from pipeline_files import write_dicom, write_nifti, write_png

from pipelines import transforms
from pipelines.datasets import get_adapter, list_adapters
from pipelines.manifest import MANIFEST_COLUMNS, validate_manifest
from zoo.labels import CXR14, RSNA_ICH


def _check_schema(df, labels):
    assert tuple(df.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert tuple(df.attrs["labels"]) == tuple(labels)
    assert df["id"].is_unique
    for label in labels:
        assert set(df[label].unique()) <= {0, 1}
    # the canonical form is a fixed point of validation
    again = validate_manifest(df, labels)
    pd.testing.assert_frame_equal(again, df)


def test_get_adapter_and_close_matches():
    for name in list_adapters():
        adapter = get_adapter(name)
        assert callable(adapter.read_manifest) and callable(adapter.load)
        assert adapter.task in ("multi-label", "multi-class", "binary")
    with pytest.raises(ValueError, match="Unknown dataset 'rnsa'. Did you mean rsna"):
        get_adapter("rnsa")


# ---------------------------------------------------------------------------------------- rsna
def _rsna(root, *, extra_rows=()):
    labels = {
        "ID_a1": dict.fromkeys(RSNA_ICH, 0),
        "ID_a2": {**dict.fromkeys(RSNA_ICH, 0), "any": 1, "subdural": 1},
        "ID_b1": {**dict.fromkeys(RSNA_ICH, 0), "any": 1, "epidural": 1},
    }
    patients = {"ID_a1": "ID_pa", "ID_a2": "ID_pa", "ID_b1": "ID_pb"}
    study = {"ID_pa": "1.2.3.1", "ID_pb": "1.2.3.2"}
    rows = []
    for z, (image, labs) in enumerate(labels.items()):
        stored = np.full((8, 8), 1024 + 40 * z, np.int16)
        write_dicom(root / "stage_2_train" / f"{image}.dcm", stored, patient_id=patients[image],
                    study_uid=study[patients[image]], series_uid=study[patients[image]] + ".9",
                    position=5.0 * z)
        rows += [(f"{image}_{k}", v) for k, v in labs.items()]
    rows.append(rows[0])  # the real CSV has exact duplicate rows
    rows += list(extra_rows)
    pd.DataFrame(rows, columns=["ID", "Label"]).to_csv(root / "stage_2_train.csv", index=False)
    return labels


def test_rsna(tmp_path):
    labels = _rsna(tmp_path)
    write_png(tmp_path / "masks" / "ID_a2.png", np.zeros((8, 8), np.uint8))
    adapter = get_adapter("rsna")
    df = adapter.read_manifest(tmp_path)
    _check_schema(df, RSNA_ICH)
    assert list(df["id"]) == ["ID_a1", "ID_a2", "ID_b1"]
    assert list(df["path"]) == [f"stage_2_train/{i}.dcm" for i in df["id"]]
    assert list(df["patient_id"]) == ["ID_pa", "ID_pa", "ID_pb"]
    assert list(df["study_id"]) == ["1.2.3.1", "1.2.3.1", "1.2.3.2"]
    assert list(df["series_id"]) == ["1.2.3.1.9", "1.2.3.1.9", "1.2.3.2.9"]
    assert list(df["slice"]) == [-1, -1, -1]
    assert list(df["position"]) == [0.0, 5.0, 10.0]
    assert list(df["mask_path"]) == ["", "masks/ID_a2.png", ""]
    for _, row in df.iterrows():
        assert [row[k] for k in RSNA_ICH] == [labels[row["id"]][k] for k in RSNA_ICH]
    assert df.attrs["task"] == "multi-label" and df.attrs["quarantine"] == []
    image = adapter.load(df.iloc[1], tmp_path, None)
    assert image.shape == (8, 8, 3) and image.dtype == np.float32
    # stored 1064 - 1024 = 40 HU: the middle of the brain window
    np.testing.assert_allclose(image[0, 0], transforms.apply_windows(np.array([[40.0]]))[0, 0])
    assert adapter.channels(None) == 3 and adapter.channels("brain") == 1
    assert get_adapter("rsna").manifest_channels(df, "brain,bone") == 2


def test_rsna_unreadable_image_is_quarantined(tmp_path):
    _rsna(tmp_path)
    (tmp_path / "stage_2_train" / "ID_b1.dcm").write_bytes(b"not a dicom at all")
    df = get_adapter("rsna").read_manifest(tmp_path)
    assert list(df["id"]) == ["ID_a1", "ID_a2"]
    [entry] = df.attrs["quarantine"]
    assert entry["path"] == "stage_2_train/ID_b1.dcm" and "DICOM" in entry["reason"]
    with pytest.raises(ValueError, match="ID_b1.dcm"):
        get_adapter("rsna").read_manifest(tmp_path, strict="true")


# --------------------------------------------------------------------------------------- cq500
def test_cq500(tmp_path):
    reads = pd.DataFrame({"name": ["CQ500-CT-0", "CQ500-CT-7", "CQ500-CT-9"], "Category": "B1"})
    codes = ["ICH", "IPH", "IVH", "SDH", "EDH", "SAH", "Fracture"]
    votes = {  # scan 0: 2 of 3 say ICH+SDH; scan 7: only 1 reader says ICH
        "R1": [[1, 0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 1, 0], [0] * 7],
        "R2": [[1, 0, 0, 1, 0, 0, 0], [0] * 7, [0] * 7],
        "R3": [[0] * 7, [0] * 7, [0] * 7],
    }
    for reader, marks in votes.items():
        for j, code in enumerate(codes):
            reads[f"{reader}:{code}"] = [m[j] for m in marks]
    reads.to_csv(tmp_path / "reads.csv", index=False)
    series = {
        "CQ500CT0 CQ500CT0/Unknown Study/CT PLAIN THIN": 12,
        "CQ500CT0 CQ500CT0/Unknown Study/CT 5mm": 3,
        "CQ500CT0 CQ500CT0/Unknown Study/CT BONE": 3,
        "CQ500CT7 CQ500CT7/Unknown Study/CT 5mm": 2,
    }
    for folder, n in series.items():
        uid = "1.9." + str(abs(hash(folder)) % 10_000)
        for i in range(n):
            write_dicom(tmp_path / folder / f"CT{i:06d}.dcm", np.full((6, 6), 1024, np.int16),
                        patient_id="CQ500-CT-x", series_uid=uid, position=float(i))
    adapter = get_adapter("cq500")
    df = adapter.read_manifest(tmp_path)
    _check_schema(df, RSNA_ICH)
    assert len(df) == 20
    scan0 = df[df["patient_id"] == "CQ500-CT-0"]
    assert (scan0["any"] == 1).all() and (scan0["subdural"] == 1).all()
    assert (scan0[["epidural", "intraparenchymal", "intraventricular", "subarachnoid"]] == 0).all().all()
    scan7 = df[df["patient_id"] == "CQ500-CT-7"]
    assert (scan7[list(RSNA_ICH)] == 0).all().all()  # one reader of three is not a majority
    assert scan0["series_id"].nunique() == 3
    assert df.attrs["quarantine"] == [{"path": "CQ500-CT-9", "reason": "no DICOM folder found for this scan"}]
    assert df["path"].iloc[0].startswith("CQ500CT0 CQ500CT0/Unknown Study/")
    one = adapter.read_manifest(tmp_path, series="one", min_slices="2")
    # thinnest non-bone series with >= 2 slices per scan: the 5 mm ones
    assert sorted(one["path"].str.split("/").str[2].unique()) == ["CT 5mm"]
    assert len(one) == 5
    image = adapter.load(df.iloc[0], tmp_path, "brain")
    assert image.shape == (6, 6, 1)


# ----------------------------------------------------------------------------------- physionet
def test_physionet(tmp_path):
    vol = np.full((6, 6, 4), -1000, np.int16)
    vol[:, :, 2] = 40
    write_nifti(tmp_path / "ct_scans" / "049.nii", vol)
    write_nifti(tmp_path / "masks" / "049.nii", (vol > 0).astype(np.uint8))
    write_nifti(tmp_path / "ct_scans" / "050.nii", vol[:, :, :2])
    rows = []
    for patient, n in ((49, 4), (50, 3), (59, 2)):  # 050 has only 2 slices; 059 has no volume
        for s in range(1, n + 1):
            hem = int(patient == 49 and s == 3)
            rows.append({"PatientNumber": patient, "SliceNumber": s, "Intraventricular": 0,
                         "Intraparenchymal": hem, "Subarachnoid": 0, "Epidural": 0, "Subdural": 0,
                         "No_Hemorrhage": 1 - hem, "Fracture_Yes_No": 0})
    pd.DataFrame(rows).to_csv(tmp_path / "hemorrhage_diagnosis_raw_ct.csv", index=False)
    adapter = get_adapter("physionet")
    df = adapter.read_manifest(tmp_path)
    _check_schema(df, RSNA_ICH)
    assert list(df["id"]) == ["049_000", "049_001", "049_002", "049_003", "050_000", "050_001"]
    assert list(df["slice"]) == [0, 1, 2, 3, 0, 1]
    hit = df[df["id"] == "049_002"].iloc[0]
    assert hit["any"] == 1 and hit["intraparenchymal"] == 1 and hit["subdural"] == 0
    assert df["any"].sum() == 1
    assert hit["mask_path"] == "masks/049.nii"
    assert df[df["patient_id"] == "050"]["mask_path"].eq("").all()
    reasons = [q["reason"] for q in df.attrs["quarantine"]]
    assert any("SliceNumber 3 is beyond the 2 slices" in r for r in reasons)
    assert any("does not exist" in r for r in reasons)
    image = adapter.load(hit, tmp_path, "brain")
    np.testing.assert_allclose(image, 0.5)  # 40 HU in the 40/80 window
    assert adapter.load(df.iloc[0], tmp_path, "brain").max() == 0.0


# --------------------------------------------------------------------------------------- cxr14
def test_cxr14(tmp_path):
    entries = [
        ("00000001_000.png", "Cardiomegaly|Effusion", 0, 1),
        ("00000001_001.png", "No Finding", 1, 1),
        ("00000002_000.png", "Hernia", 0, 2),
        ("00000003_000.png", "Mass", 0, 3),  # not downloaded
    ]
    pd.DataFrame(entries, columns=["Image Index", "Finding Labels", "Follow-up #", "Patient ID"]).assign(
        **{"Patient Age": 50, "Patient Gender": "M", "View Position": "PA"}
    ).to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    write_png(tmp_path / "images_001" / "images" / "00000001_000.png", np.full((8, 8), 255, np.uint8))
    write_png(tmp_path / "images_001" / "images" / "00000001_001.png", np.zeros((8, 8), np.uint8))
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 51, 255
    write_png(tmp_path / "images_001" / "images" / "00000002_000.png", rgba)
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n")
    adapter = get_adapter("cxr14")
    df = adapter.read_manifest(tmp_path)
    _check_schema(df, CXR14)
    assert list(df["id"]) == ["00000001_000", "00000001_001", "00000002_000"]
    assert list(df["patient_id"]) == ["1", "1", "2"]
    assert list(df["split"]) == ["train", "train", "test"]
    assert df.loc[0, "Cardiomegaly"] == 1 and df.loc[0, "Effusion"] == 1 and df.loc[0, CXR14].sum() == 2
    assert df.loc[1, CXR14].sum() == 0 and df.loc[2, "Hernia"] == 1
    assert df.attrs["quarantine"][0]["path"] == "images/00000003_000.png"
    np.testing.assert_allclose(adapter.load(df.iloc[0], tmp_path, None), 1.0)
    rgba_image = adapter.load(df.iloc[2], tmp_path, None)
    assert rgba_image.shape == (8, 8, 1)
    np.testing.assert_allclose(rgba_image, 0.2, atol=1 / 255)


# ------------------------------------------------------------------------------------ medmnist
def test_medmnist_real_pneumoniamnist(shared_data):
    adapter = get_adapter("medmnist")
    folder = shared_data / "medmnist"
    df = adapter.read_manifest(folder, name="pneumoniamnist")
    _check_schema(df, ("normal", "pneumonia"))
    counts = df.groupby("split")["pneumonia"].agg(["size", "sum"])
    # the published official split (shared/data/README.md)
    assert counts.loc["train"].tolist() == [4708, 3494]
    assert counts.loc["val"].tolist() == [524, 389]
    assert counts.loc["test"].tolist() == [624, 390]
    assert (df["normal"] + df["pneumonia"] == 1).all()
    assert df["path"].unique().tolist() == ["pneumoniamnist.npz"]
    assert get_adapter("medmnist").manifest_task(df) == "binary"
    assert get_adapter("medmnist").manifest_labels(df) == ("normal", "pneumonia")
    with np.load(folder / "pneumoniamnist.npz") as npz:
        first_val = npz["val_images"][0]
        first_test_label = int(npz["test_labels"][0, 0])
    row = df[df["id"] == "val_0"].iloc[0]
    assert row["slice"] == 4708
    image = adapter.load(row, folder, None)
    assert image.shape == (28, 28, 1) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 0], first_val / 255.0)
    assert df[df["id"] == "test_0"].iloc[0]["pneumonia"] == first_test_label
    # the .npz path itself is accepted as data_dir
    assert len(adapter.read_manifest(folder / "pneumoniamnist.npz")) == len(df)


def test_medmnist_multilabel_and_colour(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 14)).astype(np.uint8)
    np.savez(tmp_path / "chestmnist_64.npz", **arrays)
    df = get_adapter("medmnist").read_manifest(tmp_path)
    assert df.attrs["task"] == "multi-label" and df.attrs["channels"] == 3
    assert df.attrs["labels"][0] == "atelectasis" and len(df.attrs["labels"]) == 14
    np.testing.assert_array_equal(df[list(df.attrs["labels"])].to_numpy()[3], arrays["val_labels"][0])
    image = get_adapter("medmnist").load(df.iloc[5], tmp_path, None)
    np.testing.assert_allclose(image, arrays["test_images"][1] / 255.0)
    assert get_adapter("medmnist").manifest_channels(df) == 3


# -------------------------------------------------------------------------------------- folder
def test_folder(tmp_path):
    for i in range(2):
        write_png(tmp_path / "normal" / f"n{i}.png", np.full((8, 8), 10, np.uint8))
    write_png(tmp_path / "stone" / "case1" / "s0.png", np.full((8, 8), 200, np.uint8))
    write_png(tmp_path / "stone" / "s1.jpg", np.full((8, 8, 3), 100, np.uint8))
    write_png(tmp_path / "masks" / "stone" / "case1" / "s0.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "masks" / "n0.png", np.zeros((8, 8), np.uint8))
    adapter = get_adapter("folder")
    df = adapter.read_manifest(tmp_path)
    _check_schema(df, ("normal", "stone"))
    assert df.attrs["task"] == "binary"
    assert list(df["path"]) == ["normal/n0.png", "normal/n1.png", "stone/case1/s0.png", "stone/s1.jpg"]
    assert list(df["stone"]) == [0, 0, 1, 1] and list(df["normal"]) == [1, 1, 0, 0]
    assert list(df["mask_path"]) == ["masks/n0.png", "", "masks/stone/case1/s0.png", ""]
    assert get_adapter("folder").manifest_labels(df) == ("normal", "stone")
    image = adapter.load(df.iloc[3], tmp_path, None)
    assert image.shape == (8, 8, 1)
    np.testing.assert_allclose(image, 100 / 255, atol=2 / 255)  # JPEG is lossy
    ordered = adapter.read_manifest(tmp_path, labels="stone,normal")
    assert ordered.attrs["labels"] == ("stone", "normal")
    grouped = adapter.read_manifest(tmp_path, patient_pattern=r"^[^/]+/(?:(case\d+)/|)")
    assert grouped["patient_id"].iloc[2] == "case1"


# ----------------------------------------------------------------------------------------- csv
def test_csv_multilabel_and_multiclass(tmp_path):
    for i in range(3):
        write_png(tmp_path / "img" / f"{i}.png", np.full((4, 4), 50 * i, np.uint8))
    pd.DataFrame({
        "file": ["img/0.png", "img/1.png", "img/2.png"],
        "subject": ["s1", "s1", "s2"],
        "effusion": [1, 0, 0],
        "mass": [0, 0, 1],
        "diagnosis": ["normal", "pneumonia", "normal"],
        "fold": ["train", "train", "test"],
    }).to_csv(tmp_path / "labels.csv", index=False)
    adapter = get_adapter("csv")
    df = adapter.read_manifest(tmp_path, path_column="file", label_columns="effusion,mass",
                               patient_column="subject", split_column="fold")
    _check_schema(df, ("effusion", "mass"))
    assert df.attrs["task"] == "multi-label" and df.attrs["ct"] is False
    assert list(df["patient_id"]) == ["s1", "s1", "s2"] and list(df["split"]) == ["train", "train", "test"]
    assert list(df["id"]) == ["img/0", "img/1", "img/2"]
    np.testing.assert_allclose(adapter.load(df.iloc[2], tmp_path, None), 100 / 255)
    mc = adapter.read_manifest(tmp_path, csv="labels.csv", path_column="file", label_column="diagnosis",
                               labels=["pneumonia", "normal"])
    assert mc.attrs["labels"] == ("pneumonia", "normal") and mc.attrs["task"] == "binary"
    assert list(mc["pneumonia"]) == [0, 1, 0] and list(mc["patient_id"]) == list(mc["id"])


def test_csv_with_dicom_paths(tmp_path):
    write_dicom(tmp_path / "a.dcm", np.full((4, 4), 1064, np.int16))
    pd.DataFrame({"path": ["a.dcm"], "bleed": [1]}).to_csv(tmp_path / "t.csv", index=False)
    df = get_adapter("csv").read_manifest(tmp_path, label_columns=["bleed"])
    assert df.attrs["ct"] is True
    assert get_adapter("csv").manifest_channels(df, "brain,bone") == 2
    np.testing.assert_allclose(get_adapter("csv").load(df.iloc[0], tmp_path, "brain"), 0.5)


# ------------------------------------------------------------- the synthetic generators' output
def test_rsna_and_folder_read_the_synthetic_generators(tmp_path):
    from pipelines.datasets.synthetic import write_head_ct, write_kidney_stones

    head = write_head_ct(tmp_path / "head", patients=2, slices=3, size=32, seed=0) or tmp_path / "head"
    df = get_adapter("rsna").read_manifest(head)
    _check_schema(df, RSNA_ICH)
    assert len(df) == 6 and df["patient_id"].nunique() == 2 and df.attrs["quarantine"] == []
    assert df["mask_path"].str.startswith("masks/ID_").all()
    csv_rows = pd.read_csv(head / "stage_2_train.csv")
    any_rows = csv_rows[csv_rows["ID"].str.endswith("_any")]
    expected = dict(zip(any_rows["ID"].str[: -len("_any")], any_rows["Label"]))
    assert dict(zip(df["id"], df["any"])) == expected
    for _, row in df.iterrows():
        image = get_adapter("rsna").load(row, head, None)
        assert image.shape == (32, 32, 3) and 0 <= image.min() and image.max() <= 1
    kidney = write_kidney_stones(tmp_path / "kidney", n=4, size=64, seed=0) or tmp_path / "kidney"
    stones = get_adapter("folder").read_manifest(kidney)
    assert stones.attrs["labels"] == ("normal", "stone")
    has_mask = stones["mask_path"] != ""
    assert (stones.loc[has_mask, "stone"] == 1).all() and has_mask.any()
