"""Faults around prepare and training: a full disk is one sentence and the same command resumes;
two prepares into one folder never both write it (a lock file, taken over when its owner died)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from pipelines import fs
from tests.conftest import ROOT


def _folder_data(root, per_class: int = 6, size: int = 8):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size), np.uint8)).save(root / cls / f"{i}.png")
    return root


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".part", ".lock"))
                  or ".tmp-" in p.name)


def test_a_full_disk_is_one_sentence_and_the_same_command_resumes(tmp_path, monkeypatch, capsys):
    from pipelines.cache import pool
    from pipelines.prepare import main

    data = _folder_data(tmp_path / "data")
    out = tmp_path / "cache"
    argv = ["--dataset", "folder", "--data-dir", str(data), "--out", str(out), "--image-size", "8",
            "--shard-size", "2", "--quiet"]
    finish = pool.finish_shard
    calls = []

    def full_after_two(handle, tmp, *args, **kwargs):
        calls.append(tmp)
        if len(calls) > 2:
            handle.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(tmp))
        return finish(handle, tmp, *args, **kwargs)

    monkeypatch.setattr(pool, "finish_shard", full_after_two)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"The disk holding {out} is full" in err and "run the same command again" in err
    assert "Traceback" not in err and _leftovers(out) == []
    assert not (out / "dataset.json").exists() and len(list(out.glob("*.tfrecord"))) == 2

    monkeypatch.setattr(pool, "finish_shard", finish)
    assert main(argv) == 0
    from pipelines.cache import read_info

    info = read_info(out)
    assert sum(info["splits"].values()) == 12 and _leftovers(out) == []


def test_train_reports_a_full_disk_in_one_sentence(tmp_path, monkeypatch, capsys):
    import importlib.util

    import tensorflow as tf

    import zoo.training

    spec = importlib.util.spec_from_file_location("medzoo_train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run_dir = tmp_path / "run"
    errors = [OSError(errno.ENOSPC, "No space left on device", os.fspath(run_dir / "history.csv")),
              tf.errors.ResourceExhaustedError(None, None, "write failed: No space left on device")]
    for error in errors:
        def full(cfg, error=error):
            cfg.output_dir = os.fspath(run_dir)
            raise error

        monkeypatch.setattr(zoo.training, "run", full)
        assert module.main(["--dataset", "folder", "--model", "ichnet_small"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"train.py: error: The disk holding {run_dir} is full (no space left on "
                       "device); free some space and run the same command again: it resumes from "
                       "what was finished.")

    def other(cfg):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(zoo.training, "run", other)
    with pytest.raises(OSError):
        module.main(["--dataset", "folder", "--model", "ichnet_small"])


def test_a_lock_of_a_dead_owner_is_taken_over_and_a_live_one_refused(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / fs.LOCK_FILE).write_text(f'{{"pid": {dead.pid}, "host": "{socket.gethostname()}"}}')
    with fs.folder_lock(folder, job="prepare") as lock:
        assert f'"pid": {os.getpid()}' in lock.read_text()
        with pytest.raises(fs.FolderLocked, match=f"lock file {lock}, owner pid {os.getpid()}"):
            with fs.folder_lock(folder, job="prepare"):
                pass
    assert not lock.exists()
    (folder / fs.LOCK_FILE).write_text('{"pid": 1, "host": "another-host"}')  # not ours to judge
    with pytest.raises(fs.FolderLocked, match="owner pid 1 on another-host"):
        with fs.folder_lock(folder, job="prepare"):
            pass


SLOW_PREPARE = """
import sys, time
from pipelines.datasets import register_adapter
from pipelines.datasets.folder import Folder
from pipelines.prepare import main


@register_adapter
class SlowFolder(Folder):
    name = "slowfolder"

    def load(self, row, data_dir, windows=None):
        time.sleep(0.5)
        return super().load(row, data_dir, windows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
"""


def test_two_prepares_into_one_folder_the_second_stops_naming_the_lock(tmp_path):
    """Two real processes 0.5 s apart (the second started once the first holds the lock): the
    first finishes the cache, the second stops at once in one sentence naming the lock file and
    the owner pid, and touches nothing."""
    data = _folder_data(tmp_path / "data", per_class=20)
    script = tmp_path / "slow_prepare.py"
    script.write_text(textwrap.dedent(SLOW_PREPARE))
    out = tmp_path / "cache"
    argv = [sys.executable, str(script), "--dataset", "slowfolder", "--data-dir", str(data), "--out",
            str(out), "--image-size", "8", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / fs.LOCK_FILE).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    second = subprocess.run(argv, env=env, stderr=subprocess.PIPE, text=True, timeout=300)
    first_err = first.communicate(timeout=300)[1]
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second.stderr
    err = second.stderr.strip().splitlines()
    assert len(err) == 1 and f"lock file {out / fs.LOCK_FILE}, owner pid {first.pid}" in err[0], err
    assert (out / "dataset.json").is_file() and not (out / fs.LOCK_FILE).exists()
