"""One sub-folder per class (e.g. the Kaggle kidney CT layout, or the synthetic kidney stones).

::

    data_dir/
      normal/*.png            class "normal" (PNG/JPG/BMP/TIFF; nested folders are searched)
      stone/*.png             class "stone"
      masks/...               optional lesion masks: never a class

Classes are the sub-folder names in sorted order (as ``keras.utils.image_dataset_from_directory``)
unless ``labels=`` (or ``classes=``) gives the order; a named class without a folder, or a
folder that ``labels=`` leaves out, is an error naming it. Labels are one-hot (multi-class;
``task`` is ``binary`` for two classes). Hidden folders and ``masks`` are skipped.

``mask_path``: where a ``masks/`` folder exists, the mask of ``<class>/<rel>.png`` is looked up
at ``masks/<class>/<rel>`` then ``masks/<rel>`` and ``masks/<stem>.png`` (any image suffix);
"" when none. ``patient_id`` defaults to the image id (no grouping information in this
layout); ``patient_pattern=`` (a regular expression with one group, applied to the relative
path) extracts one, e.g. ``patient_pattern=^[^/]+/(P\\d+)_``.

``channels``: images load grey (H, W, 1) by default (``channels=1``); ``channels=3`` keeps
colour (RGB; grey pictures repeated to 3 planes) and ``channels=auto`` picks 3 when any
picture is colour, from the files' headers alone. Choose 3 where colour is signal: fundus
photographs, dermoscopy, microscopy and stained pathology (H&E, blood smears). The rules for
modes, palettes, mixed folders, alpha and CMYK are in :mod:`pipelines.colour`.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipelines import colour
from pipelines.datasets import base
from pipelines.datasets.base import Adapter, register_adapter
from pipelines.manifest import DataError, relative_posix, require_dir

MASKS = "masks"


def _find_mask(root: Path, cls: str, rel_in_class: Path) -> str:
    masks = root / MASKS
    candidates = [masks / cls / rel_in_class, masks / rel_in_class]
    for base_path in list(candidates):
        for suffix in base.IMAGE_SUFFIXES:
            candidates.append(base_path.with_suffix(suffix))
    candidates.append(masks / f"{rel_in_class.stem}.png")
    for candidate in candidates:
        if candidate.is_file():
            return relative_posix(root, candidate)
    return ""


@register_adapter
class Folder(Adapter):
    """One sub-folder per class; labels from the folder names (``df.attrs['labels']``)."""

    name = "folder"
    labels: tuple[str, ...] = ()  # from the folder names; see df.attrs["labels"]
    task = "multi-class"
    path_ids = True  # "<class>/<file name>" -> id: pseudonymised in the cache

    def read_manifest(self, data_dir, *, labels=None, classes=None, patient_pattern=None, channels=1):
        root = require_dir(data_dir, "image folder")
        colour.parse_channels(channels)  # a bad value fails before the folder is walked
        folders = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != MASKS
        )
        if not folders:
            raise DataError(root, "has no class sub-folders; put each class's images in its own folder")
        names = base.as_list(labels) or base.as_list(classes) or folders
        unknown = [n for n in names if n not in folders]
        if unknown:
            raise DataError(root, f"has no folder for class {unknown[0]!r}; class folders are {', '.join(folders)}")
        extra = [f for f in folders if f not in names]
        if extra:
            raise DataError(root / extra[0], f"folder is not among the labels {', '.join(names)}; add it or move it away")
        pattern = re.compile(patient_pattern) if patient_pattern else None
        if pattern is not None and pattern.groups != 1:
            raise ValueError(f"patient_pattern {patient_pattern!r} must have exactly one (group)")
        has_masks = (root / MASKS).is_dir()
        rows = []
        for cls in names:
            files = base.list_images(root / cls)
            if not files:
                raise DataError(root / cls, "class folder holds no PNG/JPG/BMP/TIFF images")
            for path in files:
                rel = relative_posix(root, path)
                ident = rel.rsplit(".", 1)[0]
                patient = ident
                if pattern is not None:
                    match = pattern.search(rel)
                    if not match:
                        raise DataError(path, f"path does not match patient_pattern {patient_pattern!r}")
                    patient = match.group(1) or ident  # an unmatched optional group: own patient
                row = {"id": ident, "path": rel, "slice": -1, "patient_id": patient,
                       "study_id": patient, "series_id": ident, "__class__": cls}
                if has_masks:
                    row["mask_path"] = _find_mask(root, cls, path.relative_to(root / cls))
                rows.append(row)
        channels = colour.resolve_channels(channels, (root / row["path"] for row in rows))
        return base.class_manifest(rows, names, self.task, channels, data_dir=root)
