"""Synthetic phantoms written in the public datasets' on-disk formats, and the ``synthetic`` adapter.

``write_head_ct(out_dir)`` writes a small head-CT dataset laid out exactly like the RSNA
Intracranial Hemorrhage Detection challenge::

    out_dir/
      stage_2_train.csv            ID,Label  rows  ID_<image>_<subtype>,0|1  (Kaggle order)
      stage_2_train/ID_<image>.dcm CT slices (pydicom), stored values + RescaleIntercept = HU
      masks/ID_<image>.png         lesion mask per slice (0/255; blank when negative)
      synthetic.json               generator parameters and label counts (written last)

so the ``rsna`` adapter reads it as it reads the real data. The phantom and the haemorrhage
subtypes are drawn by :mod:`pipelines.phantoms`. Each patient is a contiguous run of axial slices
from the skull base to near the vertex, sampled more sparsely than a real 5 mm study; a
haemorrhage spans several neighbouring slices. Headers vary by patient like a multi-scanner
collection: unsigned 12-bit (``BitsStored`` 12, ``PixelRepresentation`` 0) or signed 16-bit
storage (both with ``RescaleIntercept`` -1024), single or multi-valued ``WindowCenter`` /
``WindowWidth``, field of view. UIDs are valid DICOM UIDs under the ``2.25`` root derived from
the seed; ``PatientID`` is a fake ``ID_xxxxxxxx``; nothing comes from a real person.

``write_kidney_stones(out_dir)`` writes abdominal slices with small calcified stones in the
``folder`` layout (``normal/*.png``, ``stone/*.png``, 8-bit, abdomen window 40/400) plus
``masks/stone/*.png``.

``ensure_head_ct(data_dir=None)`` generates the head-CT phantom into ``data/synthetic-head-ct``
(under the current directory) once, atomically, and reuses it afterwards.

As a dataset adapter (``get_adapter("synthetic")``) this module is the ``rsna`` adapter on that
folder, with a ``mask_path`` column added.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipelines import phantoms
from pipelines.datasets.base import Adapter, get_adapter, register_adapter
from pipelines.fs import pid_alive
from pipelines.labels import RSNA_ICH

LABELS = RSNA_ICH
TASK = "multi-label"

# the order of the six rows per image in the Kaggle stage_2_train.csv
KAGGLE_ORDER = (
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
    "any",
)
DEFAULT_DIR = Path("data") / "synthetic-head-ct"
MARKER = "synthetic.json"
GENERATOR_VERSION = 1

# Defaults of the main job (``python train.py``): 150 patients x 8 slices = 1200 slices at
# 256 x 256 (~160 MB), about half with haemorrhage, each subtype on 9-18 % of the slices. Many
# patients with few slices each, so a small CNN cannot learn the patients instead of the blood.
HEAD_CT_DEFAULTS = {"patients": 150, "slices": 8, "size": 256, "seed": 0}

ENCODINGS = ("uint16", "int16")
RESCALE_INTERCEPT = -1024.0
SLICE_THICKNESS_MM = 5.0
ABDOMEN_WINDOW = (40.0, 400.0)


# --------------------------------------------------------------------------------------------
# head CT, RSNA layout


def _uid(seed: int, *parts) -> str:
    """A valid, deterministic DICOM UID under the 2.25 (UUID-derived) root."""
    digest = hashlib.sha256(repr(("medzoo-synthetic", seed, *parts)).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _empty_out_dir(out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"Output folder {out} is not empty; pass a new or empty folder.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _encode(hu: np.ndarray, encoding: str) -> tuple[np.ndarray, dict]:
    """HU -> stored pixel values and the pixel-module attributes that decode them back."""
    stored = np.rint(hu.astype(np.float64) - RESCALE_INTERCEPT)
    if encoding == "uint16":  # what most RSNA slices use: 12 bits stored, unsigned
        return np.clip(stored, 0, 4095).astype(np.uint16), dict(
            BitsStored=12, HighBit=11, PixelRepresentation=0
        )
    if encoding == "int16":  # signed; outside the scan circle stays at -2000 HU
        return np.clip(stored, -32768, 32767).astype(np.int16), dict(
            BitsStored=16, HighBit=15, PixelRepresentation=1
        )
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}.")


def _write_dicom(path: Path, stored: np.ndarray, pixel_attrs: dict, header: dict) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = header["SOPInstanceUID"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality = "CT"
    ds.Manufacturer = "medzoo synthetic phantom"
    ds.StudyDescription = "Synthetic head CT phantom (not patient data)"
    ds.BodyPartExamined = "HEAD"
    ds.KVP = 120
    for key, value in header.items():
        setattr(ds, key, value)
    rows, cols = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    for key, value in pixel_attrs.items():
        setattr(ds, key, value)
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1.0
    ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").save(path)


def _hex_ids(rng: np.random.Generator, n: int, digits: int, taken: set) -> list[str]:
    out = []
    while len(out) < n:
        value = f"{int(rng.integers(0, 16**digits)):0{digits}x}"
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out


def _write_head_patient(out: Path, rng: np.random.Generator, p_index: int, *, seed: int,
                        slices: int, size: int, p_normal: float, encodings, patient_id: str,
                        image_ids) -> list:
    """One phantom patient's slices: DICOM files and mask PNGs. ``image_ids(n)`` draws the
    slices' ids (from the dataset's one id stream, so ids stay unique across patients).
    Returns the rows ``[(image id, {subtype: 0/1}), ...]``."""
    patient = phantoms.sample_head_patient(rng, n_slices=slices, p_normal=p_normal)
    encoding = encodings[int(rng.integers(len(encodings)))]
    multi_window = bool(rng.random() < 0.5)
    z0_mm = float(rng.uniform(-60.0, 40.0))
    coverage_mm = float(rng.uniform(110.0, 130.0))
    table_y = float(rng.uniform(-20.0, 20.0))
    names = [f"ID_{i}" for i in image_ids(slices)]
    study_uid = _uid(seed, p_index, "study")
    series_uid = _uid(seed, p_index, "series")
    spacing = patient.fov_mm / size
    step = coverage_mm / max(slices - 1, 1)
    rows = []
    for k, z in enumerate(phantoms.slice_heights(patient, slices)):
        hu, masks = phantoms.render_head_slice(patient, float(z), size, rng)
        stored, pixel_attrs = _encode(hu, encoding)
        z_mm = round(z0_mm + k * step, 3)
        header = dict(
            PatientID=f"ID_{patient_id}",
            PatientName=f"Phantom^Head{p_index:04d}",
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=series_uid,
            SOPInstanceUID=_uid(seed, p_index, "image", k),
            StudyID=f"{p_index + 1}",
            SeriesNumber=1,
            InstanceNumber=k + 1,
            ImagePositionPatient=[
                round(-patient.fov_mm / 2, 3),
                round(-patient.fov_mm / 2 + table_y, 3),
                z_mm,
            ],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            SliceLocation=z_mm,
            SliceThickness=SLICE_THICKNESS_MM,
            PixelSpacing=[round(spacing, 6), round(spacing, 6)],
            WindowCenter=[40, 40] if multi_window else 40,
            WindowWidth=[80, 80] if multi_window else 80,
        )
        name = names[k]
        _write_dicom(out / "stage_2_train" / f"{name}.dcm", stored, pixel_attrs, header)
        union = np.zeros(hu.shape, dtype=bool)
        for m in masks.values():
            union |= m
        _write_png(out / "masks" / f"{name}.png", union.astype(np.uint8) * 255)
        labels = {s: int(s in masks) for s in phantoms.SUBTYPES}
        labels["any"] = int(bool(masks))
        rows.append((name, labels))
    return rows


def _write_kaggle_labels(out: Path, rows, seed: int) -> None:
    """stage_2_train.csv: the Kaggle file lists images in no particular order, six rows each."""
    order = np.random.default_rng([seed, 2]).permutation(len(rows))
    lines = ["ID,Label"]
    for i in order:
        name, labels = rows[i]
        lines.extend(f"{name}_{s},{labels[s]}" for s in KAGGLE_ORDER)
    (out / "stage_2_train.csv").write_text("\n".join(lines) + "\n")


def write_head_ct(
    out_dir,
    *,
    patients: int = HEAD_CT_DEFAULTS["patients"],
    slices: int = HEAD_CT_DEFAULTS["slices"],
    size: int = HEAD_CT_DEFAULTS["size"],
    seed: int = 0,
    p_normal: float = 0.3,
    encodings=ENCODINGS,
) -> Path:
    """Write a synthetic head-CT dataset in the RSNA layout into ``out_dir`` (new or empty).

    ``patients`` x ``slices`` DICOM slices of ``size`` x ``size`` pixels; ``p_normal`` is the
    chance that a patient has no haemorrhage at all; ``encodings`` the storage variants drawn
    per patient (``"uint16"``: 12-bit unsigned, ``"int16"``: 16-bit signed). The same arguments
    give byte-identical pixel data. Returns ``out_dir`` as a Path.
    """
    patients = _check_positive_int("patients", patients)
    slices = _check_positive_int("slices", slices)
    size = _check_positive_int("size", size, minimum=32)
    seed = _check_positive_int("seed", seed, minimum=0)
    if not 0.0 <= float(p_normal) <= 1.0:
        raise ValueError(f"p_normal must be a probability in [0, 1], got {p_normal!r}.")
    encodings = tuple(encodings)
    for enc in encodings:
        if enc not in ENCODINGS:
            raise ValueError(f"encodings must be drawn from {ENCODINGS}, got {enc!r}.")
    if not encodings:
        raise ValueError(f"encodings must name at least one of {ENCODINGS}.")
    out = _empty_out_dir(out_dir)
    (out / "stage_2_train").mkdir()
    (out / "masks").mkdir()

    id_rng = np.random.default_rng([seed, 1])
    taken: set = set()
    patient_ids = _hex_ids(id_rng, patients, 8, taken)
    rows = []  # (image id, {subtype: 0/1})
    children = np.random.SeedSequence(seed).spawn(patients)
    for p_index, child in enumerate(children):
        rows += _write_head_patient(
            out, np.random.default_rng(child), p_index, seed=seed, slices=slices, size=size,
            p_normal=p_normal, encodings=encodings, patient_id=patient_ids[p_index],
            image_ids=lambda n: _hex_ids(id_rng, n, 9, taken),
        )
    _write_kaggle_labels(out, rows, seed)

    counts = {s: int(sum(r[1][s] for r in rows)) for s in LABELS}
    info = {
        "generator": "medzoo synthetic head CT",
        "version": GENERATOR_VERSION,
        "layout": "rsna",
        "params": {
            "patients": patients,
            "slices": slices,
            "size": size,
            "seed": seed,
            "p_normal": float(p_normal),
            "encodings": list(encodings),
        },
        "images": len(rows),
        "positives": counts,
        "labels": list(LABELS),
    }
    (out / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    return out


# --------------------------------------------------------------------------------------------
# kidney stones, folder layout


def write_kidney_stones(
    out_dir,
    *,
    n: int = 200,
    size: int = 128,
    seed: int = 0,
    stone_size: tuple[int, int] = (2, 5),
    stone_fraction: float = 0.5,
    max_stones: int = 3,
) -> Path:
    """Write ``n`` abdominal slices in the folder layout; about ``stone_fraction`` carry stones.

    Files: ``normal/kidney_<i>.png`` and ``stone/kidney_<i>.png`` (8-bit grey, HU windowed with
    the abdomen window 40/400), ``masks/stone/kidney_<i>.png`` (0/255 stone mask) and
    ``synthetic.json``. Stones are 1..``max_stones`` discs whose diameters in pixels are drawn
    from ``stone_size`` = (min, max), inclusive. Returns ``out_dir`` as a Path.
    """
    n = _check_positive_int("n", n)
    size = _check_positive_int("size", size, minimum=32)
    seed = _check_positive_int("seed", seed, minimum=0)
    max_stones = _check_positive_int("max_stones", max_stones)
    if not 0.0 <= float(stone_fraction) <= 1.0:
        raise ValueError(f"stone_fraction must be in [0, 1], got {stone_fraction!r}.")
    try:
        lo, hi = (int(v) for v in stone_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"stone_size must be a (min, max) pair of pixel diameters, got {stone_size!r}."
        ) from None
    if lo < 1 or hi < lo or hi > size // 8:
        raise ValueError(
            f"stone_size must satisfy 1 <= min <= max <= size/8 ({size // 8}), got {stone_size!r}."
        )
    out = _empty_out_dir(out_dir)
    for sub in ("normal", "stone", "masks/stone"):
        (out / sub).mkdir(parents=True)
    center, width = ABDOMEN_WINDOW
    n_stone = int(round(n * float(stone_fraction)))
    is_stone = np.zeros(n, dtype=bool)
    is_stone[np.random.default_rng([seed, 1]).permutation(n)[:n_stone]] = True
    children = np.random.SeedSequence(seed).spawn(n)
    for i, child in enumerate(children):
        rng = np.random.default_rng(child)
        count = int(rng.integers(1, max_stones + 1)) if is_stone[i] else 0
        hu, mask = phantoms.render_abdomen_slice(rng, size, stones=count, stone_size=(lo, hi))
        img = np.rint(np.clip((hu - (center - width / 2)) / width, 0, 1) * 255).astype(np.uint8)
        name = f"kidney_{i:05d}.png"
        cls = "stone" if is_stone[i] else "normal"
        _write_png(out / cls / name, img)
        if is_stone[i]:
            _write_png(out / "masks" / "stone" / name, mask.astype(np.uint8) * 255)
    info = {
        "generator": "medzoo synthetic kidney stones",
        "version": GENERATOR_VERSION,
        "layout": "folder",
        "params": {
            "n": n,
            "size": size,
            "seed": seed,
            "stone_size": [lo, hi],
            "stone_fraction": float(stone_fraction),
            "max_stones": max_stones,
        },
        "classes": {"normal": int(n - n_stone), "stone": n_stone},
        "window": {"center": center, "width": width},
    }
    (out / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    return out


# --------------------------------------------------------------------------------------------
# generate-once default folder


def default_dir() -> Path:
    """``data/synthetic-head-ct`` under the current working directory."""
    return Path.cwd() / DEFAULT_DIR


def _remove_stale_temps(target: Path) -> None:
    """Remove temp folders left by generations that were killed (their process is gone)."""
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            pid = int(tmp.name.split(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_head_ct(data_dir=None, **kwargs) -> Path:
    """The synthetic head-CT folder, generated on first use and reused afterwards.

    ``data_dir`` defaults to ``data/synthetic-head-ct`` under the current directory. ``kwargs``
    go to :func:`write_head_ct`. Generation writes into a temporary sibling folder and renames it
    into place when complete (``synthetic.json`` written last), so an interrupted run never
    leaves a folder that looks finished, and two processes racing on it both end with the same
    complete folder. An existing folder made with different explicit ``kwargs`` is an error.
    """
    target = Path(data_dir) if data_dir is not None else default_dir()
    target = target.absolute()
    params = {**HEAD_CT_DEFAULTS, **kwargs}
    if target.exists():
        return _check_existing(target, kwargs)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        write_head_ct(tmp, **params)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MARKER).is_file():  # not a lost race: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
            return _check_existing(target, kwargs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _check_existing(target: Path, kwargs: dict) -> Path:
    marker = target / MARKER
    if not marker.is_file():
        raise ValueError(
            f"{target} exists but is not a finished synthetic head-CT dataset (no {MARKER}); "
            "delete it or pass another --data-dir."
        )
    try:
        info = json.loads(marker.read_text())
        made_with = info["params"]
    except (ValueError, KeyError):
        raise ValueError(f"{marker} is unreadable; delete {target} to regenerate it.") from None
    if info.get("layout", "rsna") != "rsna":
        raise ValueError(
            f"{target} holds a synthetic {info.get('layout')!r} dataset, not the "
            "head-CT phantom; pass another --data-dir."
        )
    clash = {
        k: (made_with.get(k), v)
        for k, v in kwargs.items()
        if k in made_with and _norm(made_with.get(k)) != _norm(v)
    }
    if clash:
        detail = ", ".join(f"{k}={old!r} (asked {new!r})" for k, (old, new) in clash.items())
        raise ValueError(
            f"{target} was generated with {detail}; delete it to regenerate, or "
            "pass another --data-dir."
        )
    return target


def _norm(value):
    return list(value) if isinstance(value, (tuple, list)) else value


# --------------------------------------------------------------------------------------------
# the ``synthetic`` adapter: the rsna adapter on the generated folder


@register_adapter
class Synthetic(Adapter):
    """The head-CT phantom in the RSNA layout, generated into ``default_data_dir`` if absent."""

    name = "synthetic"
    labels = LABELS
    task = TASK
    ct = True
    default_data_dir = str(DEFAULT_DIR)  # relative to the current directory

    def ensure_data(self, data_dir=None) -> Path:
        """The head-CT folder (``data_dir`` or ``default_data_dir``), generated on first use."""
        return ensure_head_ct(data_dir)

    def option_names(self):
        """The rsna adapter's options, which :meth:`read_manifest` passes on to it."""
        return get_adapter("rsna").option_names()

    def read_manifest(self, data_dir=None, **options):
        """Manifest of the synthetic head CT (generated first if absent), with ``mask_path``."""
        root = self.ensure_data(data_dir)
        df = get_adapter("rsna").read_manifest(root, **options)
        if "mask_path" not in df.columns:
            df["mask_path"] = [
                "masks/" + Path(p).with_suffix(".png").name for p in df["path"].astype(str)
            ]
        return df

    def load(self, row, data_dir, windows=None):
        """Windowed slice (H, W, C) float32 in [0, 1]: the rsna adapter's ``load``."""
        root = Path(data_dir) if data_dir is not None else default_dir()
        return get_adapter("rsna").load(row, root, windows)
