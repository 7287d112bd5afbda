"""A tarball of images extracted once, safely, into an ignored folder, for adapters that read folders.

The shared data ships some sets as tarballs (``pbc/pbc-96.tar.gz``, ``lidc-nodules/...``) and is
read in place: never copied into the repository. :func:`extract_once` unpacks one into
``<root>/<archive stem>/`` (``data/extracted/`` by default, which git ignores) the first time it is
asked, and reuses it while the archive's size and modification time are those recorded in the
folder's marker file. The unpacking is guarded like every other compressed input
(:mod:`pipelines.bounded`): only regular files and folders are written, a member naming an
absolute path or ``..`` is refused, and the total inflated size is capped. It goes to a temp
folder that is renamed into place (:func:`pipelines.fs.replace`), so an interrupted run leaves
no half-extracted folder for the next one to trust.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from pipelines.bounded import check_inflated_size
from pipelines.fs import replace
from pipelines.manifest import DataError

__all__ = ["DEFAULT_ROOT", "MARKER", "archive_stem", "extract_once"]

DEFAULT_ROOT = Path("data") / "extracted"
MARKER = ".medzoo-extracted.json"
SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


def archive_stem(archive) -> str:
    """``pbc-96`` for ``.../pbc-96.tar.gz``."""
    name = Path(archive).name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise DataError(archive, f"is not a tar archive (expected one of {', '.join(SUFFIXES)})")


def _stamp(archive: Path) -> dict:
    stat = archive.stat()
    return {"archive": archive.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _current(dest: Path, stamp: dict) -> bool:
    try:
        return json.loads((dest / MARKER).read_text()) == stamp
    except (OSError, ValueError):
        return False


def _member_path(archive: Path, member: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's relative path, None for what is skipped; DataError for a hostile name."""
    rel = PurePosixPath(member.name)
    if rel.is_absolute() or ".." in rel.parts:
        raise DataError(archive, f"member {member.name!r} points outside the archive; "
                                 "the archive is damaged or hostile, so nothing was extracted")
    if not (member.isfile() or member.isdir()):
        return None  # links, devices, fifos: never written
    return rel


def _unpack(archive: Path, tmp: Path) -> None:
    compressed = archive.stat().st_size
    inflated = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                rel = _member_path(archive, member)
                if rel is None or not rel.parts:
                    continue
                target = tmp.joinpath(*rel.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                inflated += member.size
                check_inflated_size(archive, "the tar archive", inflated, compressed)
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 2**20)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(archive, f"cannot be read as a tar archive ({type(exc).__name__}); "
                                 "the file is truncated or corrupt, copy it again") from None


def extract_once(archive, root=DEFAULT_ROOT) -> Path:
    """The folder ``archive`` is extracted into (``root/<stem>``), extracting it if needed."""
    archive = Path(archive)
    if not archive.is_file():
        raise DataError(archive, "archive does not exist; fix the path")
    dest = Path(root) / archive_stem(archive)
    stamp = _stamp(archive)
    if _current(dest, stamp):
        return dest
    tmp = dest.with_name(f".{os.getpid()}.tmp-{dest.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _unpack(archive, tmp)
        (tmp / MARKER).write_text(json.dumps(stamp))
        if dest.exists():
            if _current(dest, stamp):  # another process finished first
                return dest
            shutil.rmtree(dest)  # a stale extraction of an older archive
        replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
