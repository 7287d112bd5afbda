"""Size and speed of every registered model, baselines measured in the same run.

    python -m benchmarks.models                      # every model, speed at its default input
    python -m benchmarks.models --models "res*" --quick
    python -m benchmarks.models --size 128           # speed at 128x128 (FLOPs stay at default)
    python -m benchmarks.models --models "ichnet,myositisnet" --size 128 --train-batch 32 --xla

Prints a Markdown table (stdout; progress goes to stderr): parameters, FLOPs of one image at the
model's default input (TensorFlow profiler, 2 per multiply-add, ``benchmarks.flops``), CPU
training images/s (``train_on_batch`` with Adam, after one warm-up step) and inference latency at
batch 1 and 32 (a compiled forward pass, median of timed runs after a warm-up), each with its
ratio against ``mobilenetv3_small``, which is always measured in the same run.
The device is the CPU unless ``--device`` says otherwise (GPUs are hidden before TF starts).
``--xla`` also times the training step XLA-compiled (``jit_compile=True``) and prints the
XLA / plain ratio: the figure behind ``train.py --jit-compile auto`` (off on CPUs). The header
line gives the core count and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REFERENCE = "mobilenetv3_small"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def attention_flops(model) -> int:
    """FLOPs of the attention products (QK^T and AV) of every MultiHeadAttention layer, batch 1.

    The TensorFlow profiler has no count for the einsums that compute them, so they are added
    analytically: 2 FLOPs per multiply-add, N_q x N_k x heads x (key_dim + value_dim) MACs.
    """
    import math

    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.MultiHeadAttention):
            cfg = layer.get_config()
            q_shape, v_shape = layer.input[0].shape, layer.input[1].shape
            n_q = math.prod(q_shape[1:-1])
            n_k = math.prod(v_shape[1:-1])
            value_dim = cfg.get("value_dim") or cfg["key_dim"]
            total += 2 * n_q * n_k * cfg["num_heads"] * (cfg["key_dim"] + value_dim)
    return total


def measure(name: str, *, size: int | None, train_batch: int, train_steps: int, runs_b1: int,
            runs_b32: int, seed: int = 0, xla: bool = False) -> dict:  # fmt: skip
    """Parameters, FLOPs and speeds of ``name`` (one row of the table)."""
    import keras
    import numpy as np
    import tensorflow as tf

    import zoo
    from benchmarks.flops import count_flops

    info = zoo.model_info(name)
    default = tuple(info["input_shape"])
    t0 = time.perf_counter()
    model = zoo.get_model(name)
    flops = count_flops(model)
    params = int(model.count_params())
    shape = default if size is None else (size, size, default[2])
    flops += attention_flops(model)
    if shape != default:
        model = zoo.get_model(name, input_shape=shape)

    rng = np.random.default_rng(seed)
    forward = tf.function(lambda x: model(x, training=False))
    x1 = tf.constant(rng.random((1, *shape), dtype=np.float32))
    x32 = tf.constant(rng.random((32, *shape), dtype=np.float32))
    forward(x1).numpy()
    lat1 = _median_seconds(lambda: forward(x1).numpy(), runs_b1)
    forward(x32).numpy()
    lat32 = _median_seconds(lambda: forward(x32).numpy(), runs_b32)

    k = int(model.output_shape[-1])
    act = model.get_layer("predictions").get_config()["activation"]
    loss = {"sigmoid": "binary_crossentropy", "softmax": "categorical_crossentropy"}.get(
        act, keras.losses.BinaryCrossentropy(from_logits=True)
    )
    xt = rng.random((train_batch, *shape), dtype=np.float32)
    yt = np.eye(k, dtype=np.float32)[rng.integers(0, k, train_batch)]

    def train_rate(jit):
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, jit_compile=jit)
        model.train_on_batch(xt, yt)  # traces (and with XLA compiles) the train step
        t = time.perf_counter()
        for _ in range(train_steps):
            model.train_on_batch(xt, yt)
        return train_batch * train_steps / (time.perf_counter() - t)

    train_ips = train_rate(False)
    xla_ips = train_rate(True) if xla else None
    row = {
        "name": name,
        "params": params,
        "flops": flops,
        "flops_input": default,
        "speed_input": shape,
        "train_ips": train_ips,
        "xla_train_ips": xla_ips,
        "lat1_ms": lat1 * 1e3,
        "lat32_ms": lat32 * 1e3,
    }
    _log(f"  {name}: {params:,} params, {flops / 1e9:.3f} GFLOPs, {train_ips:.1f} img/s train, "
         f"{lat1 * 1e3:.1f} ms b1, {lat32 * 1e3:.0f} ms b32 ({time.perf_counter() - t0:.0f}s)")  # fmt: skip
    keras.backend.clear_session()
    return row


def _ratio(value, ref) -> str:
    return f"{value / ref:.2f}x" if ref else "-"


def _gflops(f: int) -> str:
    return f"{f / 1e9:.3f}" if f < 1e10 else f"{f / 1e9:.1f}"


def render(rows: list[dict], ref: dict, *, device: str, train_batch: int) -> str:
    same = all(r["speed_input"] == r["flops_input"] for r in rows)
    side = rows[0]["speed_input"][:2] if rows else ()
    where = (
        "each model's default input"
        if same
        else f"{side[0]}x{side[1]} with each model's default channels"
    )
    xla = any(r.get("xla_train_ips") for r in rows)
    lines = [
        f"Speed on {device} at {where}; training batch {train_batch}; FLOPs at the default "
        f"input, batch 1 (2 per multiply-add; attention products added analytically). Ratios are against `{REFERENCE}` "
        "(for latency, higher = slower; for training, higher = faster).",
        "",
        "| Model | Default input | Params | x | GFLOPs | x | Train img/s | x | "
        "Latency b1 (ms) | x | Latency b32 (ms) | x |" + (" Train img/s XLA | XLA / plain |" if xla else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if xla else ""),
    ]
    for r in rows:
        default = "x".join(str(s) for s in r["flops_input"])
        lines.append(
            f"| `{r['name']}` | {default} | {r['params']:,} | {_ratio(r['params'], ref['params'])} | "
            f"{_gflops(r['flops'])} | {_ratio(r['flops'], ref['flops'])} | "
            f"{r['train_ips']:.1f} | {_ratio(r['train_ips'], ref['train_ips'])} | "
            f"{r['lat1_ms']:.1f} | {_ratio(r['lat1_ms'], ref['lat1_ms'])} | "
            f"{r['lat32_ms']:.0f} | {_ratio(r['lat32_ms'], ref['lat32_ms'])} |"
            + (f" {r['xla_train_ips']:.1f} | {_ratio(r['xla_train_ips'], r['train_ips'])} |"
               if xla else "")
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.models", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--models", default="*", help="fnmatch pattern over zoo.list_models()")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer timed runs, training batch 8 and speed at 128x128 unless --size is given",
    )
    parser.add_argument("--size", type=int, default=None, help="square input side for speed")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch (16)")
    parser.add_argument("--device", choices=("cpu", "auto"), default="cpu",
                        help="cpu (default: hide GPUs) or auto (whatever TF picks)")  # fmt: skip
    parser.add_argument("--xla", action="store_true",
                        help="also time the training step with XLA (jit_compile=True)")
    args = parser.parse_args(argv)
    if args.size is not None and args.size < 32:
        parser.error(f"--size {args.size} is too small; models need at least 32 pixels.")

    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import zoo

    names = zoo.list_models(args.models)
    if not names:
        parser.error(
            f"--models {args.models!r} matches no model; available: {', '.join(zoo.list_models())}."
        )
    if REFERENCE not in names:
        names = [REFERENCE, *names]
    size = args.size if args.size is not None else (128 if args.quick else None)
    train_batch = args.train_batch or (8 if args.quick else 16)
    opts = {
        "size": size,
        "train_batch": train_batch,
        "train_steps": 2 if args.quick else 5,
        "runs_b1": 3 if args.quick else 10,
        "runs_b32": 1 if args.quick else 3,
        "xla": args.xla,
    }
    _log(f"measuring {len(names)} models: {', '.join(names)}")
    t = time.perf_counter()
    rows = [measure(n, **opts) for n in names]
    ref = next(r for r in rows if r["name"] == REFERENCE)
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    device = f"GPU ({gpus[0].name})" if gpus else f"CPU ({os.cpu_count()} cores visible)"
    if hasattr(os, "getloadavg"):
        device += f", load average {os.getloadavg()[0]:.1f}"
    print(render(rows, ref, device=device, train_batch=train_batch))
    _log(f"done in {time.perf_counter() - t:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
