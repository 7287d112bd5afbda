"""MedNIST (B. J. Erickson, Mayo Clinic; the MONAI tutorials' set): ``MedNIST/<class>/*.jpeg``.

58,954 grey 64x64 JPEGs in six classes (AbdomenCT, BreastMRI, CXR, ChestCT, Hand, HeadCT),
gathered from TCIA, the RSNA Bone Age Challenge and NIH ChestX-ray14. Licence CC BY-SA 4.0.

``data_dir`` may be any of::

    MedNIST.tar.gz                 the published tarball, read in place (never extracted)
    <folder>/MedNIST.tar.gz        a folder holding the tarball
    <folder>/MedNIST/<class>/      the extracted layout (or the MedNIST folder itself)

The tarball is read once per process into memory (about 60 MB of JPEG bytes), so decoding a
row is a dictionary lookup and a JPEG decode, not a seek through a gzip stream. Rows: ``path``
= ``MedNIST/<class>/<NNNNNN>.jpeg``, ``id`` = ``<class>/<NNNNNN>``. There is no official split
and there are no patient ids: each image is its own ``patient_id``. Labels are the class
folders in sorted order, one-hot (multi-class); ``classes=`` picks a subset.
"""

from __future__ import annotations

import io
import tarfile
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np

from pipelines.bounded import check_inflated_size
from pipelines.datasets import base
from pipelines.datasets.base import Adapter, register_adapter
from pipelines.manifest import DataError, safe_join

TARBALL = "MedNIST.tar.gz"
ROOT = "MedNIST"
CLASSES = ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT")


def _locate(data_dir) -> tuple[str, Path]:
    """("tar", tarball) or ("dir", folder holding the class folders)."""
    path = Path(data_dir)
    if path.is_file():
        if not path.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise DataError(path, "is not the MedNIST tarball (MedNIST.tar.gz) nor a folder")
        return "tar", path
    if not path.is_dir():
        raise DataError(path, "MedNIST data directory does not exist; pass the folder or MedNIST.tar.gz")
    if (path / ROOT).is_dir():
        return "dir", path / ROOT
    if (path / TARBALL).is_file():
        return "tar", path / TARBALL
    if any((path / c).is_dir() for c in CLASSES):
        return "dir", path
    raise DataError(path, f"holds neither {ROOT}/<class>/*.jpeg nor {TARBALL}")


@lru_cache(maxsize=1)
def _tar_members(tarball: str, mtime: float) -> dict[str, bytes]:
    """``{"<class>/<file>": jpeg bytes}`` for every image in the tarball (read once)."""
    out, inflated = {}, 0
    compressed = Path(tarball).stat().st_size
    try:
        with tarfile.open(tarball, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                inflated += member.size  # checked before the member is read
                check_inflated_size(tarball, "the tar archive", inflated, compressed)
                parts = PurePosixPath(member.name).parts
                if len(parts) < 2 or not parts[-1].lower().endswith(base.IMAGE_SUFFIXES):
                    continue
                if parts[-1].startswith("."):
                    continue
                out["/".join(parts[-2:])] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(tarball, f"cannot be read as a tar archive ({type(exc).__name__}); the file is truncated or corrupt") from None
    if not out:
        raise DataError(tarball, "holds no images in MedNIST/<class>/ folders")
    return out


def tar_images(tarball) -> dict[str, bytes]:
    path = Path(tarball).resolve()
    return _tar_members(str(path), path.stat().st_mtime)


def _decode_jpeg(data: bytes, where) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            grey = img.convert("L")
            out = np.asarray(grey, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(where, f"image data is truncated or corrupt ({type(exc).__name__})") from None
    return (out.astype(np.float32) / 255.0)[..., None]


@register_adapter
class Mednist(Adapter):
    """MedNIST, from the extracted folders or straight from ``MedNIST.tar.gz``."""

    name = "mednist"
    accepts_file = True
    labels = CLASSES
    task = "multi-class"

    def read_manifest(self, data_dir, *, classes=None):
        kind, where = _locate(data_dir)
        if kind == "tar":
            keys = sorted(tar_images(where))
        else:
            keys = sorted(
                p.relative_to(where).as_posix()
                for p in base.list_images(where)
                if len(p.relative_to(where).parts) == 2
            )
        found = sorted({k.split("/")[0] for k in keys})
        names = base.as_list(classes) or found
        unknown = [n for n in names if n not in found]
        if unknown:
            raise DataError(where, f"has no class {unknown[0]!r}; classes are {', '.join(found)}")
        rows = []
        for key in keys:
            cls = key.split("/")[0]
            if cls not in names:
                continue
            ident = key.rsplit(".", 1)[0]
            rows.append({"id": ident, "path": f"{ROOT}/{key}", "slice": -1, "patient_id": ident,
                         "study_id": ident, "series_id": ident, "__class__": cls})
        if not rows:
            raise DataError(where, "holds no MedNIST images")
        return base.class_manifest(rows, names, self.task)

    def load(self, row, data_dir, windows=None) -> np.ndarray:
        rel = str(base.field(row, "path"))
        kind, where = _locate(data_dir)
        if kind == "tar":
            key = "/".join(PurePosixPath(rel).parts[-2:])
            images = tar_images(where)
            if key not in images:
                raise DataError(rel, f"is not in {where}")
            return _decode_jpeg(images[key], rel)
        folder_root = where.parent if where.name == ROOT else where
        path = safe_join(folder_root, rel) if where.name == ROOT else safe_join(where, "/".join(PurePosixPath(rel).parts[-2:]))
        if not path.is_file():
            raise DataError(path, "image file does not exist")
        return _decode_jpeg(path.read_bytes(), path)
