"""Bad user input: each case is one DataError sentence that names the file and the problem."""

import os

import numpy as np
import pandas as pd
import pytest
from pipeline_files import write_dicom, write_nifti, write_png
from pydicom.data import get_testdata_file

from pipelines import dicom, nifti
from pipelines.datasets import get_adapter
from pipelines.manifest import DataError, safe_join, validate_manifest

ADAPTERS = ("rsna", "cq500", "physionet", "cxr14", "medmnist", "folder", "csv")


def _one_sentence(error: DataError, *names):
    text = str(error)
    assert "\n" not in text and text.endswith(".")
    for name in names:
        assert str(name) in text, (name, text)
    return text


@pytest.mark.parametrize("name", ADAPTERS)
def test_missing_directory(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        get_adapter(name).read_manifest(missing)
    text = _one_sentence(info.value, missing)
    assert "does not exist" in text


def test_data_dir_that_is_a_file(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(DataError, match="is a file, not a directory"):
        get_adapter("folder").read_manifest(path)


# ------------------------------------------------------------------- CSV columns and labels
def test_rsna_csv_with_unknown_columns(tmp_path):
    (tmp_path / "stage_2_train").mkdir()
    pd.DataFrame({"image": ["ID_a_any"], "target": [1]}).to_csv(tmp_path / "stage_2_train.csv", index=False)
    with pytest.raises(DataError) as info:
        get_adapter("rsna").read_manifest(tmp_path)
    text = _one_sentence(info.value, "stage_2_train.csv", "'ID'", "'Label'")
    assert "it has 'image', 'target'" in text


def test_rsna_unknown_subtype_and_bad_label(tmp_path):
    rows = [("ID_a_any", 0), ("ID_a_subdurall", 1)]
    pd.DataFrame(rows, columns=["ID", "Label"]).to_csv(tmp_path / "stage_2_train.csv", index=False)
    with pytest.raises(DataError) as info:
        get_adapter("rsna").read_manifest(tmp_path)
    _one_sentence(info.value, "stage_2_train.csv", "'subdurall'", "did you mean 'subdural'")
    pd.DataFrame([("ID_a_any", 2)], columns=["ID", "Label"]).to_csv(tmp_path / "stage_2_train.csv", index=False)
    with pytest.raises(DataError, match="Label must be 0 or 1 but one row has 2"):
        get_adapter("rsna").read_manifest(tmp_path)


def test_cq500_missing_reader_columns(tmp_path):
    pd.DataFrame({"name": ["CQ500-CT-0"], "R1:ICH": [1]}).to_csv(tmp_path / "reads.csv", index=False)
    with pytest.raises(DataError) as info:
        get_adapter("cq500").read_manifest(tmp_path)
    _one_sentence(info.value, "reads.csv", "missing reader column(s)", "R1:IPH", "R1:SDH")


def test_cxr14_unknown_finding(tmp_path):
    write_png(tmp_path / "images" / "1.png", np.zeros((4, 4), np.uint8))
    pd.DataFrame({"Image Index": ["1.png"], "Finding Labels": ["Cardiomegally"], "Patient ID": [1]}).to_csv(
        tmp_path / "Data_Entry_2017.csv", index=False
    )
    with pytest.raises(DataError) as info:
        get_adapter("cxr14").read_manifest(tmp_path)
    _one_sentence(info.value, "Data_Entry_2017.csv", "'Cardiomegally'", "did you mean 'Cardiomegaly'")


def test_csv_unknown_column_and_label(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    pd.DataFrame({"path": ["a.png"], "diagnosis": ["pneumonai"], "effusion": [3]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    adapter = get_adapter("csv")
    with pytest.raises(DataError) as info:
        adapter.read_manifest(tmp_path, label_columns="efusion")
    _one_sentence(info.value, "t.csv", "no label column 'efusion'", "did you mean 'effusion'")
    with pytest.raises(DataError) as info:
        adapter.read_manifest(tmp_path, label_columns="effusion")
    _one_sentence(info.value, "t.csv", "'effusion' must hold 0 or 1 but has 3")
    with pytest.raises(DataError) as info:
        adapter.read_manifest(tmp_path, label_column="diagnosis", labels="normal,pneumonia")
    _one_sentence(info.value, "t.csv", "label 'pneumonai'", "did you mean 'pneumonia'")
    with pytest.raises(DataError) as info:
        adapter.read_manifest(tmp_path, path_column="file", label_columns="effusion")
    _one_sentence(info.value, "t.csv", "no path column 'file'")
    with pytest.raises(DataError, match="needs label_columns"):
        adapter.read_manifest(tmp_path)


def test_folder_label_without_folder(tmp_path):
    write_png(tmp_path / "normal" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError) as info:
        get_adapter("folder").read_manifest(tmp_path, labels="normal,stone")
    _one_sentence(info.value, tmp_path, "no folder for class 'stone'")


# ------------------------------------------------------------------------------ broken files
def test_dicom_without_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "nopix.dcm", np.zeros((4, 4)), pixels=False)
    with pytest.raises(DataError) as info:
        dicom.read_hu(path)
    _one_sentence(info.value, "nopix.dcm", "has no pixel data")
    assert info.value.path == str(path)
    # through an adapter's load, as prepare calls it
    row = {"path": "nopix.dcm", "slice": -1}
    with pytest.raises(DataError, match="nopix.dcm: DICOM file has no pixel data"):
        get_adapter("rsna").load(row, tmp_path, None)


def test_truncated_dicom_pixel_data(tmp_path):
    src = get_testdata_file("CT_small.dcm")
    data = open(src, "rb").read()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) - 5000])
    with pytest.raises(DataError) as info:
        dicom.read_hu(path)
    _one_sentence(info.value, "cut.dcm", "truncated")


def test_truncated_dicom_header(tmp_path):
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    path = tmp_path / "head.dcm"
    path.write_bytes(data[:300])
    with pytest.raises(DataError) as info:
        dicom.read_hu(path)
    text = _one_sentence(info.value, "head.dcm")
    assert "truncated" in text or "no pixel data" in text or "cannot be read" in text


def test_not_a_dicom_and_missing_file(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("hello, this is text")
    with pytest.raises(DataError) as info:
        dicom.read_hu(path)
    _one_sentence(info.value, "notes.dcm")
    with pytest.raises(DataError, match="gone.dcm: DICOM file does not exist"):
        dicom.read_header_safe(tmp_path / "gone.dcm")


def test_truncated_png_and_nifti_and_npz(tmp_path):
    png = write_png(tmp_path / "x" / "a.png", np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))
    png.write_bytes(png.read_bytes()[:200])
    with pytest.raises(DataError) as info:
        get_adapter("folder").load({"path": "x/a.png"}, tmp_path, None)
    _one_sentence(info.value, "a.png", "truncated or corrupt")
    nii = write_nifti(tmp_path / "v.nii", np.ones((8, 8, 4), np.int16))
    nii.write_bytes(nii.read_bytes()[:400])
    with pytest.raises(DataError) as info:
        nifti.read_slice(nii, 3)
    _one_sentence(info.value, "v.nii", "truncated or corrupt")
    npz = tmp_path / "m.npz"
    npz.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError) as info:
        get_adapter("medmnist").read_manifest(npz)
    _one_sentence(info.value, "m.npz", "truncated or corrupt")


def test_nifti_of_wrong_rank(tmp_path):
    write_nifti(tmp_path / "ct_scans" / "049.nii", np.zeros((8, 8), np.int16))
    pd.DataFrame([{"PatientNumber": 49, "SliceNumber": 1, "Intraventricular": 0, "Intraparenchymal": 0,
                   "Subarachnoid": 0, "Epidural": 0, "Subdural": 0, "No_Hemorrhage": 1}]).to_csv(
        tmp_path / "hemorrhage_diagnosis_raw_ct.csv", index=False)
    with pytest.raises(DataError) as info:
        get_adapter("physionet").read_manifest(tmp_path, strict=True)
    _one_sentence(info.value, "049.nii", "2 dimension(s)", "expected a 3-D volume")
    with pytest.raises(DataError, match="049.nii: NIfTI has 2 dimension"):
        get_adapter("physionet").load({"path": "ct_scans/049.nii", "slice": 0}, tmp_path, None)


# ---------------------------------------------------------------------- escaping the data root
def test_path_escaping_the_data_root(tmp_path):
    root = tmp_path / "data"
    write_png(tmp_path / "outside.png", np.zeros((4, 4), np.uint8))
    write_png(root / "inside.png", np.zeros((4, 4), np.uint8))
    for bad in ("../outside.png", str(tmp_path / "outside.png")):
        pd.DataFrame({"path": ["inside.png", bad], "y": [0, 1]}).to_csv(root / "t.csv", index=False)
        with pytest.raises(DataError) as info:
            get_adapter("csv").read_manifest(root, label_columns="y")
        _one_sentence(info.value, bad)
    with pytest.raises(DataError, match="escapes the data root"):
        get_adapter("folder").load({"path": "../outside.png"}, root, None)
    with pytest.raises(DataError, match="escapes the data root"):
        get_adapter("rsna").load({"path": "../../etc/passwd", "slice": -1}, root, None)


def test_symlink_escaping_the_data_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_png(tmp_path / "secret.png", np.zeros((4, 4), np.uint8))
    os.symlink(tmp_path / "secret.png", root / "link.png")
    with pytest.raises(DataError, match="link.png: image path escapes the data root"):
        safe_join(root, "link.png")


def test_validate_manifest_rejects_escaping_and_bad_values():
    base = {"id": ["a"], "path": ["x.png"], "slice": [-1], "patient_id": ["p"], "study_id": ["s"],
            "series_id": ["s"], "y": [1]}
    validate_manifest(pd.DataFrame(base), ["y"])
    with pytest.raises(DataError, match=r"\.\./x.png: manifest path must be POSIX and relative"):
        validate_manifest(pd.DataFrame({**base, "path": ["../x.png"]}), ["y"])
    with pytest.raises(DataError, match="label column 'y' must hold 0 or 1 but has 2"):
        validate_manifest(pd.DataFrame({**base, "y": [2]}), ["y"])
    with pytest.raises(DataError, match="lacks column"):
        validate_manifest(pd.DataFrame(base).drop(columns="series_id"), ["y"])
    with pytest.raises(DataError, match="split column has"):
        validate_manifest(pd.DataFrame({**base, "split": ["training"]}), ["y"])
