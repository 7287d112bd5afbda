"""The synthetic phantoms: RSNA / folder layouts, real DICOM headers, HU of the lesions, masks."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from pipelines import phantoms
from pipelines.datasets import synthetic
from pipelines.datasets.synthetic import (
    KAGGLE_ORDER,
    ensure_head_ct,
    write_head_ct,
    write_kidney_stones,
)

SMALL = dict(patients=3, slices=4, size=64)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    return write_head_ct(tmp_path_factory.mktemp("syn") / "head", seed=0, **SMALL)


def _raw_hu(path):
    """HU from the stored bytes and the header, without pydicom's pixel decoding."""
    ds = pydicom.dcmread(path)
    dtype = np.int16 if ds.PixelRepresentation == 1 else np.uint16
    stored = np.frombuffer(ds.PixelData, dtype=dtype).reshape(ds.Rows, ds.Columns)
    return stored.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _labels(root):
    csv = pd.read_csv(root / "stage_2_train.csv")
    parts = csv["ID"].str.rsplit("_", n=1, expand=True)
    return csv.assign(image=parts[0], subtype=parts[1]).pivot(
        index="image", columns="subtype", values="Label"
    )


def test_rsna_layout_file_counts_and_csv_order(head):
    dcms = sorted((head / "stage_2_train").glob("*.dcm"))
    masks = sorted((head / "masks").glob("*.png"))
    assert len(dcms) == len(masks) == 3 * 4
    assert [p.stem for p in dcms] == [p.stem for p in masks]
    lines = (head / "stage_2_train.csv").read_text().splitlines()
    assert lines[0] == "ID,Label" and len(lines) == 1 + 12 * 6
    first = [line.split(",")[0] for line in lines[1:7]]
    image = first[0].rsplit("_", 1)[0]
    assert first == [f"{image}_{s}" for s in KAGGLE_ORDER]
    assert image.startswith("ID_") and len(image) == len("ID_") + 9
    info = json.loads((head / "synthetic.json").read_text())
    assert info["images"] == 12 and info["params"]["patients"] == 3
    wide = _labels(head)
    assert info["positives"] == {k: int(wide[k].sum()) for k in synthetic.LABELS}


def test_labels_match_zoo_labels():
    from pipelines.labels import RSNA_ICH

    assert synthetic.LABELS == RSNA_ICH
    assert set(KAGGLE_ORDER) == set(RSNA_ICH) and KAGGLE_ORDER[-1] == "any"


def test_dicom_headers_are_valid_ct(head):
    patients, studies = {}, set()
    for path in sorted((head / "stage_2_train").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert ds.Modality == "CT" and ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.Rows == ds.Columns == 64 and ds.BitsAllocated == 16
        assert (ds.BitsStored, ds.PixelRepresentation) in ((12, 0), (16, 1))
        assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
        assert ds.PatientID.startswith("ID_") and len(ds.PatientID) == 11
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert uid.is_valid and uid.startswith("2.25.")
        assert len(ds.ImagePositionPatient) == 3 and list(ds.ImageOrientationPatient) == [
            1,
            0,
            0,
            0,
            1,
            0,
        ]
        assert float(ds.PixelSpacing[0]) * 64 == pytest.approx(205, abs=35)
        assert float(ds.SliceThickness) == 5.0
        wc = ds.WindowCenter
        assert (list(wc) if isinstance(wc, pydicom.multival.MultiValue) else [wc])[0] == 40
        # pydicom's own decoding agrees with the raw bytes
        hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
        np.testing.assert_array_equal(hu, _raw_hu(path))
        patients.setdefault(ds.PatientID, []).append(float(ds.ImagePositionPatient[2]))
        studies.add(ds.StudyInstanceUID)
    assert len(patients) == 3 and len(studies) == 3
    for zs in patients.values():  # 4 distinct, increasing slice positions per patient
        assert len(set(zs)) == 4


def test_same_seed_same_pixels_other_seed_differs(head, tmp_path):
    again = write_head_ct(tmp_path / "again", seed=0, **SMALL)
    other = write_head_ct(tmp_path / "other", seed=1, **SMALL)
    assert (again / "stage_2_train.csv").read_bytes() == (head / "stage_2_train.csv").read_bytes()
    for path in sorted((head / "stage_2_train").glob("*.dcm")):
        a, b = pydicom.dcmread(path), pydicom.dcmread(again / "stage_2_train" / path.name)
        assert a.PixelData == b.PixelData and a.PatientID == b.PatientID
        assert a.SOPInstanceUID == b.SOPInstanceUID
        m1 = np.asarray(Image.open(head / "masks" / f"{path.stem}.png"))
        m2 = np.asarray(Image.open(again / "masks" / f"{path.stem}.png"))
        np.testing.assert_array_equal(m1, m2)
    assert (other / "stage_2_train.csv").read_bytes() != (head / "stage_2_train.csv").read_bytes()


def test_phantom_tissues_and_lesion_hu_through_the_masks(tmp_path):
    """At 128 px: every subtype appears; blood inside the masks is acute (50-90 HU)."""
    root = write_head_ct(tmp_path / "h", patients=6, slices=5, size=128, seed=4, p_normal=0.0)
    wide = _labels(root)
    blood, brain_like = [], []
    for image, row in wide.iterrows():
        hu = _raw_hu(root / "stage_2_train" / f"{image}.dcm")
        mask = np.asarray(Image.open(root / "masks" / f"{image}.png"))
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask.any()) == bool(row["any"])  # blank mask exactly when negative
        if mask.any():
            blood.append(hu[mask == 255])
        # air around the head, bone of the skull
        assert hu[0, 0] <= -1000 and hu.max() > 700
        centre = hu[54:74, 54:74][mask[54:74, 54:74] == 0]
        brain_like.append(centre)
    assert any(wide[s].sum() for s in phantoms.SUBTYPES)
    blood = np.concatenate(blood)
    assert 50 <= np.median(blood) <= 90
    assert np.percentile(blood, 10) > 40 and np.percentile(blood, 90) < 100
    centre = np.concatenate(brain_like)
    assert -5 <= np.median(centre) <= 45  # parenchyma and CSF, not blood or bone
    # the RSNA label rule: any = max of the subtypes
    assert (wide["any"] == wide[list(phantoms.SUBTYPES)].max(axis=1)).all()


def test_every_subtype_is_drawn_where_it_belongs():
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(200):
        p = phantoms.sample_head_patient(rng, n_slices=5, p_normal=0.0)
        for z in phantoms.slice_heights(p, 5):
            hu, masks = phantoms.render_head_slice(p, float(z), 96, rng)
            for kind, m in masks.items():
                seen.setdefault(kind, []).append(float(np.median(hu[m])))
        if len(seen) == 5 and min(len(v) for v in seen.values()) >= 3:
            break
    assert set(seen) == set(phantoms.SUBTYPES)
    for kind, medians in seen.items():
        assert 45 <= np.median(medians) <= 90, kind


def test_kidney_stones_folder_layout(tmp_path):
    root = write_kidney_stones(tmp_path / "k", n=6, size=64, seed=0, stone_size=(2, 3))
    normal = sorted((root / "normal").glob("*.png"))
    stone = sorted((root / "stone").glob("*.png"))
    masks = sorted((root / "masks" / "stone").glob("*.png"))
    assert len(normal) == len(stone) == 3
    assert [p.name for p in masks] == [p.name for p in stone]
    for path in normal + stone:
        img = np.asarray(Image.open(path))
        assert img.dtype == np.uint8 and img.shape == (64, 64) and img.max() == 255
    for path in masks:
        m = np.asarray(Image.open(path)) == 255
        img = np.asarray(Image.open(root / "stone" / path.name))
        assert 4 <= m.sum() <= 3 * 9  # 1-3 stones of 2-3 px across
        assert (img[m] == 255).all()  # >= 300 HU saturates the 40/400 window
    again = write_kidney_stones(tmp_path / "k2", n=6, size=64, seed=0, stone_size=(2, 3))
    for path in normal + stone:
        rel = path.relative_to(root)
        assert (again / rel).read_bytes() == path.read_bytes()


def test_stone_diameter_is_controlled():
    rng = np.random.default_rng(1)
    for d in (1, 2, 3, 5):
        _, mask = phantoms.render_abdomen_slice(rng, 96, stones=1, stone_size=(d, d))
        rows, cols = np.nonzero(mask)
        assert rows.max() - rows.min() + 1 == d and cols.max() - cols.min() + 1 == d


def test_bad_arguments_are_one_clear_sentence(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        write_head_ct(tmp_path / "full", **SMALL)
    with pytest.raises(ValueError, match="patients must be an integer"):
        write_head_ct(tmp_path / "a", patients=0)
    with pytest.raises(ValueError, match="encodings"):
        write_head_ct(tmp_path / "b", encodings=("float",), **SMALL)
    with pytest.raises(ValueError, match="stone_size"):
        write_kidney_stones(tmp_path / "c", n=2, size=64, stone_size=(4, 2))


def test_ensure_head_ct_generates_once_then_reuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = ensure_head_ct(**SMALL)
    assert root == tmp_path / "data" / "synthetic-head-ct"
    assert (root / "synthetic.json").is_file()
    assert not list((tmp_path / "data").glob(".synthetic-head-ct.tmp-*"))
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    assert ensure_head_ct() == root  # defaults: reuse whatever is there
    assert ensure_head_ct(**SMALL) == root
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="patients=3"):
        ensure_head_ct(patients=5)
    unfinished = tmp_path / "half"
    (unfinished / "stage_2_train").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a finished synthetic"):
        ensure_head_ct(unfinished)


def _ensure_in_child(path, queue):
    queue.put(str(ensure_head_ct(path, **SMALL)))


def test_ensure_head_ct_interrupted_generation_leaves_nothing_finished(tmp_path, monkeypatch):
    target = tmp_path / "syn"
    real = synthetic.write_head_ct

    def interrupted(out_dir, **kwargs):
        real(out_dir, **kwargs)
        assert target.exists() is False  # everything so far went to the temp folder
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_head_ct", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_head_ct(target, **SMALL)
    assert not target.exists() and not list(tmp_path.glob(".syn.tmp-*"))
    # a temp folder of a SIGKILLed generation (its process gone) is removed by the next one
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".syn.tmp-{dead.pid}-x"
    (stale / "stage_2_train").mkdir(parents=True)
    monkeypatch.setattr(synthetic, "write_head_ct", real)
    assert ensure_head_ct(target, **SMALL) == target.absolute()
    assert not stale.exists() and (target / "synthetic.json").is_file()


def _ensure_in_child(path, queue):
    queue.put(str(ensure_head_ct(path, **SMALL)))


def test_ensure_head_ct_two_processes_racing(tmp_path):
    target = tmp_path / "syn"
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(target, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    results = {queue.get(timeout=5) for _ in range(2)}
    assert results == {str(target.absolute())}
    assert len(list((target / "stage_2_train").glob("*.dcm"))) == 12
    assert not list(tmp_path.glob(".syn.tmp-*"))


def test_rsna_adapter_round_trip(head):
    """The rsna adapter reads the phantom exactly: HU windows, labels and masks line up."""
    from pipelines.datasets import get_adapter

    rsna = get_adapter("rsna")
    df = rsna.read_manifest(head)
    wide = _labels(head)
    assert len(df) == 12 and df["patient_id"].nunique() == 3
    for _, row in df.iterrows():
        path = head / row["path"]
        hu = _raw_hu(path)
        image = rsna.load(row, head, "brain,subdural,bone")
        for ch, (c, w) in enumerate(((40, 80), (80, 200), (600, 2800))):
            np.testing.assert_allclose(
                image[..., ch], np.clip((hu - (c - w / 2)) / w, 0, 1), atol=1e-6
            )
        assert {k: int(row[k]) for k in synthetic.LABELS} == {
            k: int(wide.loc[row["id"], k]) for k in synthetic.LABELS
        }
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert row["patient_id"] == ds.PatientID and row["study_id"] == ds.StudyInstanceUID
        mask = np.asarray(Image.open(head / row["mask_path"]))
        assert mask.shape == image.shape[:2] and bool(mask.any()) == bool(row["any"])
        if mask.any():  # the mask sits on blood: bright in the brain window
            assert np.median(image[..., 0][mask == 255]) > 0.6


def test_synthetic_adapter_delegates_to_rsna(head, tmp_path, monkeypatch):
    from pipelines.datasets import get_adapter

    adapter = get_adapter("synthetic")
    assert adapter.labels == synthetic.LABELS and adapter.task == "multi-label"
    assert adapter.channels("brain,bone") == 2
    df = adapter.read_manifest(head)
    assert df["mask_path"].str.match(r"^masks/ID_[0-9a-f]{9}\.png$").all()
    row = df.iloc[0]
    np.testing.assert_array_equal(
        adapter.load(row, head, None), get_adapter("rsna").load(row, head, None)
    )
    # no data_dir: generated into (then read from) data/synthetic-head-ct under the cwd
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(synthetic, "HEAD_CT_DEFAULTS", {**synthetic.HEAD_CT_DEFAULTS, **SMALL})
    df = adapter.read_manifest()
    assert len(df) == 12 and (tmp_path / "data" / "synthetic-head-ct" / "synthetic.json").is_file()
    assert adapter.load(df.iloc[0], None, "brain").shape == (64, 64, 1)
