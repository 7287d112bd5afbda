"""Choosing a tf.distribute strategy, and who in a cluster may write files.

``auto`` picks MultiWorkerMirroredStrategy when ``TF_CONFIG`` names more than one worker,
MirroredStrategy when there are several GPUs (or ``--cpu-replicas`` > 1 split the CPU), and the
default (one device) strategy otherwise. The same custom loop runs under all of them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import tensorflow as tf

from zoo.training.config import ConfigError

__all__ = [
    "ClusterError",
    "PEER_ERRORS",
    "cluster_error",
    "configure_cpu_replicas",
    "make_strategy",
    "strategy_name",
    "cluster_spec",
    "is_chief",
    "worker_id",
    "writable_dir",
    "cleanup_writable_dir",
    "has_gpu",
]


def has_gpu() -> bool:
    """True when TensorFlow sees a GPU: the ``auto`` switches (mixed precision, XLA) and the
    float16 loss scaling depend on it."""
    return bool(tf.config.list_logical_devices("GPU"))


def configure_cpu_replicas(n: int) -> None:
    """Split the first CPU into ``n`` logical devices (for MirroredStrategy on one machine).

    Must run before TensorFlow initialises its devices; later, it only checks that the split
    already in place matches.
    """
    if not n or n <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise ConfigError(
                f"--cpu-replicas {n} must be applied before TensorFlow starts, but it already runs "
                f"with {have} CPU device(s); pass --cpu-replicas on the command line (a fresh process)."
            ) from None


def cluster_spec() -> dict:
    """The parsed ``TF_CONFIG`` ({} when unset); a malformed value is a clear error."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({err.msg}); set it to the cluster description or unset it.") from None
    if not isinstance(spec, dict):
        raise ConfigError("TF_CONFIG must be a JSON object with 'cluster' and 'task'.")
    return spec


def _num_workers(spec: dict) -> int:
    cluster = spec.get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def make_strategy(name: str = "auto", cpu_replicas: int = 0) -> tf.distribute.Strategy:
    """Build the strategy ``name`` (auto|default|mirrored|multiworker)."""
    spec = cluster_spec()
    workers = _num_workers(spec)
    if name == "multiworker" or (name == "auto" and workers > 1):
        # before anything lists devices: collectives must be configured at program startup
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 or cpu_replicas > 1 else "default"
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        cpus = tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    if workers > 1:
        raise ConfigError(
            f"TF_CONFIG describes {workers} workers but --strategy {name} trains on one; use "
            "--strategy multiworker (or auto), or unset TF_CONFIG."
        )
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    return tf.distribute.get_strategy()


def strategy_name(strategy) -> str:
    """The public name (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "MirroredStrategy"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return "OneDeviceStrategy"
    return "default (one device)"


def _task(strategy) -> tuple[str | None, int]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy) -> bool:
    """True on the one process that writes checkpoints, logs and exports."""
    task_type, task_id = _task(strategy)
    if task_type is None or task_type == "chief":
        return True
    if task_type == "worker":
        has_chief = bool(cluster_spec().get("cluster", {}).get("chief"))
        return task_id == 0 and not has_chief
    return False


def worker_id(strategy) -> str:
    task_type, task_id = _task(strategy)
    return "chief" if task_type is None else f"{task_type}{task_id}"


# What a collective raises when a peer is gone: the connection reset (a killed worker), TF's
# peer health check or the coordination service aborting the collectives (an unreachable one).
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError)


class ClusterError(ValueError):
    """Another worker of a multi-worker run died or became unreachable mid-run.

    A ValueError so that train.py reports it as one sentence (exit 2) instead of a collective
    op's traceback.
    """


def cluster_error(strategy, err, checkpoint) -> ClusterError | None:
    """The one-sentence error for ``err`` raised by a collective, or None when ``strategy``
    is not multi-worker (then ``err`` is not about a peer and is re-raised as it is)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    text = str(getattr(err, "message", err))
    reason = next((line.strip() for line in text.splitlines()
                   if "aborted by" in line or "Connection" in line), type(err).__name__)
    reason = reason.rstrip(":;. ")
    resume = (f"the last checkpoint is {checkpoint}" if checkpoint
              else "no checkpoint was written yet")
    return ClusterError(
        f"{worker_id(strategy)} lost contact with another worker of the cluster ({reason}); "
        f"{resume}: run the same command on every worker to resume."
    )


def writable_dir(path, strategy) -> str:
    """``path`` on the chief; a private temporary directory on every other worker."""
    if is_chief(strategy):
        os.makedirs(path, exist_ok=True)
        return os.fspath(path)
    return tempfile.mkdtemp(prefix=f"medzoo-{worker_id(strategy)}-")


def cleanup_writable_dir(path, strategy) -> None:
    if not is_chief(strategy):
        shutil.rmtree(path, ignore_errors=True)
