"""The one place that writes files atomically: a temp file beside the target, then a rename.

Every file the project writes for a reader that may look at any moment (a cache's
``dataset.json``, a shard, a run's ``metrics.json`` and ``history.csv``, best weights, a serving
config, a result file) goes through here, so a crash or a full disk leaves the old file or none,
never half of one. ``os.replace`` appears in this module only (a test checks it).

- :func:`atomic_path` yields a temp path beside the target (same folder, so the rename stays on
  one file system; same file name ending, so ``keras`` and ``h5py`` accept it) and renames it over
  the target when the block ends cleanly; on an error the temp file or folder is removed.
- :func:`atomic_write_text`, :func:`atomic_write_bytes` and :func:`atomic_write_json` are the
  one-line forms.
- :func:`replace` is the rename itself, for a temp name a caller already owns (a prepare shard's
  ``.tmp``, a corpus's temp folder).
- :func:`pid_alive` tells whether the owner of a temp file or lock is still running.
- :func:`folder_lock` holds a lock file in a folder (``O_CREAT | O_EXCL``, holding the owner's
  pid and host) for as long as a job writes there, so two jobs never write one folder; a lock
  whose owner died on this host is taken over. A live owner's lock raises :class:`FolderLocked`.
- :func:`is_disk_full` tells a full disk (``ENOSPC``) from other write errors.

Standard library only: prepare's worker processes and ``zoo`` both import it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_FILE", "FolderLocked", "atomic_path", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "folder_lock", "is_disk_full", "pid_alive", "replace", "temp_name"]

LOCK_FILE = ".lock"


def temp_name(path: str | os.PathLike) -> Path:
    """The temp path beside ``path`` that :func:`atomic_path` writes: hidden, owned by this
    process (``.<pid>.tmp-<name>``), and ending as ``path`` ends (``.weights.h5`` stays)."""
    path = Path(path)
    return path.with_name(f".{os.getpid()}.tmp-{path.name}")


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename ``src`` over ``dst`` atomically (POSIX ``rename``; a file or an empty folder)."""
    os.replace(src, dst)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` if the block ends cleanly.

    The caller writes the temp path however it likes (``open``, ``h5py.File``,
    ``model.save_weights``, ``DataFrame.to_csv``). The parent folder is created. On any
    exception, a ``KeyboardInterrupt`` included, the temp file (or folder) is removed and the
    target is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        replace(tmp, path)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, newline: str | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8); returns the path."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; returns the path."""
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists on this host (a temp folder's or a lock's owner)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class FolderLocked(RuntimeError):
    """Another live process holds the folder's lock file (the message names it and the owner)."""


def _lock_owner(lock: Path) -> dict:
    """The owner a lock file records ({"pid", "host"}); {} while it is being written or junk."""
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _take_lock(lock: Path) -> bool:
    """Create ``lock`` exclusively with this process as the owner; False if it exists."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, handle)
    return True


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, job: str = "job") -> Iterator[Path]:
    """Hold ``folder/.lock`` while the block runs; removed when it ends, however it ends.

    The lock file is created with ``O_CREAT | O_EXCL`` (atomic on a local file system) and
    records the owner's pid and host. A lock whose owner is dead on this host (a killed run) is
    taken over; a live owner's, or one from another host, raises :class:`FolderLocked` at once,
    naming the lock file and the owner, rather than two ``job`` runs writing one folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    while not _take_lock(lock):
        owner = _lock_owner(lock)
        pid, host = owner.get("pid"), owner.get("host")
        if isinstance(pid, int) and host == socket.gethostname() and not pid_alive(pid):
            lock.unlink(missing_ok=True)  # its owner died without removing it
            continue
        raise FolderLocked(
            f"{folder} is in use by another {job} (lock file {lock}, owner pid "
            f"{pid if pid is not None else 'unknown'} on {host or 'an unknown host'}); wait for "
            "it to finish, or delete the lock file if that process is gone."
        )
    try:
        yield lock
    finally:
        if _lock_owner(lock).get("pid") == os.getpid():
            lock.unlink(missing_ok=True)


def is_disk_full(error: BaseException | None) -> bool:
    """True when ``error`` (or an error it was raised from) is a full disk: ``ENOSPC`` or
    ``EDQUOT``, or TensorFlow's and HDF5's text for it (their errors carry no errno)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False
