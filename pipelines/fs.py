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

Standard library only: prepare's worker processes and ``zoo`` both import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "pid_alive", "replace", "temp_name"]


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
