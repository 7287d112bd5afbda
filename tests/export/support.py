"""Shared pieces of the export tests: tiny models, encoded images, the reload child process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

RELOAD = Path(__file__).with_name("reload_exports.py")


def tiny_model(channels=3, num_classes=3, activation="sigmoid", size=32, seed=0):
    """A small functional model following the zoo conventions (input image, output predictions)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, channels), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem_conv")(inp)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block_conv")(x)
    x = keras.layers.Identity(name="features")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    x = keras.layers.Dense(num_classes, name="head_logits")(x)
    out = keras.layers.Activation(activation, dtype="float32", name="predictions")(x)
    model = keras.Model(inp, out, name=f"tiny_{channels}ch")
    # Non-trivial batch-norm statistics, so a model served in training mode would differ.
    bn = model.get_layer("stem_bn")
    bn.moving_mean.assign(np.linspace(-0.2, 0.2, 8).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    return model


def keras_probs(model, images):
    return np.asarray(model.predict(np.asarray(images, np.float32), verbose=0))


def served_input(images, size):
    """What the serving graph feeds the model for float images: the preprocessing spec's
    antialiased resize (skipped when the size fits) and 8-bit rounding, computed offline."""
    from pipelines.preprocessing import quantize, resize

    return np.stack([quantize(resize(image, size)) for image in np.asarray(images, np.float32)])


def write_png(path, pixels):
    """Write a uint8/uint16 [H, W, C] array as PNG; returns the path."""
    Path(path).write_bytes(tf.io.encode_png(pixels).numpy())
    return str(path)


def write_jpeg(path, pixels):
    Path(path).write_bytes(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return str(path)


def start_child(script, job: dict, workdir) -> tuple[subprocess.Popen, Path]:
    """Start ``python script job.json`` (job written into ``workdir``); returns (process, out)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "results.npz"
    (workdir / "job.json").write_text(json.dumps({"out": str(out), **job}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(script), str(workdir / "job.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, out


def finish_child(proc: subprocess.Popen, out: Path, timeout=900):
    """Wait for a child of start_child; returns (arrays, report)."""
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-4000:]
    arrays = dict(np.load(out))
    report = json.loads(Path(str(out) + ".json").read_text())
    return arrays, report


def reload_in_fresh_process(exports, workdir, timeout=600):
    """Run reload_exports.py on ``exports`` (list of job dicts); returns (arrays, report)."""
    proc, out = start_child(RELOAD, {"exports": exports}, workdir)
    return finish_child(proc, out, timeout)


def tree_digest(path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``path``."""
    root = Path(path)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def integer_versions(model_dir) -> list[int]:
    return sorted(int(p.name) for p in Path(model_dir).iterdir() if p.name.isdigit())
