"""What both prepare runners share: the per-row decode job, the error, the finished shard.

``writer`` (the driver) builds one :class:`PrepareJob` per manifest row still to decode;
the process pool (``pool``) and the Beam pipeline (``beam``) hand the jobs to
:func:`pipelines.cache.decode.work` and finish each shard with :func:`finish_shard`, so the
two runners write the same cache. This module sits below all of them and imports no
TensorFlow (the decode workers unpickle the jobs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.fs import atomic_write_text, replace

__all__ = ["PrepareError", "PrepareJob", "finish_shard", "strict_message"]


class PrepareError(RuntimeError):
    """A cache could not be prepared (strict mode, changed settings on resume, ...)."""


@dataclass(frozen=True, slots=True)
class PrepareJob:
    """One cache row to decode: the adapter's manifest row and what its record holds.

    Attributes:
        position: the row's index in the run's plan order (the order of the records).
        row: the adapter's manifest row as read (its ``path`` and whatever ``load`` needs).
        shard: the shard file the record goes to.
        channels: channels of the cached image.
        label: the label values, in the cache's label order.
        example_id: the id stored in the record (a row key when paths are withheld).
        patient_id: the pseudonymised patient id stored in the record.
    """

    position: int
    row: dict
    shard: str
    channels: int
    label: list
    example_id: str
    patient_id: str

    def where(self, hide_paths: bool) -> str:
        """How quarantine.csv and error messages name the row: its row key when paths are
        withheld (they may hold MRNs or names), else its path."""
        return self.example_id if hide_paths else str(self.row.get("path", ""))


def strict_message(path, error) -> str:
    """The --strict stop, one sentence naming the file (or row key) and the fix."""
    return (f"Could not decode {path} ({error}); fix or remove the file, or run without "
            "--strict to quarantine it and go on.")


def finish_shard(handle, tmp: Path, out: Path, progress_dir: Path, shard: str, *, written,
                 bad) -> None:
    """Close, then mark done: the sidecar (ids, quarantine) first, the shard rename last, so a
    shard file that exists is complete and a resumed run can skip it."""
    handle.close()
    marker = {"shard": shard, "ids": written, "quarantine": bad}
    atomic_write_text(progress_dir / f"{shard}.json", json.dumps(marker))
    replace(tmp, out / shard)
