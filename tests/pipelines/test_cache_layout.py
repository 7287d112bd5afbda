"""The cache package's shape: a TensorFlow-free worker side, and the public façade."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_decode_worker_imports_no_tensorflow():
    # what a spawned worker imports: the decode module and, through AdapterRef, the adapters
    done = _python(
        "import sys, pipelines.cache.decode as d, pipelines.cache, pipelines.datasets as ds\n"
        "d.AdapterRef('medmnist').resolve()\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    assert done.returncode == 0, done.stderr


def test_records_is_a_facade_over_pipelines_cache():
    import pipelines.records as records
    from pipelines import cache
    from pipelines.cache import format, reader, writer

    assert records.prepare is writer.prepare is cache.prepare
    assert records.make_dataset is reader.make_dataset is cache.make_dataset
    assert records.read_info is format.read_info and records.shard_files is format.shard_files
    assert records.parse_batch is format.parse_batch
    assert records.PrepareError is writer.PrepareError
    assert set(records.__all__) == {
        "PrepareError", "prepare", "read_info", "make_dataset", "shard_files", "parse_batch"
    }
    # no code of its own: every public name comes from pipelines.cache
    assert all(getattr(records, n).__module__.startswith("pipelines.cache") for n in records.__all__)


def test_prepare_cli_is_thin():
    source = (ROOT / "pipelines" / "prepare.py").read_text()
    assert "tensorflow" not in source and "def prepare" not in source
