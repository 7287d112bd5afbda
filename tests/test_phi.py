"""No patient data in any output: identifying strings are planted in every text header field of
the DICOMs, in the path components (``<PatientID>/<StudyUID>/<SOPUID>.dcm``) and in extra CSV
columns; prepare, train, export, evaluate (through the serving signatures) and explain then run
on them, and every byte they write or print is searched. The expected count is zero."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np

from tests.conftest import ROOT

PLANTED = ("Doe^Jane", "MRN123456", "19700101")
TEXT_VRS = ("PN", "LO", "SH", "LT", "ST", "UT", "UC")
# pixel-describing fields a reader must trust stay valid; everything else textual is planted
KEEP = {"RescaleType", "PhotometricInterpretation", "Modality"}
TINY = '{"stem": 8, "stages": [[8, 1], [8, 1]], "head": 16}'


def _plant_everything(ds, k: int) -> int:
    """Every public text field of groups 0008-0040 -> a planted string; returns how many."""
    from pydicom.datadict import DicomDictionary, keyword_for_tag

    planted = 0
    for tag, entry in DicomDictionary.items():
        vr, keyword = entry[0], keyword_for_tag(tag)
        if not keyword or keyword in KEEP or (tag >> 16) not in (0x08, 0x10, 0x20, 0x32, 0x38, 0x40):
            continue
        if vr in TEXT_VRS and entry[1] == "1":
            setattr(ds, keyword, f"{PLANTED[k % 3]} {PLANTED[(k + 1) % 3]}"[:16]
                    if vr in ("SH",) else " ".join(PLANTED))
            planted += 1
        elif vr == "DA" and entry[1] == "1":
            setattr(ds, keyword, "19700101")
            planted += 1
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", f"MRN123456{k}", "19700101"
    return planted


def _write_data(root: Path, patients: int = 6, slices: int = 2, size: int = 32) -> tuple[Path, list]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    rows, files = [], []
    for p in range(patients):
        study = f"1.2.19700101.{p}"  # a birth date inside a UID
        for s in range(slices):
            sop = f"Doe^Jane-MRN123456-{p}-{s}"
            rel = f"MRN123456{p}/{study}/{sop}.dcm"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
            planted = _plant_everything(ds, p)
            ds.Modality, ds.SamplesPerPixel, ds.PhotometricInterpretation = "CT", 1, "MONOCHROME2"
            ds.Rows = ds.Columns = size
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            hu = rng.normal(40 if (p + s) % 2 else 0, 30, (size, size)) + 1024
            ds.PixelData = np.clip(hu, 0, 4000).astype(np.int16).tobytes()
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
            rows.append([rel, f"MRN123456{p}", (p + s) % 2, p % 2, "Doe^Jane", "19700101"])
    assert planted > 100  # every public text field of the patient/study/series groups
    bad = root / "MRN123456X" / "1.2.19700101.9" / "Doe^Jane-broken.dcm"  # goes to quarantine
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"DICM" + b"\x00" * 64)
    rows.append([bad.relative_to(root).as_posix(), "MRN123456X", 0, 1, "Doe^Jane", "19700101"])
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "mrn", "bleed", "mass", "name", "birth_date"])
        writer.writerows(rows)
    return root, files


def _train_main():
    spec = importlib.util.spec_from_file_location("medzoo_train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _hits(blob: bytes) -> dict:
    low = blob.lower()
    return {s: low.count(s.lower().encode()) for s in PLANTED if s.lower().encode() in low}


def test_no_planted_identifier_reaches_any_output(tmp_path, capfd, monkeypatch):
    from pipelines.prepare import main as prepare_main
    from zoo.evaluate import main as evaluate_main
    from zoo.explain import main as explain_main

    data, files = _write_data(tmp_path / "data")
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    cache = out / "cache"
    assert prepare_main(["--dataset", "csv", "--data-dir", str(data), "--out", str(cache),
                         "--image-size", "32", "--val-fraction", "0.34", "--test-fraction",
                         "0.34", "--option", "label_columns=bleed,mass",
                         "--option", "patient_column=mrn", "--quiet"]) == 0
    assert (cache / "quarantine.csv").read_text().count("\n") == 2  # the broken file, by key
    assert _train_main()(["--cache-dir", str(cache), "--dataset", "csv", "--model", "ichnet_small",
                          "--model-kwargs", TINY, "--image-size", "32", "--batch-size", "2",
                          "--epochs", "1", "--steps-per-epoch", "2", "--bn-calibration-batches",
                          "1", "--output-dir", str(out / "run"), "--export-dir",
                          str(out / "exports"), "--quiet"]) == 0
    version = out / "exports" / "ichnet_small" / "1"
    assert (version / "saved_model.pb").is_file()
    assert evaluate_main(["--model", str(version), "--cache", str(cache), "--dataset", "csv",
                          "--data-dir", str(data), "--split", "test", "--through", "serving",
                          "--bootstrap", "10", "--out", str(out / "eval"), "--no-card"]) == 0
    assert explain_main(["--model", str(version), "--image", str(files[0]),
                         "--out", str(out / "explain")]) == 0
    captured = capfd.readouterr()

    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) > 20 and any(p.suffix == ".tfrecord" for p in written)
    hits = {str(p.relative_to(out)): h for p in written if (h := _hits(p.read_bytes()))}
    hits.update({str(p.relative_to(out)) + " (name)": h for p in out.rglob("*")
                 if (h := _hits(p.name.encode()))})
    for stream in ("out", "err"):
        if h := _hits(getattr(captured, stream).encode()):
            hits[f"captured std{stream}"] = h
    assert hits == {}, hits
    assert _hits((data / "labels.csv").read_bytes()) and _hits(files[0].read_bytes())  # it finds


def test_a_data_root_named_after_the_patient_reaches_no_run_cache_or_export_file(tmp_path, capfd):
    """``--data-dir .../Doe^Jane_MRN123456/``: the run, the cache and the export record a digest
    of the folder's path, never the path, in their bytes and their file names (issue 22)."""
    from PIL import Image

    data = tmp_path / "Doe^Jane_MRN123456"
    rng = np.random.default_rng(0)
    for cls in ("normal", "lesion"):
        (data / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 40), np.uint8)).save(data / cls / f"{i}.png")
    out = tmp_path / "out"
    argv = ["--dataset", "folder", "--data-dir", str(data), "--cache-dir", str(out / "cache"),
            "--model", "ichnet_small", "--model-kwargs", TINY, "--image-size", "32",
            "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "2",
            "--bn-calibration-batches", "1", "--output-dir", str(out / "run"), "--export-dir",
            str(out / "exports"), "--quiet"]
    assert _train_main()(argv) == 0
    assert (out / "exports" / "ichnet_small" / "1" / "assets.extra" / "config.yaml").is_file()
    captured = capfd.readouterr()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {"config.yaml", "dataset.json", "manifest.csv"} <= {p.name for p in written}
    hits = {str(p.relative_to(out)): h for p in written if (h := _hits(p.read_bytes()))}
    hits.update({str(p.relative_to(out)) + " (name)": h for p in out.rglob("*")
                 if (h := _hits(p.name.encode()))})
    for stream in ("out", "err"):
        if h := _hits(getattr(captured, stream).encode()):
            hits[f"captured std{stream}"] = h
    assert hits == {}, hits
    from pipelines.manifest import data_dir_id

    assert data_dir_id(data) in (out / "run" / "config.yaml").read_text()
    # the same command resumes: the recorded digest matches the path given again
    assert _train_main()(argv) == 0
