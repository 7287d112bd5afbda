"""What every medzoo command line shares: a quiet TensorFlow start-up and early output checks.

* :func:`quiet_tf_startup` hides TensorFlow's C++ start-up lines (``oneDNN custom operations
  are on``, ``Could not find cuda drivers``, ``E0000 ... failed call to cuInit``), which read
  as failures on a machine without a GPU. It must run before TensorFlow is imported: the C++
  side reads ``TF_CPP_MIN_LOG_LEVEL`` once, and some lines are printed while the library
  loads, before any setting applies, so the import itself runs with stderr pointed at
  /dev/null. ``MEDZOO_DEBUG=1`` keeps everything visible.
* :func:`check_writable` says in one sentence, before any heavy work, that an output folder
  cannot be created or written (root ignores permission bits, so it really creates and
  removes a probe file).
* :func:`disk_full_message` is the one sentence for a full disk during prepare or training:
  which folder, and that the same command resumes once space is freed (every file is written
  atomically, so nothing half-written is left to trip the resumed run).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

from pipelines.fs import is_disk_full

__all__ = ["OutputError", "check_writable", "debug", "disk_full_message", "is_disk_full",
           "quiet_tf_startup"]


class OutputError(ValueError):
    """An output folder cannot be created or written."""


def debug() -> bool:
    """True when ``MEDZOO_DEBUG`` asks for tracebacks and TensorFlow's own log lines."""
    return os.environ.get("MEDZOO_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def quiet_tf_startup() -> None:
    """Silence TensorFlow's C++ and absl start-up logging (unless ``MEDZOO_DEBUG`` is set)."""
    if debug() or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    saved = None
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
    except OSError:  # no real stderr (embedded interpreters): leave it alone
        saved = None
    try:
        import tensorflow as tf  # noqa: F401  (loads the C++ library while stderr is muted)
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    tf.get_logger().setLevel("ERROR")


def check_writable(path, flag: str) -> Path:
    """Prove that folder ``path`` can be created (if absent) and written, leaving no trace.

    The nearest existing ancestor must be a folder; a probe folder is made and removed in it
    (root ignores permission bits, so only a real write tells). Raises :class:`OutputError`
    with one sentence naming ``flag`` and the folder.
    """
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputError(
            f"{flag} {folder} cannot be created because {existing} is a file; pass a folder "
            "you can write to."
        )
    probe = existing / f".medzoo-write-test-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        (probe / "probe").write_bytes(b"")
        (probe / "probe").unlink()
        probe.rmdir()
    except OSError as err:
        reason = (err.strerror or type(err).__name__).lower()
        raise OutputError(
            f"{flag} {folder} cannot be written ({reason}); pass a folder you can write to."
        ) from None
    return folder


def disk_full_message(error: BaseException, folder) -> str:
    """One sentence for a full disk: the folder it happened in (the file the error names, else
    ``folder``), and that the same command resumes once space is freed."""
    name = getattr(error, "filename", None)
    where = Path(os.fsdecode(name)).parent if name else Path(folder)
    return (f"The disk holding {where} is full (no space left on device); free some space and "
            "run the same command again: it resumes from what was finished.")
