"""The CPMID transfer study in miniature: ``python -m benchmarks.transfer``.

One corpus is built with every downstream set (a source of the corpus spec, official test
split) left out (``pipelines.corpus --exclude``: the CPMID paper's design), each backbone is
pretrained on it once (``train.py --pretrain``), and each downstream training split (100% and
a seeded, stratified 10%) is fitted from each start::

    scratch            random init, all layers train
    corpus fine-tune   backbone from the corpus, new head, all layers (backbone LR x --backbone-lr-mult)
    corpus probe       backbone from the corpus, frozen; only the head trains (linear probe)
    imagenet           a local keras.applications file (--imagenet NAME=PATH), where one exists;
                       otherwise the row says "not available here"

``--corpus-per-downstream`` builds one corpus per downstream set instead, leaving only that set
out (leave-one-dataset-out; a pretraining per model and set, three times the cost).
``--corpus-exclude A,B,C`` names the left-out sources explicitly (processes that split the
downstream sets between them must name the same ones, to share the corpus). A finished run
stores its scores beside its weights (``transfer-result.json``, keyed by every setting of the
run), so a rerun, or processes that split the downstream sets between them over one
``--work-dir``, reuse it; the last full command then only writes the reports.

Test accuracy, balanced accuracy and macro AUROC (one-vs-rest) with bootstrap 95% CIs per run;
the table gives mean ± sd over seeds (the CI columns average the per-seed bounds). A CAM panel
shows scratch vs corpus fine-tune Grad-CAM on the same test images. Outputs (``--out``):
``transfer.csv`` (one row per run), ``transfer.md``, ``transfer.png``, ``transfer-cam.png``.

Default: 32 px, resnet18 + vit_tiny + ichnet_small, BreastMNIST, RetinaMNIST and PneumoniaMNIST
downstream, 3 seeds, pretraining 2 x 150 steps of 64, downstream 6 epochs of at most 30 steps:
sized for about an hour on 2 CPU cores (docs/RESULTS.md gives the measured wall time).
``--image-size 64 --epochs 30 --max-steps 200 --pretrain-epochs 10`` scale it up on a GPU.
``--quick`` is a smoke configuration: a pocket ichnet_small, one epoch of two steps, two seeds,
20 bootstrap resamples, and the loop's tf.functions run eagerly (tracing would cost more than
the steps).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from pipelines.fs import atomic_write_json

ROWS = ("scratch", "corpus fine-tune", "corpus probe", "imagenet")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.transfer", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--spec", default="configs/corpus-medical.yaml", help="corpus spec (pipelines.corpus)")
    p.add_argument("--downstream", default="breastmnist,retinamnist,pneumoniamnist",
                   help="spec sources used downstream, each left out of its corpus")
    p.add_argument("--models", default="resnet18,vit_tiny,ichnet_small")
    p.add_argument("--model-kwargs", type=json.loads, default={}, metavar="JSON",
                   help="builder keywords for every model, pretraining and downstream alike")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--fractions", default="1.0,0.1", help="shares of the downstream training split")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--pretrain-steps", type=int, default=150, help="steps per pretraining epoch")
    p.add_argument("--epochs", type=int, default=6, help="downstream epochs")
    p.add_argument("--max-steps", type=int, default=30, help="cap on downstream steps per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--backbone-lr-mult", type=float, default=0.3)
    p.add_argument("--imagenet", action="append", default=[], metavar="MODEL=PATH",
                   help="a local keras.applications weights file for MODEL (none is downloaded)")
    p.add_argument("--work-dir", default="runs/transfer", help="corpora, backbones and runs")
    p.add_argument("--out", default="benchmarks/results/transfer", help="CSV, Markdown and PNGs")
    p.add_argument("--corpus-exclude", default=None, metavar="NAMES",
                   help="one corpus (and one pretraining per model) with these sources left out, shared by "
                        "every downstream set (each must be among them), as in the CPMID paper; default: "
                        "the --downstream sets")
    p.add_argument("--corpus-per-downstream", action="store_true",
                   help="instead, one corpus per downstream set, leaving only that set out (a pretraining "
                        "per model and set: three times the cost of the default)")
    p.add_argument("--bn-calibration-batches", type=int, default=4,
                   help="training batches that set the batch-norm statistics before each evaluation")
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: report the finished runs in --work-dir (the others read 'not run'); "
                        "corpora and backbones must exist")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    return p


# -------------------------------------------------------------------------------- the data
_DECODED: dict = {}


def _decoded(source: dict, size: int):
    """(splits {train, val, test: (x float32 [N,S,S,C] in [0, 1], y one-hot)}, labels), decoded
    and resized once per (source, size) and kept for the next seed and fraction."""
    from pipelines.cache.decode import Row, to_cache_pixels
    from pipelines.datasets import get_adapter

    key = (source["name"], str(source["_data_dir"]), size)
    if key in _DECODED:
        return _DECODED[key]
    adapter = get_adapter(source["dataset"])
    df = adapter.read_manifest(source["_data_dir"], **(source.get("options") or {}))
    if "split" not in df.columns:
        raise ValueError(f"Downstream set {source['name']!r} has no official split; pick a source that ships one.")
    labels = list(adapter.manifest_labels(df))
    splits = {}
    for split in ("train", "val", "test"):
        part = df[df["split"] == split].reset_index(drop=True)
        y = part[labels].to_numpy(dtype=np.float32)
        x = np.stack([to_cache_pixels(np.asarray(adapter.load(Row(r), source["_data_dir"]), np.float32), (size, size))
                      for r in part.to_dict("records")])
        splits[split] = (x.astype(np.float32) / 255.0, y)  # [0, 1], as training and the model expect
    _DECODED[key] = (splits, labels)
    return splits, labels


def downstream_arrays(source: dict, size: int, fraction: float, seed: int):
    """(splits {train, val, test: (x float32 [N,S,S,C], y one-hot)}, labels) of a spec source;
    below ``fraction`` 1 the training split is a seeded, stratified share (at least 2 per class)."""
    splits, labels = _decoded(source, size)
    splits = dict(splits)
    if fraction < 1.0:
        x, y = splits["train"]
        rng = np.random.default_rng([seed, 10])
        keep = []
        for k in range(len(labels)):
            idx = np.flatnonzero(y[:, k] > 0.5)
            rng.shuffle(idx)
            keep.extend(idx[: max(2, int(round(fraction * len(idx))))])
        keep = np.sort(np.asarray(keep))
        splits["train"] = (x[keep], y[keep])
    return splits, labels


# ------------------------------------------------------------------------------ the scores
def scores(y, p, n_boot: int, seed: int) -> dict:
    from sklearn.metrics import balanced_accuracy_score

    from zoo.metrics import bootstrap_ci, macro_micro_auroc

    def metric(yt, yp):
        t, q = yt.argmax(1), yp.argmax(1)
        auc = macro_micro_auroc(yt, yp)[0] if yt.shape[1] > 2 else macro_micro_auroc(yt[:, 1:], yp[:, 1:])[0]
        return np.array([np.mean(t == q), balanced_accuracy_score(t, q) if len(set(t)) > 1 else np.nan, auc])

    point = metric(y, p)
    low, high = bootstrap_ci(metric, y, p, n_boot=n_boot, seed=seed)
    out = {}
    for i, name in enumerate(("accuracy", "balanced_accuracy", "auroc")):
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = float(point[i]), float(low[i]), float(high[i])
    return out


# --------------------------------------------------------------------------- one training
def train_one(cfg_values: dict, source, model_fn):
    """Fit with the zoo Trainer (no export); the model with its best validation weights."""
    import tensorflow as tf

    from zoo.training.config import TrainConfig
    from zoo.training.trainer import fit

    cfg = TrainConfig.coerce(cfg_values).validate()
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model, metrics = fit(cfg, source, strategy=tf.distribute.get_strategy(), run_dir=run_dir, model_fn=model_fn)
    if (run_dir / "best.weights.h5").is_file():
        model.load_weights(run_dir / "best.weights.h5")
    return model


def predict(model, x, batch=256):
    return np.concatenate([np.asarray(model(x[i:i + batch], training=False)) for i in range(0, len(x), batch)])


def pretrain(args, corpus: Path, model_name: str, work: Path, train: bool = True) -> Path:
    from zoo.training import run

    # every pretraining setting, and the corpus's card, is part of the name (a short hash): a
    # backbone from a shorter run, another learning rate or batch size, or a rebuilt corpus is
    # never reused
    config = {"pretrain": str(corpus), "model": model_name, "model_kwargs": dict(args.model_kwargs),
              "image_size": args.image_size, "bn_calibration_batches": args.bn_calibration_batches,
              "epochs": args.pretrain_epochs, "steps_per_epoch": args.pretrain_steps,
              "batch_size": args.batch_size, "lr": args.lr, "export": False, "verbose": 0,
              "augment": False, "warmup_epochs": 0.2, "fresh": True}
    card = corpus / "corpus_card.json"
    identity = {**config, "corpus_card": card.read_text() if card.is_file() else None}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    out = work / "backbones" / f"{model_name}-{corpus.name}-e{args.pretrain_epochs}x{args.pretrain_steps}-{digest}"
    path = out / "backbone.weights.h5"
    if path.is_file():
        return path
    if not train:
        raise FileNotFoundError(f"No pretrained backbone at {path}; run the study without --report-only first.")
    run({**config, "output_dir": str(out)})
    return path


RESULT_FILE = "transfer-result.json"


def finished_run(run_dir, key: dict):
    """The stored result of a finished run with exactly these settings (and its best weights, so
    the model can be rebuilt for the CAM panel), or None: a rerun or a second process sharing the
    work dir picks up where another stopped instead of training again."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file() or not (Path(run_dir) / "best.weights.h5").is_file():
        return None
    stored = json.loads(path.read_text())
    return stored if stored.get("key") == json.loads(json.dumps(key)) else None


def record_run(run_dir, key: dict, s: dict, seconds: float) -> None:
    atomic_write_json(Path(run_dir) / RESULT_FILE, {"key": key, "scores": s, "seconds": seconds})


# ---------------------------------------------------------------------------------- study
def study(args) -> list[dict]:
    import zoo
    from pipelines.corpus import build_corpus, load_spec
    from zoo.models.backbone import read_metadata
    from zoo.training.data import ArraySource
    from zoo.training.transfer import check_leak

    spec = load_spec(args.spec)
    by_name = {s["name"]: s for s in spec["sources"]}
    downstream = [d for d in args.downstream.split(",") if d]
    for d in downstream:
        if d not in by_name:
            raise SystemExit(f"benchmarks.transfer: error: downstream {d!r} is not a source of {args.spec}; sources are {', '.join(by_name)}.")
    if args.corpus_per_downstream:
        if args.corpus_exclude:
            raise SystemExit("benchmarks.transfer: error: --corpus-per-downstream leaves each downstream set "
                             "out of its own corpus; drop --corpus-exclude or that flag.")
        corpus_exclude = []
    else:
        corpus_exclude = [c for c in (args.corpus_exclude or args.downstream).split(",") if c]
    for d in downstream:
        if corpus_exclude and d not in corpus_exclude:
            raise SystemExit(f"benchmarks.transfer: error: downstream {d!r} is not in --corpus-exclude, so it "
                             f"would be inside the corpus; add it to --corpus-exclude.")
    models = [m for m in args.models.split(",") if m]
    fractions = [float(f) for f in args.fractions.split(",")]
    from zoo.models.imagenet import ARCHITECTURES as imagenet_archs

    imagenet = dict(item.split("=", 1) for item in args.imagenet)
    work = Path(args.work_dir)
    stem = Path(args.spec).stem.replace("corpus-", "")
    results = []
    cams = {}
    for d in downstream:
        left_out = corpus_exclude or [d]
        corpus = work / "corpora" / f"{stem}-{args.image_size}-no-{'-'.join(left_out)}"
        build_corpus(args.spec, corpus, image_size=args.image_size, exclude=left_out, progress=not args.quick)
        for m in models:
            backbone = pretrain(args, corpus, m, work, train=not args.report_only)
            meta = read_metadata(backbone)
            check_leak(meta, by_name[d]["dataset"], by_name[d]["_data_dir"], what=str(backbone))
            for fraction in fractions:
                for seed in range(args.seeds):
                    splits, labels = downstream_arrays(by_name[d], args.image_size, fraction, seed)
                    task = "binary" if len(labels) == 2 else "multi-class"
                    source = ArraySource(splits, labels=labels, task=task)
                    n_train = len(splits["train"][0])
                    batch = min(args.batch_size, max(8, n_train // 4))
                    steps = max(1, min(args.max_steps, n_train // batch))
                    for row in ROWS:
                        record = {"downstream": d, "model": m, "fraction": fraction, "seed": seed,
                                  "start": row, "train_images": n_train}
                        if row == "imagenet":
                            if m not in imagenet_archs or m not in imagenet:
                                results.append({**record, "status": "not available here"})
                                continue
                        weights = {"scratch": None, "imagenet": imagenet.get(m)}.get(row, str(backbone))
                        t0 = time.perf_counter()

                        def model_fn(shape, k, act, weights=weights, m=m):
                            return zoo.get_model(m, input_shape=tuple(shape), num_classes=k, activation=act,
                                                 weights=weights, **args.model_kwargs)

                        cfg_values = {
                            "model": m, **({"model_kwargs": dict(args.model_kwargs)} if args.model_kwargs else {}),
                            "epochs": args.epochs, "batch_size": batch, "steps_per_epoch": steps,
                            "lr": args.lr if row != "corpus probe" else args.lr * 5, "seed": seed,
                            "freeze_backbone": row == "corpus probe",
                            "backbone_lr_mult": args.backbone_lr_mult if row == "corpus fine-tune" else 1.0,
                            "output_dir": str(work / "runs" / f"{d}-{m}-{fraction}-{seed}-{row.replace(' ', '_')}"),
                            "export": False, "verbose": 0, "fresh": True, "augment": True,
                            "warmup_epochs": 0.2, "bn_calibration_batches": args.bn_calibration_batches,
                        }
                        want_cam = seed == 0 and fraction == fractions[0] and row in ("scratch", "corpus fine-tune")
                        key = {"config": cfg_values, "weights": weights, "train_images": n_train, "n_boot": args.n_boot}
                        done = finished_run(cfg_values["output_dir"], key)
                        x_test, y_test = splits["test"]
                        if done is not None:  # a finished run with the same settings: its scores
                            s, seconds, model = done["scores"], done["seconds"], None
                            if want_cam:
                                model = model_fn(source.input_shape, len(labels), source.activation)
                                model.load_weights(Path(cfg_values["output_dir"]) / "best.weights.h5")
                        elif args.report_only:
                            results.append({**record, "status": "not run"})
                            continue
                        else:
                            model = train_one(cfg_values, source, model_fn)
                            s = scores(y_test, predict(model, x_test), args.n_boot, seed)
                            seconds = round(time.perf_counter() - t0, 1)
                            record_run(cfg_values["output_dir"], key, s, seconds)
                        results.append({**record, "status": "ok", **s, "seconds": seconds})
                        print(f"{d:<15} {m:<13} {fraction:>4} seed {seed} {row:<17} acc {s['accuracy']:.3f} "
                              f"bacc {s['balanced_accuracy']:.3f} auroc {s['auroc']:.3f}", flush=True)
                        if want_cam:
                            cams[(d, m, row)] = (model, x_test[:4])
    return results, cams


# -------------------------------------------------------------------------------- reports
def summarise(results: list[dict]) -> list[dict]:
    groups = {}
    for r in results:
        groups.setdefault((r["downstream"], r["model"], r["fraction"], r["start"]), []).append(r)
    table = []
    for (d, m, f, start), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        row = {"downstream": d, "model": m, "fraction": f, "start": start, "seeds": len(ok)}
        if not ok:
            row["status"] = rs[0]["status"]
            table.append(row)
            continue
        row["status"] = "ok"
        row.update(seed_stats(ok))
        table.append(row)
    return table


def seed_stats(runs: list[dict], keys=("accuracy", "balanced_accuracy", "auroc")) -> dict:
    """Mean and sd over seeds of each score, and the mean of the per-seed bootstrap bounds."""
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in runs], dtype=float)
        out[k] = float(np.nanmean(vals))
        out[f"{k}_sd"] = float(np.nanstd(vals, ddof=1)) if len(vals) > 1 else 0.0
        out[f"{k}_lo"] = float(np.nanmean([r[f"{k}_lo"] for r in runs]))
        out[f"{k}_hi"] = float(np.nanmean([r[f"{k}_hi"] for r in runs]))
    return out


MAJORITY_LEVEL = 0.55  # balanced accuracy at or below this is the majority-class level


def did_not_learn(row: dict) -> str:
    """The note a summary row carries when it sits at the majority-class level."""
    if row.get("balanced_accuracy") is not None and row["balanced_accuracy"] <= MAJORITY_LEVEL:
        return "did not learn: majority class at this budget (see the command)"
    return ""


def markdown(table: list[dict], command: str) -> str:
    lines = ["| downstream | model | train share | start | accuracy | balanced accuracy | macro AUROC | seeds | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        if r["status"] != "ok":
            lines.append(f"| {r['downstream']} | {r['model']} | {r['fraction']:.0%} | {r['start']} | {r['status']} | | | 0 | |")
            continue
        cells = [f"{r[k]:.3f} ± {r[k + '_sd']:.3f} [{r[k + '_lo']:.3f}, {r[k + '_hi']:.3f}]"
                 for k in ("accuracy", "balanced_accuracy", "auroc")]
        note = did_not_learn(r)
        lines.append(f"| {r['downstream']} | {r['model']} | {r['fraction']:.0%} | {r['start']} | " + " | ".join(cells)
                     + f" | {r['seeds']} | {note} |")
    lines += ["", f"mean ± sd over seeds [mean of per-seed bootstrap 95% CIs]; command: `{command}`",
              "", f"A row whose balanced accuracy is at most {MAJORITY_LEVEL:.2f} predicts (nearly) one class: it is marked "
              "\"did not learn\" and measures the training budget, not the start."]
    lines += ["", *target_lines(table)]
    return "\n".join(lines) + "\n"


# MedMNIST v2 (Yang et al., Sci Data 2023), ResNet-18 (28) test accuracy: the bar
PUBLISHED_RESNET18_28 = {"breastmnist": 0.863, "retinamnist": 0.524, "pneumoniamnist": 0.854}


def target_lines(table: list[dict]) -> list[str]:
    """The issue's targets, read off the table: corpus start minus scratch in mean test
    accuracy (points), per downstream set, share and model; and the best corpus-initialised
    accuracy against MedMNIST v2's ResNet-18 (28)."""
    ok = {(r["downstream"], r["model"], r["fraction"], r["start"]): r for r in table if r["status"] == "ok"}
    lines = ["Corpus start − scratch, mean test accuracy in points (fine-tune / probe):", "",
             "| downstream | train share | " + " | ".join(sorted({k[1] for k in ok})) + " |",
             "|---|---|" + "---|" * len({k[1] for k in ok})]
    best = {}
    for d in sorted({k[0] for k in ok}):
        for f in sorted({k[2] for k in ok if k[0] == d}, reverse=True):
            cells = []
            for m in sorted({k[1] for k in ok}):
                scratch = ok.get((d, m, f, "scratch"))
                diffs = []
                for start in ("corpus fine-tune", "corpus probe"):
                    r = ok.get((d, m, f, start))
                    if r is not None:
                        best[d] = max(best.get(d, 0.0), r["accuracy"])
                    diffs.append("-" if r is None or scratch is None else
                                 f"{100 * (r['accuracy'] - scratch['accuracy']):+.1f}")
                cells.append(" / ".join(diffs))
            lines.append(f"| {d} | {f:.0%} | " + " | ".join(cells) + " |")
    lines += ["", "Best corpus-initialised test accuracy against MedMNIST v2's ResNet-18 (28): " + "; ".join(
        f"{d} {best[d]:.3f} vs {PUBLISHED_RESNET18_28[d]:.3f}" for d in sorted(best) if d in PUBLISHED_RESNET18_28) + "."]
    return lines


def plot(table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in table if r["status"] == "ok"]
    sets = sorted({(r["downstream"], r["fraction"]) for r in ok})
    starts = [s for s in ROWS if any(r["start"] == s for r in ok)]
    models = sorted({r["model"] for r in ok})
    fig, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets), 3.2), squeeze=False)
    for ax, (d, f) in zip(axes[0], sets):
        width = 0.8 / max(1, len(starts))
        for j, s in enumerate(starts):
            vals = [next((r["accuracy"] for r in ok if (r["downstream"], r["fraction"], r["model"], r["start"]) == (d, f, m, s)), np.nan) for m in models]
            sds = [next((r["accuracy_sd"] for r in ok if (r["downstream"], r["fraction"], r["model"], r["start"]) == (d, f, m, s)), 0) for m in models]
            ax.bar(np.arange(len(models)) + j * width, vals, width, yerr=sds, label=s)
        ax.set_xticks(np.arange(len(models)) + width * (len(starts) - 1) / 2, models, rotation=30, fontsize=7)
        ax.set_title(f"{d} {f:.0%}", fontsize=9)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cam_panel(cams, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.explain import class_activation_map

    keys = sorted({(d, m) for d, m, _ in cams})
    if not keys:
        return
    fig, axes = plt.subplots(2 * len(keys), 4, figsize=(8, 4 * len(keys)), squeeze=False)
    for i, (d, m) in enumerate(keys):
        for j, row in enumerate(("scratch", "corpus fine-tune")):
            if (d, m, row) not in cams:
                continue
            model, x = cams[(d, m, row)]
            pred = np.asarray(model(x, training=False)).argmax(1)
            for k in range(len(x)):
                heat = class_activation_map(model, x[k:k + 1], int(pred[k]))[0]
                ax = axes[2 * i + j][k]
                ax.imshow(x[k].mean(-1), cmap="gray")
                ax.imshow(heat, cmap="jet", alpha=0.4)
                ax.set_axis_off()
                ax.set_title(f"{d} {m}\n{row}" if k == 0 else "", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@contextlib.contextmanager
def _eager(on: bool):
    """--quick runs the training loop's tf.functions eagerly: its few steps on tiny images cost
    less than tracing the train, calibration and predict steps of every run (most of the
    smoke run's time otherwise); the same Python code runs, so the results do not change."""
    if not on:
        yield
        return
    import tensorflow as tf

    before = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(before)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.models, args.seeds, args.pretrain_epochs, args.pretrain_steps = "ichnet_small", 2, 1, 2
        args.epochs, args.max_steps, args.batch_size, args.n_boot, args.bn_calibration_batches = 1, 2, 16, 20, 1
        args.model_kwargs = {"stem": 8, "stages": [[8, 1], [8, 1]], "head": 16}  # a pocket ichnet_small
    command = "python -m benchmarks.transfer " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    try:
        with _eager(args.quick):
            results, cams = study(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"benchmarks.transfer: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = sorted({k for r in results for k in r}, key=lambda k: (k not in ("downstream", "model", "fraction", "seed", "start", "status"), k))
    with open(out / "transfer.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(results)
    table = summarise(results)
    (out / "transfer.md").write_text(markdown(table, command.strip()))
    (out / "transfer.json").write_text(json.dumps({"command": command.strip(), "seconds": round(time.perf_counter() - t0, 1),
                                                   "summary": table}, indent=2))
    plot(table, out / "transfer.png")
    cam_panel(cams, out / "transfer-cam.png")
    print((out / "transfer.md").read_text())
    print(f"wrote {out}/transfer.csv, transfer.md, transfer.png, transfer-cam.png in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
