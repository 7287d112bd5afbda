"""Input pipeline speed: ``python -m benchmarks.pipeline``.

On a synthetic head-CT set in the RSNA on-disk format (``write_head_ct``: int16 DICOM
slices), in one run:

1. DICOM decode + HU + windowing (brain/subdural/bone), slices/s in one process, against a
   bare ``pydicom.dcmread(...).pixel_array`` of the same files;
2. ``pipelines.cache.prepare`` throughput (decode, resize to 256, uint8, TFRecord shards)
   with 1 and with 2 worker processes;
3. ``make_dataset`` images/s from the cache (plain, and with the training augmentation);
4. the training images/s of ``ichnet`` at the same size (256x256x3), so the last line says
   how many times faster than the model the input pipeline is (target: at least 5x).

Every figure is measured here, now, on this machine; the printed table says what ran where.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def bench_decode(files, windows, repeats: int = 1) -> tuple[float, float]:
    """(decode+window slices/s, bare pydicom slices/s), interleaved passes over the same files."""
    import pydicom

    from pipelines import dicom, transforms

    parsed = transforms.parse_windows(windows)
    for path in files[:2]:  # warm imports and the file cache for both
        transforms.apply_windows(dicom.read_hu(path), parsed)
        pydicom.dcmread(path).pixel_array  # noqa: B018
    full = bare = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for path in files:
            pydicom.dcmread(path).pixel_array  # noqa: B018
        t1 = time.perf_counter()
        for path in files:
            transforms.apply_windows(dicom.read_hu(path), parsed)
        t2 = time.perf_counter()
        bare += t1 - t0
        full += t2 - t1
    n = len(files) * repeats
    return _rate(n, full), _rate(n, bare)


def bench_prepare(data_dir, out, *, workers, image_size) -> tuple[float, int]:
    from pipelines.cache import prepare, read_info

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    prepare("synthetic", data_dir, out, image_size=image_size, workers=workers, progress=False)
    seconds = time.perf_counter() - t0
    info = read_info(out)
    images = sum(info["splits"].values()) + info["quarantined"]
    steady = info["prepare"].get("images_per_s_steady", float("nan"))
    return _rate(images, seconds), steady, images


def bench_tfdata(cache, *, batch_size, augment, seconds) -> float:
    from pipelines.cache import make_dataset

    ds = make_dataset(
        cache, "train", batch_size=batch_size, training=True, augment=augment, repeat=True
    )
    it = iter(ds)
    for _ in range(3):
        next(it)
    count = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x, _ = next(it)
        count += int(x.shape[0])
    return _rate(count, time.perf_counter() - t0)


def bench_model(name, *, image_size, channels, batch_size, steps) -> float:
    import numpy as np

    import zoo

    model = zoo.get_model(name, input_shape=(image_size, image_size, channels))
    classes = int(model.output.shape[-1])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch_size, image_size, image_size, channels)).astype("float32")
    y = (rng.uniform(0, 1, (batch_size, classes)) > 0.5).astype("float32")
    for _ in range(2):
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return _rate(steps * batch_size, time.perf_counter() - t0)


def describe_machine() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    where = f"{len(gpus)} GPU(s)" if gpus else "CPU only"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.node() or 'host'}: {cpus} CPU cores, {where}, TensorFlow {tf.__version__}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__)
    parser.add_argument("--patients", type=int, default=6, help="synthetic patients (default 6)")
    parser.add_argument("--slices", type=int, default=24, help="slices per patient (default 24)")
    parser.add_argument("--size", type=int, default=512, help="DICOM matrix size (default 512)")
    parser.add_argument("--image-size", type=int, default=256, help="cache / model size (256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="ichnet")
    parser.add_argument("--model-steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per tf.data run")
    parser.add_argument("--work-dir", default=None, help="keep data and caches here")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    from pipelines.datasets.synthetic import write_head_ct

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-pipeline-"))
    data = work / "head-ct"
    t0 = time.perf_counter()
    if not (data / "stage_2_train.csv").is_file():
        write_head_ct(data, patients=args.patients, slices=args.slices, size=args.size, seed=0)
    generated = time.perf_counter() - t0
    files = sorted(str(p) for p in (data / "stage_2_train").glob("*.dcm"))
    print(
        f"{len(files)} synthetic {args.size}x{args.size} DICOM slices in {data} "
        f"({generated:.1f} s to write)",
        flush=True,
    )

    windows = "brain,subdural,bone"
    rows = []
    decode, bare = bench_decode(files, windows)
    rows.append(
        (
            "DICOM decode + HU + 3 windows, 1 process",
            decode,
            "slices/s",
            f"{args.size}x{args.size} int16",
        )
    )
    rows.append(
        ("bare pydicom dcmread + pixel_array, same files", bare, "slices/s", "reference, same run")
    )
    for workers in (1, 2):
        rate, steady, images = bench_prepare(
            data, work / f"cache-{workers}", workers=workers, image_size=args.image_size
        )
        label = f"prepare -> TFRecords, {workers} worker{'s' if workers > 1 else ''}"
        rows.append((label, rate, "images/s", f"{images} slices -> {args.image_size}px, whole run"))
        rows.append(
            ("  same, once the workers are up", steady, "images/s", "decode + resize + write")
        )
        print(
            f"prepare with {workers} worker(s): {rate:.1f} images/s, {steady:.1f} steady",
            flush=True,
        )
    cache = work / "cache-2"
    plain = bench_tfdata(cache, batch_size=args.batch_size, augment=None, seconds=args.seconds)
    rows.append(
        (
            "tf.data from cache, decode only",
            plain,
            "images/s",
            f"batch {args.batch_size}, {args.image_size}px",
        )
    )
    augmented = bench_tfdata(cache, batch_size=args.batch_size, augment=True, seconds=args.seconds)
    rows.append(
        (
            "tf.data from cache + flip/rotate/zoom/contrast",
            augmented,
            "images/s",
            f"batch {args.batch_size}, {args.image_size}px",
        )
    )
    print(f"tf.data: {plain:.0f} images/s plain, {augmented:.0f} augmented", flush=True)
    model = bench_model(
        args.model,
        image_size=args.image_size,
        channels=3,
        batch_size=args.batch_size,
        steps=args.model_steps,
    )
    rows.append(
        (
            f"{args.model} training step",
            model,
            "images/s",
            f"batch {args.batch_size}, {args.image_size}x{args.image_size}x3",
        )
    )
    ratio = augmented / model
    rows.append(
        (
            "input pipeline (augmented) / model training",
            ratio,
            "x",
            "target >= 5x: " + ("met" if ratio >= 5 else "NOT met"),
        )
    )

    machine = describe_machine()
    width = max(len(r[0]) for r in rows)
    print(f"\nPipeline benchmark on {machine}")
    print(f"| {'measurement':<{width}} | {'value':>10} | {'unit':<8} | note")
    print(f"|{'-' * (width + 2)}|{'-' * 12}|{'-' * 10}|------")
    for name, value, unit, note in rows:
        print(f"| {name:<{width}} | {value:>10.1f} | {unit:<8} | {note}")
    result = {
        "machine": machine,
        "slices": len(files),
        "rows": [{"measurement": n, "value": v, "unit": u, "note": t} for n, v, u, t in rows],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
