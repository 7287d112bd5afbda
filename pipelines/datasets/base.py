"""The dataset adapter interface (:class:`Adapter`), its registry, and the shared pieces.

An adapter is a class on :class:`Adapter`, registered with :func:`register_adapter`::

    @register_adapter
    class Kidney(Adapter):  # the Kaggle kidney CT, one folder per class
        name = "kidney"
        labels = ("normal", "stone")
        task = "binary"

        def read_manifest(self, data_dir, **options):
            ...  # -> a DataFrame in the schema of pipelines.manifest

Class attributes are the dataset's facts: ``name`` (the registry key), ``labels``, ``task``,
``ct`` (CT data windowed from Hounsfield units: one channel per window), ``scan_labelled``
(None, or how slice scores become a scan score when the labels belong to whole scans, e.g.
``"max"``), ``label_map`` (RSNA label -> the dataset's own column or finding code, from
:mod:`pipelines.label_maps`, where the adapter renames its columns to the RSNA names) and ``default_data_dir`` (None, or the folder an adapter that makes
its own data generates, see :meth:`Adapter.ensure_data`). The defaults of ``load`` (DICOM and
NIfTI rows -> windows, image rows -> grey) and ``channels`` suit most datasets, so most
adapters override only ``read_manifest``.

Some adapters learn their labels from the data (``folder``, ``csv``, ``medmnist`` files other
than PneumoniaMNIST): the manifest's ``df.attrs`` then holds the truth (``labels``, ``task``,
``channels``, ``ct``). Read them through :meth:`Adapter.manifest_labels`,
:meth:`Adapter.manifest_task`, :meth:`Adapter.manifest_ct` and
:meth:`Adapter.manifest_channels`, which fall back to the class attributes.

Options reach ``read_manifest`` either as Python values or as strings from
``python -m pipelines.prepare --option KEY=VALUE``, ``train.py --option KEY=VALUE`` or a corpus
spec's ``options:``; :func:`as_list`, :func:`as_bool` and :func:`as_int` accept both. The
options an adapter takes are the keyword parameters of its ``read_manifest``
(:meth:`Adapter.option_names`), and :meth:`Adapter.check_options` refuses any other with one
sentence that lists them, before any file is read.

Pictures load grey unless the manifest asks for colour: the ``folder`` and ``csv`` adapters
take ``channels=1|3|auto`` (:mod:`pipelines.colour`), record it in
``df.attrs["channels"]`` and, for colour, in a ``image_channels`` column that
:func:`load_image` reads in the decode workers.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pipelines import colour, dicom, nifti, transforms
from pipelines.formats import IMAGE_SUFFIXES  # noqa: F401  (the one format table; re-exported)
from pipelines.manifest import DataError, safe_join

TASKS = ("multi-label", "multi-class", "binary")
# The manifest column that asks load_image for colour (present only when channels is 3).
CHANNELS_COLUMN = "image_channels"


# ------------------------------------------------------------------------------------- adapter
class Adapter:
    """One public dataset's on-disk layout -> the manifest table, and one row -> pixels."""

    name: str = ""
    labels: tuple[str, ...] = ()
    task: str = "multi-label"
    ct: bool = False
    scan_labelled: str | None = None
    label_map: dict[str, str] | None = None
    default_data_dir: str | None = None
    path_ids: bool = False  # ids come from file paths: the cache stores row keys instead
    accepts_file: bool = False  # data_dir may be one file (a .npz, a tarball), not only a folder

    def read_manifest(self, data_dir, **options):
        """The dataset's manifest (:mod:`pipelines.manifest` schema); options are adapter keywords."""
        raise NotImplementedError(f"{type(self).__name__} must define read_manifest(data_dir, **options)")

    def load(self, row, data_dir, windows=None) -> np.ndarray:
        """One manifest row -> float32 (H, W, C) in [0, 1].

        ``.dcm`` rows: Hounsfield units -> ``windows`` as channels; ``.nii``/``.nii.gz`` rows:
        slice ``row.slice`` (the first when -1) likewise; other files: grey (H, W, 1).
        """
        rel = str(field(row, "path"))
        lower = rel.lower()
        if lower.endswith(".dcm"):
            return load_dicom(row, data_dir, windows)
        if lower.endswith((".nii", ".nii.gz")):
            return nifti.read_windows(safe_join(data_dir, rel), max(row_slice(row), 0), windows)
        return load_image(row, data_dir)

    def option_names(self) -> tuple[str, ...] | None:
        """The options ``read_manifest`` takes: its keyword parameters after ``data_dir``, read
        from its signature; None when it takes any (``**options``)."""
        params = list(inspect.signature(self.read_manifest).parameters.values())[1:]
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))

    def check_options(self, options) -> dict:
        """``options`` as a dict, checked against :meth:`option_names`: an unknown one is a
        ValueError that names it and lists the adapter's options. ``channels=1``, the default
        of the adapters that take ``channels``, is dropped, so an explicit grey cache keeps the
        key (the settings) of a default one."""
        options = dict(options or {})
        known = self.option_names()
        if known is not None:
            for key in options:
                if key not in known:
                    close = difflib.get_close_matches(str(key), known, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    takes = f"its options are {', '.join(known)}" if known else "it takes no options"
                    raise ValueError(f"The {self.name or type(self).__name__} dataset has no option "
                                     f"{key!r}{hint}; {takes}.")
        takes_channels = known is not None and "channels" in known
        if takes_channels and "channels" in options and colour.parse_channels(options["channels"]) == 1:
            del options["channels"]
        return options

    def picture_options(self, channels: int) -> dict:
        """The options that make this adapter's pictures ``channels`` deep: ``{"channels": 3}``
        where ``read_manifest`` takes ``channels`` (folder, csv), else none; so data prepared
        for a colour model (``zoo.evaluate --data-dir``) is read in colour."""
        names = self.option_names()
        takes = names is not None and "channels" in names
        return {"channels": int(channels)} if takes and int(channels) != 1 else {}

    def channels(self, windows=None) -> int:
        """Channels ``load`` returns: one per window for CT data, else 1 (grey)."""
        return ct_channels(windows) if self.ct else 1

    def ensure_data(self, data_dir=None) -> Path:
        """The data folder: ``data_dir``; adapters with a ``default_data_dir`` make it if absent."""
        if data_dir is None:
            raise ValueError(f"The {self.name} dataset needs a data directory; pass --data-dir.")
        return Path(data_dir)

    # facts the adapter learns from the data (df.attrs), else the class attributes
    def manifest_labels(self, df) -> tuple[str, ...]:
        """The label columns of ``df`` (``df.attrs['labels']``, else ``labels``)."""
        return tuple(df.attrs.get("labels") or self.labels)

    def manifest_task(self, df) -> str:
        return df.attrs.get("task") or self.task

    def manifest_ct(self, df) -> bool:
        """Whether the rows are CT windowed from HU (``df.attrs['ct']``, else ``ct``)."""
        return bool(df.attrs.get("ct", self.ct))

    def manifest_channels(self, df, windows=None) -> int:
        """Channels ``load`` returns for this manifest: one per window for CT data, else the
        image channels the adapter recorded (``df.attrs['channels']``), else ``channels()``."""
        if self.manifest_ct(df):
            return len(transforms.parse_windows(windows))
        return int(df.attrs.get("channels") or self.channels(windows))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} adapter {self.name!r}>"


_ADAPTERS: dict[str, Adapter] = {}


def register_adapter(cls):
    """Class decorator: register one instance of ``cls`` under ``cls.name`` (duplicates raise)."""
    adapter = cls()
    name = adapter.name
    if not name or name != name.strip().lower():
        raise ValueError(f"Adapter {cls.__name__} needs a lower-case name, got {name!r}.")
    if adapter.task not in TASKS:
        raise ValueError(f"Adapter {name!r} has task {adapter.task!r}; use one of {', '.join(TASKS)}.")
    if name in _ADAPTERS:
        other = type(_ADAPTERS[name])
        raise ValueError(
            f"A dataset adapter named {name!r} is already registered ({other.__module__}."
            f"{other.__qualname__}); give {cls.__name__} another name."
        )
    _ADAPTERS[name] = adapter
    return cls


def get_adapter(name: str) -> Adapter:
    """The adapter registered as ``name``; ValueError with the close matches for an unknown one."""
    key = str(name).strip().lower()
    if key not in _ADAPTERS:
        known = list_adapters()
        close = difflib.get_close_matches(key, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown dataset {name!r}.{hint} Known datasets: {', '.join(known)}.")
    return _ADAPTERS[key]


def list_adapters(pattern: str | None = None) -> list[str]:
    """Registered adapter names, sorted; ``pattern`` filters with fnmatch (``"c*"``)."""
    names = sorted(_ADAPTERS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


# ------------------------------------------------------------------------------------- options
def as_list(value) -> list[str] | None:
    """None -> None; "a,b" -> ["a", "b"]; a sequence -> list of str."""
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def as_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"option {name}={value!r} is not a yes/no value; use true or false")


def as_int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name}={value!r} is not an integer") from None


def option_channels(options, channels=None) -> dict:
    """``options`` with a separately given ``channels`` (a corpus source's ``channels:``)
    folded in; ValueError when both give it and disagree."""
    options = dict(options or {})
    if channels is not None:
        if "channels" in options and str(options["channels"]) != str(channels):
            raise ValueError(f"channels is given twice ({channels!r} and options: channels "
                             f"{options['channels']!r}); keep one")
        options["channels"] = channels
    return options


def field(row, key, default=None):
    """``row[key]`` for a pandas Series, dict or namedtuple row."""
    if isinstance(row, dict):
        return row.get(key, default)
    try:
        return row[key]
    except (KeyError, IndexError, TypeError):
        return getattr(row, key, default)


def row_slice(row) -> int:
    value = field(row, "slice", -1)
    return -1 if value is None else int(value)


# ------------------------------------------------------------------------------------- headers
def _header_or_error(path: str):
    try:
        return dicom.read_header_safe(path)
    except DataError as exc:
        return exc.problem


def scan_headers(paths: Sequence, workers: int = 1) -> list:
    """``read_header_safe`` for each path: a dict, or the problem (str) for an unreadable file.

    ``workers > 1`` spreads the reads over processes (header reads are ~1 ms each; the RSNA
    training set has ~750k files).
    """
    paths = [str(p) for p in paths]
    workers = max(1, int(workers))
    if workers == 1 or len(paths) < 2000:
        return [_header_or_error(p) for p in paths]
    chunk = max(64, len(paths) // (workers * 16))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_header_or_error, paths, chunksize=chunk))


def class_manifest(rows: list[dict], names: Sequence[str], task: str, channels: int = 1, *,
                   data_dir=None):
    """Rows naming their class in ``"__class__"`` -> a validated manifest with one 0/1 column
    per class name (binary for two classes, else ``task``), for class-per-folder datasets;
    ``channels`` as :func:`with_channels` records it; ``data_dir`` as
    :func:`pipelines.manifest.validate_manifest` reads it (which of two same-named files stays)."""
    import pandas as pd

    from pipelines.manifest import validate_manifest

    df = pd.DataFrame(rows)
    for name in names:
        df[name] = (df["__class__"] == name).astype("int64")
    df = df.drop(columns="__class__")
    df = validate_manifest(df, list(names), task="binary" if len(names) == 2 else task, channels=1,
                           data_dir=data_dir)
    return with_channels(df, channels)


def with_channels(df, channels: int):
    """Record the picture channels of a validated manifest: ``df.attrs["channels"]``, and for
    colour (3) a ``image_channels`` column that :func:`load_image` reads (a grey manifest is
    left exactly as it was)."""
    if int(channels) == 1:
        return df
    if CHANNELS_COLUMN in df.columns:
        raise DataError(None, f"a label or column is named {CHANNELS_COLUMN!r}, which colour "
                              "manifests use; rename it or prepare with channels=1")
    out = df.copy()
    out[CHANNELS_COLUMN] = int(channels)
    out.attrs = {**df.attrs, "channels": int(channels)}
    return out


# ------------------------------------------------------------------------------------- loading
def ct_channels(windows=None) -> int:
    return len(transforms.parse_windows(windows))


def load_dicom(row, data_dir, windows) -> np.ndarray:
    """A DICOM manifest row -> windowed (H, W, C) float32 in [0, 1]."""
    path = safe_join(data_dir, field(row, "path"))
    index = row_slice(row)
    return dicom.read_windows(path, windows, frame=None if index < 0 else index)


def read_image(path, channels: int = 1) -> np.ndarray:
    """An 8/16-bit image file -> (H, W, channels) float32 in [0, 1]; grey by default.

    The decode and channel rule of :mod:`pipelines.preprocessing` (8-bit / 255, 16-bit /
    65535, colour to grey by BT.601 luma on the float values, grey repeated to 3 planes for
    colour, alpha dropped), so the cache reads a picture exactly as the serving signature
    decodes it.
    """
    from pipelines import preprocessing

    return preprocessing.to_channels(preprocessing.read_pixels(path), channels)


def load_image(row, data_dir) -> np.ndarray:
    """A picture row -> float32 (H, W, C): grey, or RGB where the row's ``image_channels``
    says 3 (see :func:`with_channels`)."""
    wanted = field(row, CHANNELS_COLUMN, None)
    channels = 1 if wanted is None or wanted != wanted else int(wanted)  # NaN: a grey row
    return read_image(safe_join(data_dir, field(row, "path")), channels)


def list_images(folder: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden files and folders skipped)."""
    suffixes = tuple(s.lower() for s in suffixes)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(suffixes):
                found.append(Path(root) / name)
    return sorted(found)
