"""Faithfulness of Grad-CAM and LayerCAM on the phantoms that ship lesion masks.

    python -m benchmarks.explain            # ichnet + rensenet on head CT, rensenet on kidney, 256 px
    python -m benchmarks.explain --size 128 --epochs 8 --methods gradcam++ layercam  # ~4x faster
    python -m benchmarks.explain --models ichnet --no-kidney --size 256 --epochs 10 \
        --work-dir W [--pooling lse] [--model-kwargs '{"output_stride": 8}'] [--reuse]

At 128 px the ceiling of a stride-16 map on these thin lesions is 0.43 (0.87 at 256 px, both
models' default input), so the target is only reachable at 256 px or on a finer map.

For each (model, phantom): generate the phantom (pipelines.datasets.synthetic), prepare it into a
TFRecord cache with the real pipeline (patient-grouped train/val split), train briefly with
``zoo.training.run`` (the loop train.py uses) on the cached arrays, then compute the maps of the
positive class on every positive validation slice whose lesion mask is non-empty, and print

* the validation AUROC of that class (so a map is read next to how well the model works),
* the pointing-game hit rate: the heatmap's maximum falls inside the lesion mask
  (:func:`zoo.explain.pointing_game`; strict), and within ``--tolerance`` pixels of it,
* the mean fraction of heatmap energy inside the mask (:func:`zoo.explain.energy_in_mask`) and
  the mask's mean area fraction (what a uniform map would score),
* the ceiling the map's grid sets: the strict hit rate of the mask itself, area-averaged onto
  that grid and upsampled like a Grad-CAM map (thin crescents fall between cell centres).

Head CT: ``ichnet`` and ``rensenet``, both on the three CT windows with six sigmoid outputs;
the map of ``any`` is scored against the union of the lesion masks. Kidney stones: ``rensenet``
(grey PNGs, softmax normal/stone, class ``stone``).

Maps (``--methods``): Grad-CAM on the documented ``features`` layer (the last feature map,
stride 16 for both), on the last layer at stride 8 and 4 (what the resolution costs) and on
every scale fused by product; LayerCAM on every scale (:func:`zoo.explain.scale_layers`), fused
by product (``zoo.explain --method layercam``) and by max (LayerCAM's own fusion).
``--pooling lse`` trains the models with the log-sum-exp head instead of GAP. Target: hit rate
>= 0.8 for ichnet and rensenet on the head CT.

Every trained model's figures are also written to a result file (:mod:`zoo.results`), e.g.
``benchmarks/results/explain-ichnet-head-ct-seed0.json``, with the command, date, software
versions and configuration; a run whose arguments differ from the defaults gets the
differences as a variant in its name (``...-seed0-pooling=lse.json``). The explanation
table of docs/RESULTS.md (``python scripts/results_tables.py``) and the model cards (``zoo.results.measured``) read
those files, never typed figures. ``--results-dir`` writes elsewhere, ``--no-results`` nowhere.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
# the arguments that shape each phantom's figures (a difference from the default is a variant)
CONFIG_KEYS = {
    "head CT": ("size", "patients", "slices", "epochs", "batch", "lr", "augment", "methods",
                "pooling", "model_kwargs", "tolerance"),
    "kidney stones": ("size", "kidney_n", "epochs", "batch", "lr", "augment", "methods",
                      "pooling", "model_kwargs", "tolerance"),
}


def _arrays(cache: Path, data_dir: Path, split: str):
    """Images, labels, lesion masks (bool, image size) of one split of a cache."""
    from PIL import Image

    from pipelines import cells
    from pipelines.cache import make_dataset

    xs, ys, ids = [], [], []
    for x, y, meta in make_dataset(cache, split, batch_size=64, with_ids=True):
        xs.append(x.numpy())
        ys.append(y.numpy())
        ids += [i.decode() for i in meta["id"].numpy()]
    x, y = np.concatenate(xs), np.concatenate(ys)
    manifest = cells.read_csv(cache / "manifest.csv", dtype=str, keep_default_na=False)
    mask_of = dict(zip(manifest["id"], manifest["mask_path"]))
    masks = np.zeros(x.shape[:3], dtype=bool)
    for i, image_id in enumerate(ids):
        rel = mask_of.get(image_id, "")
        if rel and (data_dir / rel).is_file():
            with Image.open(data_dir / rel) as img:
                m = np.asarray(img.convert("L").resize(x.shape[2:0:-1], Image.NEAREST)) > 127
            masks[i] = m
    return x, y, masks


def _head_ct(root: Path, size: int, patients: int, slices: int, seed: int):
    from pipelines.cache import prepare
    from pipelines.datasets.synthetic import write_head_ct

    data = root / "head-ct"
    if not (data / "synthetic.json").is_file():  # reuse a --work-dir from an earlier run
        data = write_head_ct(data, patients=patients, slices=slices, size=size, seed=seed)
    cache = prepare("synthetic", data, root / "head-ct-cache", image_size=size, val_fraction=0.25,
                    test_fraction=0.0, seed=seed, progress=False)
    return data, cache


def _kidney(root: Path, size: int, n: int, seed: int):
    from pipelines.cache import prepare
    from pipelines.datasets.synthetic import write_kidney_stones

    data = root / "kidney"
    if not (data / "synthetic.json").is_file():
        data = write_kidney_stones(data, n=n, size=size, seed=seed)
    cache = prepare("folder", data, root / "kidney-cache", image_size=size, val_fraction=0.25,
                    test_fraction=0.0, seed=seed, progress=False)
    return data, cache


def _train(name, cache: Path, *, args, out: Path):
    """Train ``name`` on a prepared cache with zoo.training (the loop train.py uses)."""
    import keras

    import zoo
    from zoo.training import run

    def model_fn(input_shape, num_classes, activation):
        return zoo.get_model(name, input_shape=tuple(input_shape), num_classes=num_classes,
                             activation=activation, **_model_kwargs(args))

    if args.reuse and (out / "model.keras").is_file():
        return keras.saving.load_model(out / "model.keras", compile=False), float("nan")
    t0 = time.perf_counter()
    run({"model": name, "dataset": "synthetic", "cache_dir": os.fspath(cache),
         "epochs": args.epochs, "batch_size": args.batch, "lr": args.lr,
         "augment": args.augment, "export": False, "output_dir": os.fspath(out),
         "fresh": True, "seed": args.seed, "verbose": 0},
        model_fn=model_fn)
    secs = time.perf_counter() - t0
    return keras.saving.load_model(out / "model.keras", compile=False), secs


def _model_kwargs(args) -> dict:
    kwargs = dict(args.model_kwargs or {})
    if args.pooling:
        kwargs["pooling"] = args.pooling
    return kwargs


def _tag(args) -> str:
    """Run-folder suffix, so --reuse never picks up a model built with other arguments."""
    kwargs = _model_kwargs(args)
    return "".join(f"-{k}={v}" for k, v in sorted(kwargs.items())).replace("/", "_")


def _layers(model, strides) -> list[tuple[str, tuple]]:
    """``features`` plus, per stride in ``strides``, the last 4-D layer at that stride."""
    size = int(model.input_shape[1])
    out = [("features", tuple(model.get_layer("features").output.shape[1:3]))]
    for stride in strides:
        grid = size // stride
        names = [layer.name for layer in model.layers
                 if len(layer.output.shape) == 4 and layer.output.shape[1] == grid
                 and layer.name != "features"]
        if names and grid != out[0][1][0]:
            out.append((names[-1], (grid, grid)))
    return out


def resolution_ceiling(masks, grid) -> float:
    """Best strict hit rate any map on ``grid`` could score: the mask itself, area-averaged onto
    the grid and upsampled bilinearly as Grad-CAM maps are (thin lesions between cell centres
    are missed even by a perfect map)."""
    import tensorflow as tf

    from zoo.explain import pointing_game, upsample_maps

    small = tf.image.resize(masks.astype("float32")[..., None], grid, method="area")[..., 0]
    up = upsample_maps(small, masks.shape[1:3]).numpy()
    return float(np.nanmean(pointing_game(up, masks)))


def _maps(model, methods, strides=(8, 4)) -> list[tuple[str, list[str], str]]:
    """(method, layers, fusion) to score: Grad-CAM(++) on ``features``, on the last layer at
    each of ``strides`` and on every scale (product); LayerCAM on every scale, fused by product
    (ours) and by max (LayerCAM's)."""
    from zoo.explain import scale_layers

    out = []
    for method in methods:
        if method == "layercam":
            out += [(method, scale_layers(model), "product"), (method, scale_layers(model), "max")]
        else:
            out += [(method, [layer], "product") for layer, _ in _layers(model, strides)]
            out.append((method, scale_layers(model), "product"))
    return out


def _faithfulness(model, x, y_pos, masks, class_index, methods, tolerance: int = 0,
                  strides=(8, 4)) -> list[dict]:
    """One row per map: its pointing game on the positive slices that have a lesion mask."""
    from zoo.explain import class_activation_map, energy_in_mask, pointing_game

    sel = (y_pos > 0.5) & masks.reshape(len(masks), -1).any(axis=1)
    area = masks[sel].reshape(int(sel.sum()), -1).mean(axis=1)
    rows = []
    for method, layers, fusion in _maps(model, methods, strides):
        grids = [tuple(model.get_layer(name).output.shape[1:3]) for name in layers]
        finest = max(grids, key=lambda g: g[0] * g[1])
        heats = np.concatenate([
            class_activation_map(model, x[sel][i:i + 16], class_index, method=method,
                                 feature_layer=layers, fusion=fusion)
            for i in range(0, int(sel.sum()), 16)
        ])
        if len(layers) == 1:
            layer = f"{layers[0]} ({finest[0]}x{finest[1]})"
        else:
            layer = f"{len(layers)} scales {grids[-1][0]}..{finest[0]}, {fusion}"
        rows.append({
            "method": method, "layer": layer, "fusion": fusion, "scales": len(layers),
            "n": int(sel.sum()),
            "hit_rate": float(np.nanmean(pointing_game(heats, masks[sel]))),
            "hit_rate_tol": float(np.nanmean(pointing_game(heats, masks[sel],
                                                           tolerance=tolerance))),
            "tolerance": int(tolerance),
            "energy": float(np.nanmean(energy_in_mask(heats, masks[sel]))),
            "mask_area": float(area.mean()),
            "ceiling": resolution_ceiling(masks[sel], finest),
        })
    return rows


def run(args) -> list[dict]:
    from zoo.metrics import auroc

    rows = []
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-explain-"))
    root.mkdir(parents=True, exist_ok=True)
    s = args.size

    data, cache = _head_ct(root, s, args.patients, args.slices, args.seed)
    xv, yv, mv = _arrays(cache, data, "val")
    print(f"head CT phantom: {read_counts(cache)} slices at {s}px, {int(yv[:, 0].sum())} "
          "positive val slices", flush=True)
    for name in args.models:
        # six sigmoid outputs on the three CT windows; the map of "any" against the union mask
        model, secs = _train(name, cache, args=args, out=root / f"run-{name}-head{_tag(args)}")
        p = model.predict(xv, verbose=0)
        base = {"model": name, "phantom": "head CT", "class": "any", "train_s": secs,
                "val_auroc": auroc(yv[:, 0], p[:, 0])}
        for r in _faithfulness(model, xv, yv[:, 0], mv, 0, args.methods, args.tolerance):
            rows.append({**base, **r})
            _show(rows[-1])

    if "rensenet" in args.models and not args.no_kidney:
        data, cache = _kidney(root, s, args.kidney_n, args.seed)
        xv, yv, mv = _arrays(cache, data, "val")
        k = list(zoo_labels(cache)).index("stone")
        print(f"kidney-stone phantom: {read_counts(cache)} images at {s}px, "
              f"{int(yv[:, k].sum())} with stones in val", flush=True)
        model, secs = _train("rensenet", cache, args=args, out=root / f"run-rensenet-kidney{_tag(args)}")
        p = model.predict(xv, verbose=0)
        base = {"model": "rensenet", "phantom": "kidney stones", "class": "stone",
                "train_s": secs, "val_auroc": auroc(yv[:, k], p[:, k])}
        for r in _faithfulness(model, xv, yv[:, k], mv, k, args.methods, args.tolerance):
            rows.append({**base, **r})
            _show(rows[-1])
    return rows


def read_counts(cache) -> str:
    from pipelines.cache import read_info

    return ", ".join(f"{k} {v}" for k, v in read_info(cache)["splits"].items())


def zoo_labels(cache):
    from pipelines.cache import read_info

    return read_info(cache)["labels"]


def _show(row):
    print(f"  {row['model']} on {row['phantom']} [{row['method']} on {row['layer']}]: val AUROC {row['val_auroc']:.3f}, "
          f"hit rate {row['hit_rate']:.3f} (within {row['tolerance']}px: "
          f"{row['hit_rate_tol']:.3f}; ceiling {row['ceiling']:.3f}), energy {row['energy']:.3f} "
          f"(n={row['n']}, "
          f"{_secs(row['train_s'])}s training)", flush=True)


def _secs(value) -> str:
    return "-" if value != value else f"{value:.0f}"  # NaN: a reused model


def table(rows) -> str:
    tol = rows[0]["tolerance"] if rows else 0
    lines = [f"| model | phantom | class | map | layer (grid) | val AUROC | positive val slices | "
             f"pointing-game hit rate | ceiling at this grid | hit rate within {tol}px | "
             "energy in mask | mask area | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['phantom']} | {r['class']} | {r['method']} | "
                     f"{r['layer']} | {r['val_auroc']:.3f} | "
                     f"{r['n']} | {r['hit_rate']:.3f} | {r['ceiling']:.3f} | {r['hit_rate_tol']:.3f} | "
                     f"{r['energy']:.3f} | "
                     f"{r['mask_area']:.3f} | {_secs(r['train_s'])} |")
    return "\n".join(lines)


def result_records(rows, args, defaults: dict, command: str) -> list[dict]:
    """One result record (:mod:`zoo.results`) per trained model (model, phantom) in ``rows``."""
    records = {}
    for r in rows:
        key = (r["model"], r["phantom"])
        if key not in records:
            config = {k: getattr(args, k) for k in CONFIG_KEYS[r["phantom"]]}
            variant = "-".join(
                f"{k}={_flat(v)}" for k, v in config.items() if v != defaults.get(k)
            )
            records[key] = {
                "benchmark": "explain", "model": r["model"], "phantom": r["phantom"],
                "class": r["class"], "seed": args.seed, "variant": variant, "config": config,
                "command": command, "source": f"measured with {command}",
                "val_auroc": r["val_auroc"],
                "train_s": None if r["train_s"] != r["train_s"] else r["train_s"], "rows": [],
            }
        records[key]["rows"].append({k: v for k, v in r.items() if k not in (
            "model", "phantom", "class", "val_auroc", "train_s")})
    return list(records.values())


def _flat(value) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _json_object(text):
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"--model-kwargs must be a JSON object such as '{{\"output_stride\": 8}}', got {text!r}"
        )
    return value


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(prog="python -m benchmarks.explain", description=__doc__.split(
        "\n")[0])
    p.add_argument("--models", nargs="+", default=["ichnet", "rensenet"],
                   choices=("ichnet", "rensenet"))
    p.add_argument("--size", type=int, default=256,
                   help="phantom and model input size (default 256, both models' default input; "
                   "128 is ~4x faster but caps a stride-16 map's hit rate at 0.43)")
    p.add_argument("--patients", type=int, default=96)
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--kidney-n", type=int, default=320)
    p.add_argument("--no-kidney", action="store_true")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--augment", default="default",
                   help="training augmentation spec (pipelines.augment; default flips, small "
                   "rotations and zooms)")
    from zoo.explain import METHODS

    p.add_argument("--methods", nargs="+", choices=METHODS, default=["gradcam", "layercam"],
                   help="maps to score (default: Grad-CAM on features and on the last stride-8 "
                   "and stride-4 layers; LayerCAM fused over every scale, by product and by max)")
    from zoo.models.common import POOLINGS

    p.add_argument("--pooling", choices=POOLINGS, default=None,
                   help="the models' head pooling (default: each model's own, 'avg')")
    p.add_argument("--model-kwargs", type=_json_object, default=None,
                   help='more get_model arguments for every model trained, as JSON, e.g. '
                   '\'{"output_stride": 8}\'')
    p.add_argument("--tolerance", type=int, default=8,
                   help="pixels for the tolerant pointing game (Zhang et al. use 15 at ~224px)")
    p.add_argument("--reuse", action="store_true",
                   help="reuse models trained by an earlier run in --work-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", help="where phantoms and caches go (default: a temp folder)")
    p.add_argument("--results-dir", type=Path, default=RESULTS,
                   help="where the result files go (default benchmarks/results, which the docs/RESULTS.md "
                   "table and the model cards read)")
    p.add_argument("--no-results", action="store_true", help="write no result files")
    defaults = vars(p.parse_args([]))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args)
    print()
    print(table(rows))
    if not args.no_results:
        from zoo.results import write_result

        command = " ".join(["python -m benchmarks.explain", *map(shlex.quote, argv)])
        for record in result_records(rows, args, defaults, command):
            print(f"wrote {write_result(args.results_dir, record)}")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s; target: hit rate >= 0.8 for ichnet and "
          "rensenet on the head CT")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
