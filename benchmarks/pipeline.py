"""Input pipeline speed: ``python -m benchmarks.pipeline``.

On a synthetic head-CT set in the RSNA on-disk format (``write_head_ct``: int16 DICOM
slices), in one run:

1. DICOM decode + HU + windowing (brain/subdural/bone; ``pipelines.dicom.read_windows``),
   slices/s in one process, against a bare ``pydicom.dcmread(...).pixel_array`` of the same
   files; and NIfTI slices (``pipelines.nifti.read_windows``) against a bare nibabel
   ``nib.load(path).dataobj[..., i]`` of the same slices (synthetic int16 volumes as
   PhysioNet CT-ICH stores them). Each is the median of ``--decode-repeats`` paired passes
   whose order alternates, after a warm-up pass of both over every item;
2. ``pipelines.cache.prepare`` throughput (decode, resize to 256, uint8, TFRecord shards)
   with 1 and with 2 worker processes;
   (best of ``--repeats`` runs each), the scaling efficiency, and the machine's load beside
   them (``os.getloadavg``: on a shared machine the load says how far to trust the ratio);
3. ``make_dataset`` images/s from the cache: read + decode + batch + prefetch, which is all the
   device path asks of tf.data (``input_images_per_sec_256``); the Keras augmentation layers
   alone in a ``tf.function`` on the training device (the device path's step); the two
   together when the device is this CPU; and the CPU path (augmentation in the tf.data map);
4. the training images/s of ``ichnet`` at the same size (256x256x3), so the last line says
   how many times faster than the model the input pipeline is (target: at least 5x).

``--json FILE`` writes every figure, with the keys ``decode_vs_pydicom``,
``decode_nifti_vs_nibabel``,
``prepare_scaling_2_workers`` (2-worker over 1-worker throughput once the workers are up) and
``input_images_per_sec_256``, plus the command, date and software: written under
``benchmarks/results/pipeline-*.json`` it becomes a column of docs/RESULTS.md's speed table
(``python scripts/results_tables.py``). The defaults take about 10 to 20 minutes on 2 busy
cores; ``--quick`` takes 1 to 2 minutes, for iterating.

Every figure is measured here, now, on this machine; the printed table says what ran where.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def _paired(bare, ours, items, repeats: int) -> tuple[float, float, float]:
    """(ours items/s, bare items/s, ours / bare): medians over ``repeats`` paired passes.

    Both sides are warmed on every item first (imports, the page cache). Each repeat times one
    pass of each over the same items, bare first on even repeats and ours first on odd ones,
    so drift in the machine's load falls on both; the ratio is the median of the per-repeat
    ratios, which a shared machine's bursts move least.
    """
    import statistics

    for item in items:
        bare(item)
        ours(item)
    rates = {"bare": [], "ours": []}
    ratios = []
    for r in range(repeats):
        order = (("bare", bare), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("bare", bare))
        seconds = {}
        for name, fn in order:
            t0 = time.perf_counter()
            for item in items:
                fn(item)
            seconds[name] = time.perf_counter() - t0
            rates[name].append(_rate(len(items), seconds[name]))
        ratios.append(seconds["bare"] / seconds["ours"])
    return statistics.median(rates["ours"]), statistics.median(rates["bare"]), statistics.median(ratios)


def bench_decode(files, windows, repeats: int = 5) -> tuple[float, float, float]:
    """DICOM: (decode + HU + windows slices/s, bare pydicom slices/s, ratio), as :func:`_paired`.

    Ours is what ``load_dicom`` / ``decode_file`` do: ``dicom.read_windows`` (every check of
    ``read_hu``, then the windows; for slope-1 CT computed from the stored values without the
    HU array); bare is ``pydicom.dcmread(path).pixel_array`` (the decoded stored values, no HU).
    """
    import pydicom

    from pipelines import dicom, transforms

    parsed = transforms.parse_windows(windows)
    return _paired(lambda path: pydicom.dcmread(path).pixel_array,
                   lambda path: dicom.read_windows(path, parsed),
                   files, repeats)


def write_nifti_volumes(out_dir, *, volumes: int, slices: int, size: int, seed: int = 0) -> list[str]:
    """Synthetic head-CT volumes as PhysioNet CT-ICH stores them: int16 ``.nii``, (X, Y, slices),
    ``scl_slope`` 1 / ``scl_inter`` -1024, an L-A-S affine (so ``read_slice`` reorients)."""
    import nibabel as nib
    import numpy as np

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    head = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.45 * size) ** 2
    paths = []
    for v in range(volumes):
        hu = np.where(head[..., None], 40.0, -1000.0) + rng.normal(0, 20, (size, size, slices))
        img = nib.Nifti1Image((hu + 1024).astype(np.int16), np.diag([-0.5, 0.5, 5.0, 1.0]))
        img.header.set_slope_inter(1.0, -1024.0)
        path = out / f"{v:03d}.nii"
        nib.save(img, str(path))
        paths.append(str(path))
    return paths


def bench_decode_nifti(paths, slices: int, windows, repeats: int = 5) -> tuple[float, float, float]:
    """NIfTI: (``read_slice`` + windows slices/s, bare nibabel slices/s, ratio), as :func:`_paired`.

    Bare is ``nib.load(path).dataobj[..., i]`` (one scaled slice, stored orientation); ours
    is ``pipelines.nifti.read_windows`` (``read_slice``'s checks and reorientation to the
    DICOM convention, then the windows; for slope-1 integer volumes the stored slice's bytes,
    with the header parsed once per volume), as the CT-ICH adapter and ``decode_file`` do.
    """
    import nibabel as nib

    from pipelines import nifti, transforms

    parsed = transforms.parse_windows(windows)
    items = [(p, i) for p in paths for i in range(slices)]
    return _paired(lambda item: nib.load(item[0]).dataobj[..., item[1]],
                   lambda item: nifti.read_windows(*item, parsed),
                   items, repeats)


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


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def bench_tfdata(cache, *, batch_size, augment, seconds, device_augment=None) -> float:
    """images/s out of ``make_dataset``; with ``device_augment`` (the device path's Keras
    layers) each batch also goes through them in a tf.function, as in the train step."""
    import tensorflow as tf

    from pipelines.cache import make_dataset

    ds = make_dataset(
        cache, "train", batch_size=batch_size, training=True, augment=augment, repeat=True
    )
    step = None
    if device_augment is not None:
        step = tf.function(lambda x, i: device_augment(x, batch_index=i, seed=tf.constant(1, tf.int64)))
    it = iter(ds)
    for i in range(3):
        x, _ = next(it)
        if step is not None:
            step(x, tf.constant(i, tf.int64))
    count = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x, _ = next(it)
        if step is not None:
            x = step(x, tf.constant(count, tf.int64)).numpy()  # materialised
        count += int(x.shape[0])
    return _rate(count, time.perf_counter() - t0)


def bench_device_augment(*, batch_size, image_size, seconds) -> tuple[float, str]:
    """(images/s, device) of the Keras augmentation layers alone, on the device that trains."""
    import tensorflow as tf

    from pipelines.augment import build_augmentation

    device = "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
    aug = build_augmentation(True)
    with tf.device(device):
        x = tf.random.stateless_uniform((batch_size, image_size, image_size, 3), seed=(1, 2))
        step = tf.function(lambda x, i: aug(x, batch_index=i, seed=tf.constant(1, tf.int64)))
        for i in range(3):
            step(x, tf.constant(i, tf.int64)).numpy()
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step(x, tf.constant(count, tf.int64)).numpy()  # new draws every call, materialised
            count += batch_size
    return _rate(count, time.perf_counter() - t0), device


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
    parser.add_argument("--patients", type=int, default=24, help="synthetic patients (default 24)")
    parser.add_argument("--slices", type=int, default=40, help="slices per patient (default 40)")
    parser.add_argument("--size", type=int, default=512, help="DICOM matrix size (default 512)")
    parser.add_argument("--image-size", type=int, default=256, help="cache / model size (256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="ichnet")
    parser.add_argument("--model-steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per tf.data run")
    parser.add_argument("--repeats", type=int, default=2,
                        help="prepare runs per worker count, alternating 1 and 2 (best kept)")
    parser.add_argument("--decode-repeats", type=int, default=5,
                        help="paired passes of the decode comparisons (median kept; default 5)")
    parser.add_argument("--work-dir", default=None, help="keep data and caches here")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true",
                        help="a 1-2 minute run: 4 patients x 24 slices, 5 s per tf.data run, "
                             "1 prepare run each, 3 model steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.slices, args.seconds, args.repeats = 4, 24, 5.0, 1
        args.model_steps = min(args.model_steps, 3)

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
    decode, bare, decode_ratio = bench_decode(files, windows, repeats=args.decode_repeats)
    load_decode = _load()
    volumes = write_nifti_volumes(work / "nifti", volumes=min(args.patients, 4), slices=args.slices,
                                  size=args.size)
    nifti_rate, nibabel_rate, nifti_ratio = bench_decode_nifti(
        volumes, args.slices, windows, repeats=args.decode_repeats)
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
    rows.append(("decode / bare pydicom", decode_ratio, "x",
                 f"target >= 0.8; median of {args.decode_repeats} paired passes; load {load_decode}"))
    rows.append(("NIfTI read_windows (slice + HU + 3 windows), 1 process", nifti_rate, "slices/s",
                 f"{len(volumes)} volumes {args.size}x{args.size}x{args.slices} int16"))
    rows.append(("bare nibabel load + dataobj[..., i], same slices", nibabel_rate, "slices/s",
                 "reference, same run"))
    rows.append(("NIfTI decode / bare nibabel", nifti_ratio, "x",
                 f"target >= 0.8; median of {args.decode_repeats} paired passes; load {_load()}"))
    figures = {"decode_vs_pydicom": decode_ratio, "load_decode": load_decode,
               "decode_slices_per_sec": decode, "pydicom_slices_per_sec": bare,
               "decode_nifti_vs_nibabel": nifti_ratio, "load_decode_nifti": _load(),
               "decode_nifti_slices_per_sec": nifti_rate, "nibabel_slices_per_sec": nibabel_rate,
               "decode_repeats": args.decode_repeats}
    best = {1: (0.0, 0.0, 0), 2: (0.0, 0.0, 0)}
    loads = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):
            loads[workers].append(_load())
            rate, steady, images = bench_prepare(
                data, work / f"cache-{workers}", workers=workers, image_size=args.image_size
            )
            loads[workers].append(_load())
            print(f"prepare with {workers} worker(s): {rate:.1f} images/s, {steady:.1f} steady "
                  f"(load {loads[workers][-1]})", flush=True)
            best[workers] = max(best[workers], (steady, rate, images))
    for workers in (1, 2):
        steady, rate, images = best[workers]
        label = f"prepare -> TFRecords, {workers} worker{'s' if workers > 1 else ''}"
        load = f"load {min(loads[workers]):.1f}-{max(loads[workers]):.1f}"
        rows.append((label, rate, "images/s", f"{images} slices -> {args.image_size}px, whole run"))
        rows.append(("  same, once the workers are up", steady, "images/s",
                     f"decode + resize + encode + write; {load}"))
    scaling = best[2][0] / best[1][0]
    scaling_whole = best[2][1] / best[1][1]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_now = _load()
    rows.append(("prepare 2 workers / 1 worker, once up", scaling, "x",
                 f"efficiency {scaling / 2:.0%}; target >= 1.7 on an idle machine; "
                 f"load {load_now} on {cpus} cores"))
    rows.append(("prepare 2 workers / 1 worker, whole run", scaling_whole, "x",
                 "includes the workers' start-up"))
    figures.update({
        "prepare_images_per_sec_1_worker": best[1][0],
        "prepare_images_per_sec_2_workers": best[2][0],
        "prepare_scaling_2_workers": scaling,
        "prepare_scaling_efficiency_2_workers": scaling / 2,
        "prepare_scaling_2_workers_whole_run": scaling_whole,
        "load_prepare_1_worker": loads[1],
        "load_prepare_2_workers": loads[2],
    })
    cache = work / "cache-2"
    from pipelines.augment import build_augmentation

    plain = bench_tfdata(cache, batch_size=args.batch_size, augment=None, seconds=args.seconds)
    rows.append(("tf.data from cache: read + decode + batch + prefetch", plain, "images/s",
                 f"the device path's input; batch {args.batch_size}, {args.image_size}px; "
                 f"target >= 1500"))
    device_aug, device = bench_device_augment(
        batch_size=args.batch_size, image_size=args.image_size, seconds=args.seconds)
    rows.append((f"augmentation layers in a tf.function on {device}", device_aug, "images/s",
                 "the device path's step, alone"))
    both = bench_tfdata(cache, batch_size=args.batch_size, augment=None, seconds=args.seconds,
                        device_augment=build_augmentation(True))
    rows.append(("tf.data + augmentation step, both on this CPU", both, "images/s",
                 "the device path when the device is this CPU"))
    augmented = bench_tfdata(cache, batch_size=args.batch_size, augment=True, seconds=args.seconds)
    rows.append(("tf.data + augmentation in the map (--augment-on cpu)", augmented, "images/s",
                 f"the CPU path; batch {args.batch_size}, {args.image_size}px"))
    print(f"tf.data: {plain:.0f} images/s plain, {device_aug:.0f} device augmentation, "
          f"{both:.0f} both on the CPU, {augmented:.0f} CPU path", flush=True)
    figures.update({
        "input_images_per_sec_256": plain,
        "device_augment_images_per_sec_256": device_aug,
        "augment_device": device,
        "input_plus_device_augment_on_cpu_images_per_sec_256": both,
        "cpu_path_augmented_images_per_sec_256": augmented,
        "load_tfdata": _load(),
    })
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
    ratio = plain / model
    rows.append(
        (
            "input pipeline (device path) / model training",
            ratio,
            "x",
            "target >= 5x: " + ("met" if ratio >= 5 else "NOT met"),
        )
    )
    figures.update({f"{args.model}_train_images_per_sec_{args.image_size}": model,
                    "input_over_model": ratio})

    machine = describe_machine()
    width = max(len(r[0]) for r in rows)
    print(f"\nPipeline benchmark on {machine}")
    print(f"| {'measurement':<{width}} | {'value':>10} | {'unit':<8} | note")
    print(f"|{'-' * (width + 2)}|{'-' * 12}|{'-' * 10}|------")
    for name, value, unit, note in rows:
        shown = f"{value:>10.2f}" if unit == "x" else f"{value:>10.1f}"
        print(f"| {name:<{width}} | {shown} | {unit:<8} | {note}")
    print(f"load average now {os.getloadavg() if hasattr(os, 'getloadavg') else 'n/a'}")
    import shlex
    from datetime import date

    from zoo.results import software

    given = list(sys.argv[1:] if argv is None else argv)
    result = {
        "benchmark": "pipeline",
        "model": args.model,  # the model whose train rate the input is compared with
        "seed": 0,            # write_head_ct's seed
        "command": "python -m benchmarks.pipeline " + shlex.join(given),
        "source": f"measured with python -m benchmarks.pipeline {shlex.join(given)} on {machine}",
        "date": date.today().isoformat(),
        "software": software(),
        **figures,
        "machine": machine,
        "cores": cpus,
        "load_end": _load(),
        "quick": bool(args.quick),
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
