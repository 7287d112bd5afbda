"""Small real files for the pipeline tests: DICOM via pydicom, NIfTI via nibabel, PNG via Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

# Identifying values written into test headers so tests can check they never come back out.
PHI_NAME = "Doe^Jane"
PHI_BIRTH = "19700101"


def write_dicom(
    path,
    stored: np.ndarray,
    *,
    patient_id="P1",
    study_uid=None,
    series_uid=None,
    slope=1.0,
    intercept=-1024.0,
    bits_stored=16,
    signed=True,
    photometric="MONOCHROME2",
    position=0.0,
    window=None,
    pixels=True,
    modality="CT",
):
    """Write ``stored`` (H, W) or (N, H, W) integers as a CT DICOM file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = PHI_NAME
    ds.PatientBirthDate = PHI_BIRTH
    ds.PatientSex = "F"
    ds.InstitutionName = "Test Hospital"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.ImagePositionPatient = [0.0, 0.0, float(position)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.InstanceNumber = 1
    stored = np.asarray(stored)
    frames = stored.shape[0] if stored.ndim == 3 else None
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if frames:
        ds.NumberOfFrames = frames
    if pixels:
        dtype = np.int16 if signed else np.uint16
        ds.PixelData = stored.astype(dtype).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path, volume: np.ndarray, affine=None):
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-0.5, 0.5, 5.0, 1.0]) if affine is None else affine  # LAS, like dcm2nii output
    nib.save(nib.Nifti1Image(np.asarray(volume), affine), str(path))
    return path


def write_png(path, array: np.ndarray):
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)
    return path
