"""Do the paper blocks help? Each claim's paper form against its twins, on its phantom and real data.

    python -m benchmarks.ablations                       # every claim, 48 px, 3 seeds
    python -m benchmarks.ablations --claims edge_conservative --seeds 5 --epochs 20
    python -m benchmarks.ablations --dataset medmnist \\
        --data-dir ../shared/data/medmnist/pneumoniamnist.npz    # your data instead of BreastMNIST
    python -m benchmarks.ablations --claims edge_conservative rense_block multi_receptive_field \\
        --lesion kidney --ratio 1/16 --size 64 --real none  # real 4 px kidney stones
    python -m benchmarks.ablations --quick               # a smoke run in well under a minute

Claims, switches and twins come from :mod:`zoo.ablations`. For each claim, the paper form and
every twin (same widths and head, different only in the switched block) are trained with the
same seeds, data and schedule (Adam, plain ``model.fit`` on in-memory arrays, no augmentation,
early stopping on validation AUROC with the best epoch's weights restored: ``--patience``
epochs, ``--epochs`` the ceiling; a form whose seeds hit the ceiling while still improving is
marked "not converged")

* on the claim's phantom (:mod:`pipelines.phantoms`): the small-lesion sweep (one kidney stone
  of 1..8 px per positive, calcified vessel arcs on both classes) for the RenseNet and ICH
  claims, the muscle-ultrasound speckle set (trained on a mix of noise levels, tested at each)
  for the myositis claims;
* on the real small-lesion set with ``--lesion kidney`` instead of the phantom: stone /
  no-stone patches of the kidney-stone CT set (:mod:`pipelines.kidney_stones`) at a stated
  box-to-patch ``--ratio`` (at 64 px, ``--ratio 1/16`` makes the stones 4 px);
* on a real set: BreastMNIST (ultrasound, 28 px upsampled; malignant is the positive class) by
  default, ``--real pneumoniamnist`` for chest X-rays, or ``--dataset/--data-dir`` (any adapter
  train.py takes; its last label is the positive class unless ``--positive`` names one).

Reported per (claim, data, form): test AUROC mean +- sd over seeds; the paired difference
twin - paper with a 95% CI from a bootstrap that resamples seeds and test images together;
parameters, FLOPs (at the run's input size) and training images per second; on the lesion
sweep the AUROC per lesion diameter (positives of that diameter against every negative) and the
pointing game (strict, and within 2 px) of Grad-CAM on ``features`` and LayerCAM over every
scale on the positive test images; on the speckle set the AUROC per noise level.

Writes to ``--out-dir`` (default ``benchmarks/results``): ``ablations.csv``, ``ablations.md``,
``ablations-lesion-<claim>.png``, ``ablations-noise-<claim>.png`` and ``ablations.json`` (a
result file with the command, date, software, configuration and every per-seed figure).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.ablation_data import SHARED

RESULTS = Path(__file__).resolve().parent / "results"
# which registered variant stands for each claim (the small ones: the default run fits on CPU)
CLAIM_MODELS = {
    "edge_conservative": "rensenet_small",
    "rense_block": "rensenet_small",
    "soft_threshold": "myositisnet",
    "alternating_convs": "myositisnet",
    "multi_receptive_field": "ichnet_small",
}


# ---------------------------------------------------------------------------------------------
# training and scoring


def train_model(model_name, kwargs, train, val, *, seed, epochs, patience, batch, lr, eager=False,
                min_epochs=0):
    """Train one (model, switch) on arrays with early stopping on validation AUROC.

    Up to ``epochs`` epochs; after ``patience`` epochs without a better validation AUROC the run
    stops and the best epoch's weights are restored (``patience=0``: all ``epochs``, last
    weights); it never stops before ``min_epochs`` (slow starters are not cut off at chance).
    Returns (model, training images per second, info) where info holds
    ``best_epoch``, ``epochs_run``, ``best_val_auroc`` and ``rising`` (the ceiling was hit within
    ``patience`` epochs of the best: the run may not have converged; stricter than train.py's
    ``still_improving``, which looks at the last two epochs only, because a twin and its paper
    form are compared only when both had a full patience window).
    """
    import keras

    import zoo

    (x, y), (xv, yv) = train, val
    keras.utils.set_random_seed(seed)
    model = zoo.get_model(model_name, input_shape=tuple(x.shape[1:]), num_classes=2,
                          activation="softmax", **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy",
                  run_eagerly=eager)
    yy = keras.utils.to_categorical(y, 2)
    best, best_epoch, best_weights, secs = -np.inf, 0, None, 0.0
    epoch = 0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.fit(x, yy, batch_size=batch, epochs=1, verbose=0)
        if epoch > 1:  # the first epoch includes tracing
            secs += time.perf_counter() - t0
        if patience <= 0:
            continue
        score = auroc(yv, predict(model, xv))
        if score > best:
            best, best_epoch, best_weights = score, epoch, model.get_weights()
        elif epoch - best_epoch >= patience and epoch >= min_epochs:
            break
    if best_weights is not None:
        model.set_weights(best_weights)
    else:
        best_epoch = epoch
    img_s = len(x) * (epoch - 1) / secs if secs > 0 else float("nan")
    info = {"best_epoch": best_epoch, "epochs_run": epoch,
            "best_val_auroc": float(best) if best_weights is not None else None,
            "rising": bool(patience > 0 and epoch == epochs and epochs - best_epoch < patience)}
    return model, img_s, info


def predict(model, x):
    return model.predict(x, batch_size=128, verbose=0)[:, 1]


def auroc(y, p):
    from zoo.metrics import auroc as _auroc

    return float(_auroc(np.asarray(y), np.asarray(p)))


def paired_ci(y, p_paper, p_twin, *, n_boot=1000, seed=0):
    """Mean over seeds of AUROC(twin) - AUROC(paper) and a 95% bootstrap CI resampling the
    seeds and the test images (the same images for both forms: a paired comparison).

    ``p_paper``, ``p_twin``: [seeds, n_test] probabilities.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    pa, pb = np.asarray(p_paper), np.asarray(p_twin)
    diff = float(np.mean([auroc(y, b) - auroc(y, a) for a, b in zip(pa, pb)]))
    rng = np.random.default_rng(seed)
    out = []
    s = len(pa)
    for _ in range(n_boot):
        seeds = rng.integers(0, s, s)
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        out.append(np.mean([roc_auc_score(y[idx], pb[k][idx]) - roc_auc_score(y[idx], pa[k][idx])
                            for k in seeds]))
    lo, hi = np.percentile(out, [2.5, 97.5])
    return diff, float(lo), float(hi)


def per_diameter(y, diameter, p):
    """AUROC of the positives of each diameter against every negative."""
    neg = diameter == 0
    return {int(d): auroc(np.r_[np.zeros(neg.sum()), np.ones((diameter == d).sum())],
                          np.r_[p[neg], p[diameter == d]])
            for d in sorted(set(diameter[diameter > 0]))}


def pointing(model, x, mask, y):
    """Pointing game (strict and within 2 px) of Grad-CAM on features and LayerCAM on scales."""
    from zoo.explain import class_activation_map, pointing_game

    sel = (y == 1) & mask.reshape(len(mask), -1).any(axis=1)
    out = {}
    for key, method, layer in (("gradcam", "gradcam", "features"),
                               ("layercam", "layercam", "scales")):
        heat = np.concatenate([class_activation_map(model, x[sel][i:i + 32], 1, method=method,
                                                    feature_layer=layer)
                               for i in range(0, int(sel.sum()), 32)])
        out[key] = float(np.nanmean(pointing_game(heat, mask[sel])))
        out[key + "_2px"] = float(np.nanmean(pointing_game(heat, mask[sel], tolerance=2)))
    return out


def flops(model):
    try:
        from benchmarks.flops import count_flops

        return count_flops(model)
    except Exception:  # noqa: BLE001 - a FLOP count is a nicety; never lose a run over it
        return None


# ---------------------------------------------------------------------------------------------
# the run


def forms(claim, drop=()):
    """(label, kwargs) of the paper form and each twin not in ``drop`` ("switch=value")."""
    return [(f"{claim.switch}={claim.paper_value}", {})] + [
        (f"{claim.switch}={v}", {claim.switch: v}) for v in claim.twin_values
        if f"{claim.switch}={v}" not in drop]


def _data_label(which, args, real_name):
    if which == "lesion":
        return ("small-lesion phantom" if args.lesion == "phantom" else
                f"kidney-stone patches ({args.ratio * args.size:g} px stones)")
    return "speckle phantom" if which == "speckle" else real_name


def load_data(args, claims, seeds, work):
    """{which: {seed: bundle}} for the data the claims need, and the real set's name."""
    from benchmarks import ablation_data as ad

    data = {}
    if args.lesion != "none" and any(c.phantom == "small_lesion" for c in claims):
        if args.lesion == "kidney":
            kidney = ad.kidney_data(args.size, args.ratio, n_train=args.kidney_pairs,
                                    n_test=args.kidney_test_pairs, data_root=args.data_root)
            print(f"kidney-stone pairs (stone, no stone) per split: {kidney['pairs']}", flush=True)
            data["lesion"] = dict.fromkeys(seeds, kidney)
        else:
            data["lesion"] = {s: ad.lesion_data(args.size, args.n_train, args.n_test,
                                                args.diameters, s) for s in seeds}
    if not args.no_speckle and any(c.phantom == "speckle" for c in claims):
        data["speckle"] = {s: ad.speckle_data(args.size, args.n_train, args.n_test, args.noise, s)
                           for s in seeds}
    real_name = None
    if args.dataset:
        real_name = args.dataset
        real = ad.user_dataset(args.dataset, args.data_dir, args.size, work, positive=args.positive)
    elif args.real != "none":
        real_name = args.real
        real = ad.real_medmnist(args.real, args.size, n_train=args.real_n_train,
                                n_test=args.real_n_test, data_root=args.data_root)
    if real_name:
        data["real"] = dict.fromkeys(seeds, real)
    return data, real_name


def score(model, bundle, *, explain):
    """Test figures of a trained model on a bundle's test split."""
    test = bundle["test"]
    p = predict(model, test["x"])
    fig = {"p": p, "y": test["y"], "auroc": auroc(test["y"], p)}
    if "diameter" in test:
        fig["by_diameter"] = per_diameter(test["y"], test["diameter"], p)
    if "by_noise" in test:  # test["x"] is the noise levels' sets one after another
        ends = np.cumsum([len(ys) for _, ys in test["by_noise"].values()])
        fig["by_noise"] = {s: auroc(ys, part) for (s, (_, ys)), part
                           in zip(test["by_noise"].items(), np.split(p, ends[:-1]))}
    if explain and "mask" in test:
        fig["pointing"] = pointing(model, test["x"], test["mask"], test["y"])
    return fig


CHANCE_MARGIN = 0.55  # a mean test AUROC at or below this is "did not learn", not a result


def make_row(c, label, paper_label, per_seed, paper, data_name, model_name, n_boot):
    a = np.array([f["auroc"] for f in per_seed])
    rising = sum(f["rising"] for f in per_seed)
    row = {"claim": c.key, "paper": c.paper, "data": data_name, "model": model_name,
           "form": label, "is_paper": label == paper_label, "seeds": len(per_seed),
           "auroc_mean": float(a.mean()),
           "auroc_sd": float(a.std(ddof=1)) if len(a) > 1 else float("nan"),
           "auroc_per_seed": a.tolist(), "params": per_seed[0]["params"],
           "flops": per_seed[0].get("flops"),
           "train_img_s": float(np.nanmean([f["img_s"] for f in per_seed])),
           "best_epoch": [f["best_epoch"] for f in per_seed],
           "epochs_run": [f["epochs_run"] for f in per_seed],
           "converged": rising == 0}
    marks = []
    if rising:
        marks.append(f"not converged: {rising} of {len(per_seed)} seeds hit the epoch ceiling "
                     "within the patience window of their best validation AUROC")
    if a.mean() <= CHANCE_MARGIN:
        marks.append(f"did not learn: mean test AUROC {a.mean():.3f} is at chance "
                     f"(<= {CHANCE_MARGIN}); best epochs {row['best_epoch']}")
        row["learned"] = False
    if marks:
        row["mark"] = "; ".join(marks)
    if label != paper_label:
        d, lo, hi = paired_ci(per_seed[0]["y"], [f["p"] for f in paper],
                              [f["p"] for f in per_seed], n_boot=n_boot)
        row.update(diff=d, diff_lo=lo, diff_hi=hi)
    if "pointing" in per_seed[0]:
        row.update({f"pg_{k}": v for k, v in per_seed[0]["pointing"].items()})
    return row


def run(args) -> dict:
    from zoo.ablations import claim as get_claim

    work = Path(args.work_dir or "/tmp/medzoo-ablations")
    work.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    claims = [get_claim(k) for k in args.claims]
    data, real_name = load_data(args, claims, seeds, work)
    trained = {}  # (model, label, data, seed) -> figures; paper forms shared between claims

    def fit(model_name, kwargs, which, seed):
        key = (model_name, json.dumps(kwargs, sort_keys=True), which, seed)
        if key in trained:
            return trained[key]
        t0 = time.perf_counter()
        bundle = data[which][seed]
        epochs = (args.real_epochs or args.epochs) if which == "real" else args.epochs
        model, img_s, info = train_model(model_name, kwargs, bundle["train"], bundle["val"],
                                         seed=seed, epochs=epochs, patience=args.patience,
                                         batch=args.batch, lr=args.lr, eager=args.quick,
                                         min_epochs=args.min_epochs)
        fig = score(model, bundle, explain=seed == 0 and not args.no_explain)
        fig.update(info, img_s=img_s, params=int(model.count_params()),
                   seconds=time.perf_counter() - t0)
        if seed == 0:
            fig["flops"] = None if args.no_flops else flops(model)
        trained[key] = fig
        print(f"  {model_name} {kwargs or '(paper form)'} on {which}, seed {seed}: AUROC "
              f"{fig['auroc']:.3f}, best epoch {info['best_epoch']} of {info['epochs_run']}"
              f"{' (still rising)' if info['rising'] else ''} ({fig['seconds']:.0f}s)", flush=True)
        return fig

    rows, curves = [], {}
    for c in claims:
        model_name = CLAIM_MODELS[c.key] if args.model is None else args.model
        print(f"claim {c.key}: {model_name}, {c.switch} in {c.values}", flush=True)
        phantom = "lesion" if c.phantom == "small_lesion" else "speckle"
        for which in [w for w in (phantom, "real") if w in data]:
            figs = {label: [fit(model_name, {**args.model_kwargs, **kw}, which, s) for s in seeds]
                    for label, kw in forms(c, args.drop)}
            paper_label = forms(c, args.drop)[0][0]
            for label, per_seed in figs.items():
                rows.append(make_row(c, label, paper_label, per_seed, figs[paper_label],
                                 _data_label(which, args, real_name), model_name, args.n_boot))
                for kind, key in (("lesion", "by_diameter"), ("noise", "by_noise")):
                    if key in per_seed[0]:
                        curves.setdefault((kind, c.key), {})[label] = _mean_curve(per_seed, key)
    return {"rows": rows, "curves": curves}


def _mean_curve(per_seed, key):
    xs = sorted(per_seed[0][key])
    return {x: float(np.mean([f[key][x] for f in per_seed])) for x in xs}


# ---------------------------------------------------------------------------------------------
# reports


def verdict(row) -> str:
    """Plain words for a twin's paired difference (twin - paper)."""
    if "diff" not in row:
        return "paper form"
    if row["diff_hi"] < 0:
        return "paper form better"
    if row["diff_lo"] > 0:
        return "twin better"
    return "no difference shown"


def _f(v, fmt="{:.3f}"):
    return "-" if v is None or (isinstance(v, float) and v != v) else fmt.format(v)


def markdown(rows) -> str:
    lines = ["| claim | data | form | test AUROC (mean ± sd) | twin − paper [95% CI] | verdict | "
             "params | MFLOPs | train img/s | pointing game Grad-CAM / LayerCAM |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = (f"{r['diff']:+.3f} [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}]"
              if "diff" in r else "—")
        pg = (f"{r['pg_gradcam']:.2f} / {r['pg_layercam']:.2f}" if "pg_gradcam" in r else "—")
        form = f"**{r['form']}** (paper)" if r["is_paper"] else r["form"]
        if not r.get("converged", True):
            form += " (not converged)"
        if r.get("learned") is False:
            form += " (did not learn)"
        mflops = None if r["flops"] is None else r["flops"] / 1e6
        lines.append(f"| {r['claim']} | {r['data']} | {form} | {r['auroc_mean']:.3f} ± "
                     f"{_f(r['auroc_sd'])} | {ci} | {verdict(r)} | {r['params']:,} | "
                     f"{_f(mflops, '{:.1f}')} | {_f(r['train_img_s'], '{:.0f}')} | {pg} |")
    return "\n".join(lines)


CSV_KEYS = ("claim", "paper", "data", "model", "form", "is_paper", "seeds", "auroc_mean",
            "auroc_sd", "diff", "diff_lo", "diff_hi", "params", "flops", "train_img_s",
            "pg_gradcam", "pg_gradcam_2px", "pg_layercam", "pg_layercam_2px", "converged",
            "best_epoch")


def merge(paths) -> tuple[dict, list[str]]:
    """Rows and curves of several ``ablations.json`` files (runs of separate claims, e.g. in
    parallel processes), and their commands."""
    rows, curves, commands = [], {}, []
    for path in paths:
        record = json.loads(Path(path).read_text())
        rows += record["rows"]
        commands.append(record["command"])
        for name, lines in record["curves"].items():
            kind, key = name.split(":", 1)
            curves[(kind, key)] = {label: {float(x) if kind == "noise" else int(x): v
                                           for x, v in c.items()}
                                   for label, c in lines.items()}
    return {"rows": rows, "curves": curves}, commands


def write_outputs(result, args, command, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.results import software

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    path = out_dir / "ablations.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, CSV_KEYS, extrasaction="ignore")
        w.writeheader()
        w.writerows(result["rows"])
    written.append(path)
    md = out_dir / "ablations.md"
    md.write_text(f"Command: `{command}`\n\n" + markdown(result["rows"]) + "\n")
    written.append(md)
    for (kind, key), lines in result["curves"].items():
        fig, ax = plt.subplots(figsize=(5, 3.4), dpi=90)
        for label, curve in lines.items():
            xs = list(curve)
            style = "-o" if label.endswith(_paper_value(key)) else "--o"
            ax.plot(xs, [curve[x] for x in xs], style, ms=3, label=label)
        ax.set_xlabel("lesion diameter (px)" if kind == "lesion" else "added noise (sd)")
        ax.set_ylabel("test AUROC (mean over seeds)")
        ax.set_title(f"{key} ({'small-lesion' if kind == 'lesion' else 'speckle'} phantom, "
                     f"{args.size}px)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        png = out_dir / f"ablations-{'lesion' if kind == 'lesion' else 'noise'}-{key}.png"
        fig.savefig(png)
        plt.close(fig)
        written.append(png)
    png = stone_size_plot(result["rows"], out_dir, plt)
    if png:
        written.append(png)
    config = {k: v for k, v in vars(args).items() if k not in ("out_dir", "work_dir")}
    models = sorted({r["model"] for r in result["rows"]})
    record = {"benchmark": "ablations", "model": ",".join(models),
              "seed": list(range(args.seeds)), "command": command,
              "date": time.strftime("%Y-%m-%d"), "software": software(),
              "config": json.loads(json.dumps(config, default=str)),
              "source": f"measured with {command}",
              "rows": result["rows"],
              "curves": {f"{kind}:{key}": {label: {str(x): v for x, v in c.items()}
                                           for label, c in lines.items()}
                         for (kind, key), lines in result["curves"].items()}}
    js = out_dir / "ablations.json"
    js.write_text(json.dumps(record, indent=2, default=float) + "\n")
    written.append(js)
    return written


def stone_size_plot(rows, out_dir, plt):
    """Test AUROC against the stone's size in pixels, one line per (claim, form), where the
    rows hold kidney-stone patches at two or more box-to-patch ratios (merged runs)."""
    import re

    lines = {}
    for r in rows:
        m = re.fullmatch(r"kidney-stone patches \(([\d.]+) px stones\)", r["data"])
        if m:
            lines.setdefault((r["claim"], r["form"], r["is_paper"]), {})[float(m[1])] = r
    lines = {k: v for k, v in lines.items() if len(v) > 1}
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=90)
    for (_claim, form, is_paper), by_px in sorted(lines.items()):
        xs = sorted(by_px)
        ax.errorbar(xs, [by_px[x]["auroc_mean"] for x in xs],
                    yerr=[by_px[x]["auroc_sd"] for x in xs], fmt="-o" if is_paper else "--o",
                    ms=3, capsize=2, label=f"{form}{' (paper)' if is_paper else ''}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("stone size in the patch (px)")
    ax.set_ylabel("test AUROC (mean ± sd over seeds)")
    ax.set_title("kidney-stone patches: stone / no stone", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = out_dir / "ablations-kidney-stone-size.png"
    fig.savefig(png)
    plt.close(fig)
    return png


def _paper_value(key):
    from zoo.ablations import claim

    return claim(key).paper_value


# ---------------------------------------------------------------------------------------------
# command line


def _floats(text):
    return [float(v) for v in text.split(",")]


def _ratio(text):
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def _ints(text):
    return [int(v) for v in text.split(",")]


def parser():
    from zoo.ablations import CLAIMS

    p = argparse.ArgumentParser(prog="python -m benchmarks.ablations",
                                description=__doc__.split("\n")[0])
    g = p.add_argument_group("claims")
    g.add_argument("--claims", nargs="+", default=[c.key for c in CLAIMS],
                   choices=[c.key for c in CLAIMS])
    g.add_argument("--drop", nargs="+", default=[], metavar="SWITCH=VALUE",
                   help="twins to leave out to save time, e.g. downsample=max")
    g.add_argument("--model", help="train this registered variant for every claim instead of "
                   "the default per claim (it must have the claim's switch)")
    g.add_argument("--model-kwargs", type=json.loads, default={}, metavar="JSON",
                   help="builder arguments for every form, e.g. '{\"edge_detail_init\": \"zeros\"}' "
                   "(a study of the paper form; the rows keep their switch labels)")
    g = p.add_argument_group("data")
    g.add_argument("--size", type=int, default=48, help="input size in pixels (default 48)")
    g.add_argument("--n-train", type=int, default=480, help="phantom training images")
    g.add_argument("--n-test", type=int, default=320, help="phantom test images (per noise level)")
    g.add_argument("--diameters", type=_ints, default=list(range(1, 9)),
                   help="lesion diameters in px, comma separated (default 1..8)")
    g.add_argument("--noise", type=_floats, default=[0.0, 0.1, 0.2, 0.3],
                   help="speckle noise levels (sd), comma separated")
    g.add_argument("--lesion", choices=("phantom", "kidney", "none"), default="phantom",
                   help="the small-lesion claims' data: the phantom, stone / no-stone patches "
                   "of the kidney-stone CT set (pipelines.kidney_stones), or none")
    g.add_argument("--ratio", type=_ratio, default=1 / 16,
                   help="kidney patches: stone box side / patch side, e.g. 1/16 (at 64 px the "
                   "stones are 4 px)")
    g.add_argument("--kidney-pairs", type=int, default=None,
                   help="cap the kidney training (stone, no-stone) pairs; val gets a quarter")
    g.add_argument("--kidney-test-pairs", type=int, default=None, help="cap the test pairs")
    g.add_argument("--no-speckle", action="store_true",
                   help="the myositis claims on the real set only (skip the speckle phantom)")
    g.add_argument("--real", choices=("breastmnist", "pneumoniamnist", "none"),
                   default="breastmnist")
    g.add_argument("--real-n-train", type=int, default=None, help="cap the real training set")
    g.add_argument("--real-n-test", type=int, default=None, help="cap the real test set")
    g.add_argument("--data-root", type=Path, default=SHARED,
                   help="the shared data folder (default ../shared/data)")
    g.add_argument("--dataset", help="a dataset adapter (as in train.py) instead of --real")
    g.add_argument("--data-dir", help="the --dataset's folder or file")
    g.add_argument("--positive", help="the positive label of --dataset (default: the last)")
    g = p.add_argument_group("training")
    g.add_argument("--seeds", type=int, default=3)
    g.add_argument("--epochs", type=int, default=60, help="the ceiling on epochs (default 60)")
    g.add_argument("--patience", type=int, default=8,
                   help="stop after this many epochs without a better validation AUROC and "
                   "keep the best epoch's weights (default 8; 0 = train every epoch)")
    g.add_argument("--min-epochs", type=int, default=10,
                   help="never stop early before this epoch (default 10)")
    g.add_argument("--real-epochs", type=int, default=None, help="default: --epochs")
    g.add_argument("--batch", type=int, default=32)
    g.add_argument("--lr", type=float, default=2e-3)
    g = p.add_argument_group("output")
    g.add_argument("--n-boot", type=int, default=1000)
    g.add_argument("--no-explain", action="store_true", help="skip the pointing game")
    g.add_argument("--no-flops", action="store_true")
    g.add_argument("--quick", action="store_true",
                   help="smoke configuration: 32 px, tiny sets, 2 epochs, 2 seeds, eager")
    g.add_argument("--out-dir", type=Path, default=RESULTS)
    g.add_argument("--merge", nargs="+", type=Path, metavar="ABLATIONS_JSON",
                   help="train nothing: combine the result files of earlier runs (e.g. one "
                   "process per claim) into one set of outputs in --out-dir")
    g.add_argument("--work-dir", help="caches for --dataset (default /tmp/medzoo-ablations)")
    return p


QUICK = {"size": 32, "n_train": 24, "n_test": 24, "diameters": [1, 4, 8], "noise": [0.0, 0.2],
         "real_n_train": 24, "real_n_test": 24, "seeds": 2, "epochs": 2, "n_boot": 50,
         "no_flops": True}


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    args = p.parse_args(argv)
    if args.quick:
        given = {a.dest for a in p._actions if any(o in argv for o in a.option_strings)}
        for k, v in QUICK.items():
            if k not in given:
                setattr(args, k, v)
    if args.dataset and not args.data_dir:
        p.error("--dataset needs --data-dir (the dataset's folder or file).")
    if args.seeds < 2:
        p.error("--seeds must be at least 2 (a spread and a paired CI need two).")
    t0 = time.perf_counter()
    if args.merge:
        result, commands = merge(args.merge)
        command = "; ".join(commands)
        args.seeds = max(r["seeds"] for r in result["rows"])
        configs = [json.loads(Path(m).read_text())["config"] for m in args.merge]
        args.size, args.merged_configs = configs[0]["size"], configs
    else:
        result = run(args)
        command = " ".join(["python -m benchmarks.ablations", *map(shlex.quote, argv)])
    print()
    print(markdown(result["rows"]))
    for path in write_outputs(result, args, command, args.out_dir):
        print(f"wrote {path}")
    print(f"total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
