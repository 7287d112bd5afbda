"""train.py as users run it: real processes on a tiny synthetic head-CT cache.

Covers MirroredStrategy over two logical CPU devices, two real workers under
MultiWorkerMirroredStrategy (identical weights, only the chief writes and exports, a restarted
cluster resumes from the chief's checkpoint, early stopping votes on every worker), SIGKILL
mid-epoch then resume (same final metrics as an uninterrupted run; with --early-stop, the same
stopping epoch), a worker SIGKILLed mid-epoch (the survivor ends with one
sentence; slow: the restarted cluster ends on the uninterrupted run's weights), and bad flags
that need a strategy to be detected.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.tiny_cache import head_ct_cache

TRAIN = [sys.executable, str(ROOT / "train.py")]
TINY = json.dumps({"stem": 8, "stages": [[8, 1], [8, 1]], "head": 16})


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A 32 px cache of a tiny synthetic head-CT dataset in the RSNA layout (8 patients)."""
    return head_ct_cache(tmp_path_factory.mktemp("ct"))


def _args(cache, out, *extra):
    # ichnet_small cut to two narrow stages: the same code, a fraction of the tracing time
    return ["--cache-dir", str(cache), "--dataset", "synthetic", "--model", "ichnet_small",
            "--model-kwargs", TINY, "--image-size", "32", "--batch-size", "4", "--output-dir", str(out), "--quiet",
            "--bn-calibration-batches", "2", *extra]


def _run(args, cwd, timeout=240, **env):
    proc = subprocess.run(TRAIN + args, cwd=cwd, env=_env(**env), capture_output=True,
                          text=True, timeout=timeout)
    return proc


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _digest(stdout):
    found = re.findall(r"final weights sha256 ([0-9a-f]{64})", stdout)
    assert found, stdout[-2000:]
    return found[-1]


def test_mirrored_two_cpu_devices_trains_and_exports(cache, tmp_path):
    # with the weight average on: its update runs in the cross-replica context of the step
    out = _ok(_run(_args(cache, tmp_path / "run", "--cpu-replicas", "2", "--strategy", "mirrored",
                         "--epochs", "1", "--steps-per-epoch", "3", "--ema", "1", "--export-dir",
                         str(tmp_path / "exports")), cwd=tmp_path))
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["ema"] == 1.0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["strategy"] == "MirroredStrategy" and metrics["replicas"] == 2
    assert set(metrics["val_auroc"]) == {"any", "epidural", "intraparenchymal",
                                         "intraventricular", "subarachnoid", "subdural"}
    assert "val AUROC per label:" in out
    assert (tmp_path / "exports" / "ichnet_small" / "1" / "saved_model.pb").is_file()
    assert metrics["export"].endswith(os.path.join("ichnet_small", "1"))
    assert (tmp_path / "run" / "model.keras").is_file()
    # the global batch must split evenly over the replicas: one sentence, exit 2, no run dir
    bad = _run(_args(cache, tmp_path / "bad", "--cpu-replicas", "2", "--batch-size", "5"),
               cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "train.py: error: --batch-size 5 is the global batch and must be divisible by the 2 "
        "replicas; pass a multiple of 2.")
    assert not (tmp_path / "bad").exists()


def _wait_for(path, proc, timeout=180, contains=None):
    """Wait until ``path`` exists (and, with ``contains``, its text holds that string)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and (contains is None or contains in path.read_text(errors="ignore")):
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) before {path.name} appeared:\n"
                        + proc.stdout.read()[-2000:])
        time.sleep(0.02)
    pytest.fail(f"{path} did not appear within {timeout} s")


def _kill_at_checkpoint(args, cwd, run_dir, checkpoint):
    """Start ``train.py args`` and SIGKILL it once ``checkpoint`` is complete: the manager's
    state file names a checkpoint only after it is written (its .index comes earlier)."""
    proc = subprocess.Popen(TRAIN + args, cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for(run_dir / "checkpoints" / "checkpoint", proc, contains=f'"{checkpoint}"')
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(cache, tmp_path):
    common = ["--epochs", "2", "--steps-per-epoch", "16", "--checkpoint-steps", "4", "--no-export"]
    _ok(_run(_args(cache, tmp_path / "straight", *common), cwd=tmp_path))
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())

    args = _args(cache, tmp_path / "killed", *common)
    # epoch 1 saves ckpt-1..3 (steps 4, 8, 12) and ckpt-4 (its end); ckpt-5 = epoch 2, step 4
    _kill_at_checkpoint(args, tmp_path, tmp_path / "killed", "ckpt-5")
    history = (tmp_path / "killed" / "history.csv").read_text().splitlines()
    assert len(history) == 2                      # header + the completed epoch 1
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = _ok(_run(args, cwd=tmp_path))       # the very same command
    assert re.search(r"Resuming from .*ckpt-\d+: epoch 2/2, step (4|8|12)/16", resumed), resumed
    killed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    for label, value in straight["val_auroc"].items():
        if value is None:
            assert killed["val_auroc"][label] is None
        else:
            assert killed["val_auroc"][label] == pytest.approx(value, abs=1e-3)
    assert killed["final"]["loss"] == pytest.approx(straight["final"]["loss"], abs=1e-3)
    rows = lambda run: [line.split(",")[:3] for line in  # noqa: E731
                        (tmp_path / run / "history.csv").read_text().splitlines()[1:]]
    for a, b in zip(rows("straight"), rows("killed"), strict=True):
        assert a[0] == b[0]
        assert float(a[1]) == pytest.approx(float(b[1]), abs=1e-3)   # train loss per epoch


def test_early_stop_killed_inside_the_patience_window_resumes_to_the_same_end(cache, tmp_path):
    """--early-stop through train.py: a run SIGKILLed inside its patience window (mid-epoch,
    after the best epoch) resumes and ends at the epoch, with the best epoch, of an
    uninterrupted run. Epoch k saves ckpt-(2k-1) at its step 2 and ckpt-2k at its end."""
    common = ["--epochs", "4", "--steps-per-epoch", "4", "--checkpoint-steps", "2",
              "--early-stop", "1", "--no-export"]
    _ok(_run(_args(cache, tmp_path / "straight", *common), cwd=tmp_path))
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert straight["early_stop"] == 1 and straight["epochs_run"] <= 4
    # inside the window: mid-epoch of the epoch after the best one (or of epoch 2)
    after_best = min((straight["best_epoch"] or 1) + 1, straight["epochs_run"])
    args = _args(cache, tmp_path / "killed", *common)
    _kill_at_checkpoint(args, tmp_path, tmp_path / "killed", f"ckpt-{2 * after_best - 1}")
    resumed = _ok(_run(args, cwd=tmp_path))
    assert "Resuming from" in resumed
    killed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    for key in ("stopped_early", "best_epoch", "epochs_run", "still_improving"):
        assert killed[key] == straight[key], key
    if straight["stopped_early"]:
        assert "Early stopping after epoch" in resumed


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_cluster(args, cwd, **env):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(TRAIN + args, cwd=cwd, env=_env(TF_CONFIG=tf_config, **env),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _cluster(args, cwd, timeout=300):
    procs = _start_cluster(args, cwd)
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out[-4000:]
    return outs


def test_two_workers_identical_weights_chief_alone_writes_and_restart_resumes(cache, tmp_path):
    run_dir, exports = tmp_path / "run", tmp_path / "exports"
    # the weight average on: every worker keeps the same average (its digest is the final one)
    args = _args(cache, run_dir, "--strategy", "multiworker", "--steps-per-epoch", "3",
                 "--export-dir", str(exports), "--ema", "1")
    chief, worker = _cluster(args + ["--epochs", "1"], cwd=tmp_path)
    assert _digest(chief) == _digest(worker)
    assert "MultiWorkerMirroredStrategy with 2 replica(s)" in chief
    assert "[worker1]" in worker and "Exported" not in worker
    assert [p.name for p in (exports / "ichnet_small").iterdir()] == ["1"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["weights_sha256"] == _digest(chief)
    # the non-chief wrote nothing into the run directory (its temp dirs are gone)
    assert len((run_dir / "history.csv").read_text().splitlines()) == 2
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("medzoo-worker1-*"))

    # restart the whole cluster with a longer schedule: both resume from the chief's checkpoint;
    # with early stopping on, every worker votes at resume and at each epoch end (a collective)
    chief2, worker2 = _cluster(args + ["--epochs", "2", "--no-export", "--early-stop", "2"],
                               cwd=tmp_path)
    for out in (chief2, worker2):
        assert "epoch 2/2, step 0/3" in out and "Resuming from" in out, out[-2000:]
    assert _digest(chief2) == _digest(worker2) != _digest(chief)
    assert len((run_dir / "history.csv").read_text().splitlines()) == 3
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["early_stop"], metrics["stopped_early"], metrics["epochs_run"]) == (2, False, 2)


def _final_weights(run_dir):
    """The model variables of a run's last checkpoint, by checkpoint key."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.fspath(run_dir / "checkpoints"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith("model/")}


def _kill_a_worker(args, run_dir, cwd, after="ckpt-2"):
    """Start a two-worker cluster, SIGKILL worker 1 once the chief has written ``after``;
    returns (the survivor's output, seconds from the kill to its exit)."""
    # a SIGKILLed worker cannot delete its temporary folder: keep it inside the test's folder
    private = cwd / "tmp"
    private.mkdir(exist_ok=True)
    chief, worker = _start_cluster(args, cwd=cwd, TMPDIR=str(private))
    try:
        _wait_for(run_dir / "checkpoints" / "checkpoint", chief, contains=f'"{after}"')
        worker.send_signal(signal.SIGKILL)
        killed_at = time.time()
        out = chief.communicate(timeout=120)[0]   # bounded: no hang on a dead peer
        waited = time.time() - killed_at
    finally:
        for proc in (chief, worker):
            if proc.poll() is None:
                proc.kill()
    print(f"survivor exited {waited:.1f} s after the kill")
    assert chief.returncode == 2, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("train.py: error: worker0 lost contact with another worker"), out[-3000:]
    assert "run the same command on every worker to resume" in last and after in last
    assert "Traceback" not in out
    assert not (run_dir / "metrics.json").exists()
    return out, waited


def test_killed_worker_the_survivor_exits_with_one_sentence(cache, tmp_path):
    """CI's proof: one worker of two is SIGKILLed mid-epoch, the other ends (exit 2) within
    the 120 s bound with one sentence naming the checkpoint to resume from. That a restarted
    cluster resumes from the chief's checkpoint is proved above, the same weights after a
    resume by the SIGKILL test; the slow test below does all three in one run."""
    args = _args(cache, tmp_path / "killed", "--strategy", "multiworker", "--epochs", "1",
                 "--steps-per-epoch", "40", "--checkpoint-steps", "2", "--no-export")
    _kill_a_worker(args, tmp_path / "killed", cwd=tmp_path, after="ckpt-1")


@pytest.mark.slow
def test_killed_worker_then_restart_resumes_to_the_same_weights(cache, tmp_path):
    """SIGKILL one of two workers mid-epoch: the survivor ends within a bounded time with one
    sentence; the same command on both workers resumes from the chief's last checkpoint and
    ends within 1e-3 of an uninterrupted cluster run (three cluster runs: minutes)."""
    common = ["--strategy", "multiworker", "--epochs", "2", "--steps-per-epoch", "6",
              "--checkpoint-steps", "2", "--no-export"]
    _cluster(_args(cache, tmp_path / "straight", *common), cwd=tmp_path)
    args = _args(cache, tmp_path / "killed", *common)
    _kill_a_worker(args, tmp_path / "killed", cwd=tmp_path, after="ckpt-2")
    for resumed in _cluster(args, cwd=tmp_path):   # the very same command on both workers
        assert re.search(r"Resuming from .*ckpt-\d+: epoch 1/2, step [2-6]/6", resumed), resumed[-2000:]
    straight, restarted = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "killed")
    assert straight.keys() == restarted.keys() and straight
    gap = max(float(abs(straight[k] - restarted[k]).max()) for k in straight)
    print(f"largest weight difference from the uninterrupted run: {gap:.2e}")
    assert gap <= 1e-3


def test_no_flag_main_job_path_with_small_overrides(tmp_path):
    """`python train.py` in a fresh folder: data/synthetic-head-ct -> data/cache -> runs/ ->
    saved_models/ichnet/1. The full-size job takes minutes, so the phantom is made small up
    front (train.py reuses an existing folder) and the model and schedule are cut by flags."""
    from pipelines.datasets.synthetic import ensure_head_ct

    ensure_head_ct(tmp_path / "data" / "synthetic-head-ct", patients=6, slices=4, size=64)
    out = _ok(_run(["--image-size", "32", "--epochs", "1", "--steps-per-epoch", "2",
                    "--batch-size", "4", "--model-kwargs", TINY, "--quiet"], cwd=tmp_path))
    run_dir = tmp_path / "runs" / "ichnet-synthetic"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "ichnet" and metrics["labels"][0] == "any"
    assert "val AUROC per label:" in out and "subdural" in out
    caches = list((tmp_path / "data" / "cache").glob("synthetic-32px-*"))
    assert len(caches) == 1 and (caches[0] / "dataset.json").is_file()
    assert (tmp_path / "saved_models" / "ichnet" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "saved_models" / "ichnet" / "1" / "assets" / "labels.txt").read_text().split()[0] == "any"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["cache_dir"] == os.fspath(caches[0].relative_to(tmp_path))
    assert saved["data_dir"] == os.path.join("data", "synthetic-head-ct")


def _tiny_corpus(tmp_path):
    """A 32 px corpus of two small npz sources the test writes (alpha: 2 classes, beta: 3)."""
    import numpy as np

    from pipelines.corpus import build_corpus

    rng = np.random.default_rng(0)
    sources = []
    for name, classes in (("alpha", 2), ("beta", 3)):
        arrays = {}
        for split, n in (("train", 24), ("val", 8), ("test", 8)):
            y = np.arange(n) % classes
            x = rng.integers(0, 80, (n, 28, 28)).astype(np.uint8)
            x[y == 1, 8:20, 8:20] += 150
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y.reshape(-1, 1).astype(np.uint8)
        np.savez(tmp_path / f"{name}mnist.npz", **arrays)
        sources.append({"name": name, "dataset": "medmnist", "data_dir": str(tmp_path / f"{name}mnist.npz")})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"channels": 1, "sources": sources}))
    corpus = tmp_path / "corpus"
    build_corpus(tmp_path / "spec.yaml", corpus, image_size=32, progress=False)
    return corpus


def test_pretrain_under_mirrored_two_cpu_devices_writes_a_loadable_backbone(tmp_path):
    """`train.py --pretrain` on a tiny corpus the test writes, MirroredStrategy over 2 CPU devices."""
    corpus = _tiny_corpus(tmp_path)

    run = tmp_path / "run"
    _ok(_run(["--pretrain", str(corpus), "--model", "ichnet_small", "--model-kwargs", TINY,
              "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2",
              "--bn-calibration-batches", "1", "--strategy", "mirrored", "--cpu-replicas", "2",
              "--output-dir", str(run), "--no-export", "--quiet"], cwd=tmp_path))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["strategy"] == "MirroredStrategy" and metrics["replicas"] == 2
    meta = json.loads((run / "backbone.json").read_text())
    assert meta["model"] == "ichnet_small" and {s["name"] for s in meta["corpus"]["datasets"]} == {"alpha", "beta"}
    import zoo

    model = zoo.get_model("ichnet_small", weights=str(run / "backbone.weights.h5"), num_classes=2,
                          input_shape=(32, 32, 1), **json.loads(TINY))
    assert model.output_shape == (None, 2)


def test_pretraining_killed_mid_epoch_resumes_to_the_same_backbone(tmp_path):
    """train.py --pretrain resumes after SIGKILL like any run: same final loss as a straight run,
    and the backbone files are written once it finishes."""
    corpus = _tiny_corpus(tmp_path)
    common = ["--pretrain", str(corpus), "--model", "ichnet_small", "--model-kwargs", TINY,
              "--image-size", "32", "--batch-size", "4", "--epochs", "2", "--steps-per-epoch", "8",
              "--checkpoint-steps", "4", "--bn-calibration-batches", "1", "--no-export", "--quiet"]
    _ok(_run([*common, "--output-dir", str(tmp_path / "straight")], cwd=tmp_path))
    args = [*common, "--output-dir", str(tmp_path / "killed")]
    # epoch 1: ckpt-1 (step 4), ckpt-2 (its end); ckpt-3 = epoch 2, step 4
    _kill_at_checkpoint(args, tmp_path, tmp_path / "killed", "ckpt-3")
    assert not (tmp_path / "killed" / "backbone.weights.h5").exists()
    resumed = _ok(_run(args, cwd=tmp_path))
    assert re.search(r"Resuming from .*ckpt-\d+: epoch 2/2", resumed), resumed
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    killed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert killed["final"]["loss"] == pytest.approx(straight["final"]["loss"], abs=1e-3)
    assert (tmp_path / "killed" / "backbone.weights.h5").is_file()
    assert json.loads((tmp_path / "killed" / "backbone.json").read_text())["model"] == "ichnet_small"
