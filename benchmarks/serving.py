"""Serving latency on the CPU: the exported SavedModel, ONNX Runtime and Keras, side by side.

    python -m benchmarks.serving                                  # every registered model
    python -m benchmarks.serving --models "ichnet*,resnet18" --size 128 --runs 10

For each model: build it (``--size`` overrides the default input height and width), export it
with ``zoo.export.export_saved_model(..., formats=("savedmodel", "onnx"))`` into a temporary
directory, reload the SavedModel with ``tf.saved_model.load`` and time, at batch 1 and 32:

* ``serving_default`` of the reloaded SavedModel (the graph TF Serving runs),
* the ``model.onnx`` in an ``onnxruntime.InferenceSession`` (CPUExecutionProvider),
* ``model.predict`` of the Keras model.

Each figure is the median wall time of ``--runs`` calls after two warm-up calls, in
milliseconds per call (not per image). Every call gets a different input (a pool of
``INPUTS`` random batches, cycled) and its output is copied into a NumPy array inside the
timed region, so no runtime can answer from a cache or return before the graph ran; a check
that distinct inputs give distinct outputs guards the ONNX session against a folded graph. The GPU is hidden before TensorFlow starts. Prints a
Markdown table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import statistics
import sys
import tempfile
import time

BATCHES = (1, 32)
INPUTS = 8  # distinct inputs cycled through the timed calls


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _median_ms(fn, inputs, runs: int) -> float:
    """Median ms of ``fn(inputs[i % len(inputs)])`` (which must return the output as NumPy)."""
    import numpy as np

    fn(inputs[0])
    fn(inputs[1 % len(inputs)])  # warm-up: first calls trace, allocate and tune
    times = []
    for i in range(runs):
        x = inputs[i % len(inputs)]
        t = time.perf_counter()
        out = np.asarray(fn(x))
        times.append(time.perf_counter() - t)
        if not np.all(np.isfinite(out)):
            raise RuntimeError("the timed call returned non-finite outputs")
    return 1000.0 * statistics.median(times)


def measure(name: str, *, size: int | None, runs: int, workdir: str, seed: int = 0) -> dict:
    """One row: export time and latency (ms) of SavedModel, ONNX Runtime and Keras at each batch."""
    import keras
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf

    import zoo
    from zoo.export import SIGNATURE_IMAGE, export_saved_model

    kwargs = {}
    if size is not None:
        default = zoo.model_entry(name).defaults.get("input_shape")
        channels = default[2] if default else zoo.get_model(name).input_shape[-1]
        kwargs["input_shape"] = (size, size, channels)
    model = zoo.get_model(name, **kwargs)
    shape = tuple(int(d) for d in model.input_shape[1:])
    labels = [f"class_{i}" for i in range(int(model.output_shape[-1]))]

    t = time.perf_counter()
    path = export_saved_model(model, workdir, model_name=name, labels=labels,
                              formats=("savedmodel", "onnx"))
    export_s = time.perf_counter() - t

    served = tf.saved_model.load(str(path)).signatures[SIGNATURE_IMAGE]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    row = {"model": name, "input": "x".join(map(str, shape)), "export_s": export_s,
           "params": int(model.count_params())}
    max_err = 0.0
    for batch in BATCHES:
        xs = [rng.random((batch, *shape), dtype=np.float32) for _ in range(INPUTS)]
        txs = [tf.constant(x) for x in xs]
        row[f"savedmodel_b{batch}"] = _median_ms(
            lambda tx: served(image=tx)["probabilities"].numpy(), txs, runs
        )
        row[f"onnx_b{batch}"] = _median_ms(
            lambda x: session.run(["probabilities"], {"image": x})[0], xs, runs
        )
        row[f"keras_b{batch}"] = _median_ms(
            lambda x, b=batch: model.predict(x, batch_size=b, verbose=0), xs, runs
        )
        outs = [session.run(["probabilities"], {"image": x})[0] for x in xs[:2]]
        if np.array_equal(outs[0], outs[1]):
            raise RuntimeError(f"{name}: ONNX Runtime gave the same output for two different "
                               "inputs; the timing would not measure the graph.")
        x, tx = xs[0], txs[0]
        ref = model.predict(x, batch_size=batch, verbose=0)
        max_err = max(max_err,
                      float(np.abs(served(image=tx)["probabilities"].numpy() - ref).max()),
                      float(np.abs(session.run(["probabilities"], {"image": x})[0] - ref).max()))
    row["max_abs_diff"] = max_err
    keras.backend.clear_session()
    return row


def table(rows: list[dict]) -> str:
    head = ["model", "input", "params"]
    for b in BATCHES:
        head += [f"SavedModel b{b}", f"ONNX RT b{b}", f"Keras predict b{b}"]
    head += ["export s", "max abs diff vs Keras"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["input"], f"{r['params'] / 1e6:.2f}M"]
        for b in BATCHES:
            cells += [f"{r[f'savedmodel_b{b}']:.1f}", f"{r[f'onnx_b{b}']:.1f}",
                      f"{r[f'keras_b{b}']:.1f}"]
        cells += [f"{r['export_s']:.1f}", f"{r['max_abs_diff']:.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="*",
                        help="comma-separated names or fnmatch patterns (default: every model)")
    parser.add_argument("--size", type=int, default=None,
                        help="input height and width (default: each model's default input)")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per figure (median)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be a positive integer, got {args.runs}.")
    if args.size is not None and args.size < 32:
        parser.error(f"--size must be at least 32 (the smallest input every model takes), got {args.size}.")

    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU figures, before TensorFlow starts
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import zoo

    available = zoo.list_models()
    names = []
    for pattern in (p.strip() for p in args.models.split(",") if p.strip()):
        found = [n for n in available if fnmatch.fnmatchcase(n, pattern)]
        if not found:
            parser.error(f"--models {pattern!r} matches no registered model; see zoo.list_models().")
        names += [n for n in found if n not in names]

    rows = []
    with tempfile.TemporaryDirectory(prefix="medzoo-serving-") as workdir:
        for name in names:
            _log(f"[{len(rows) + 1}/{len(names)}] {name} ...")
            rows.append(measure(name, size=args.size, runs=args.runs, workdir=workdir))
    import onnxruntime
    import tensorflow as tf

    print(f"CPU latency, ms per call (median of {args.runs}); TensorFlow {tf.__version__}, "
          f"ONNX Runtime {onnxruntime.__version__}, {os.cpu_count()} CPU cores visible.\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
