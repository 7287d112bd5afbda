"""The MedMNIST v2 table for zoo models, trained to convergence: ``python -m benchmarks.medmnist``.

Each (set, model, size, seed) is trained by the zoo Trainer from the **model's own recipe**
(``zoo.model_info(name)["recipe"]``: optimiser, learning rate, batch, schedule, augmentation,
epochs as a ceiling and early-stopping patience on validation AUROC), nothing else set, on the
official training split; the best validation epoch's weights are scored once on the official
test split. So a row is what ``python train.py --dataset medmnist --data-dir <folder with the
npz> --model M --image-size S`` gives a user, scored on ``test``.

    python -m benchmarks.medmnist                      # the default study (hours on 2 CPU cores)
    python -m benchmarks.medmnist --sets breastmnist --models ichnet --seeds 0,1,2
    python -m benchmarks.medmnist --quick              # a seconds-long smoke run (CI)

Sets: BreastMNIST, RetinaMNIST, PneumoniaMNIST from ``../shared/data`` (28 px files, official
splits), upsampled to each size (32 px is the smallest the zoo's stride-32 models take; MedMNIST's
own baselines read 28 px). Reported per run: test accuracy (argmax, as MedMNIST v2 reports it),
balanced accuracy and AUROC (macro one-vs-rest; the positive class for binary sets) with
bootstrap 95% CIs, the best epoch, the epochs run, whether early stopping fired or the ceiling
was hit while the validation AUROC was still rising, parameters, training images/s and wall
time. The table gives mean ± sd over seeds. A row whose balanced accuracy sits at the majority
class (<= 0.55) or that hit the ceiling still improving is marked, not hidden.

A finished run stores its scores beside its weights (keyed by every setting), so a rerun resumes
where a stopped one ended. Results: ``benchmarks/results/medmnist.json`` (``--json``); the
table in ``docs/RESULTS.md`` is rendered from it by ``scripts/results_tables.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.transfer import (
    downstream_arrays,
    finished_run,
    predict,
    record_run,
    scores,
    seed_stats,
    train_one,
)
from pipelines.fs import atomic_write_json
from zoo.results import software

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SETS = {
    "breastmnist": "medmnist-extra/breastmnist.npz",
    "retinamnist": "medmnist-extra/retinamnist.npz",
    "pneumoniamnist": "medmnist/pneumoniamnist.npz",
}
MODELS = ("ichnet", "ichnet_small", "rensenet_small", "myositisnet", "mobilenetv3_small", "resnet18")
SIZES = (32, 64)
SEEDS = (0, 1, 2)
RESULT = ROOT / "benchmarks" / "results" / "medmnist.json"
CLASSES = {"breastmnist": 2, "retinamnist": 5, "pneumoniamnist": 2}


def majority_level(name: str) -> float:
    """Balanced accuracy at or below this is (nearly) one class, not a result: chance (1/k) + 0.05."""
    return 1.0 / CLASSES[name] + 0.05

# MedMNIST v2 (Yang et al., Scientific Data 10:41, 2023), Table 3: test (ACC, AUC)
PUBLISHED = {
    "breastmnist": {"ResNet-18 (28)": (0.863, 0.901), "ResNet-18 (224)": (0.833, 0.891),
                    "ResNet-50 (28)": (0.812, 0.857), "ResNet-50 (224)": (0.842, 0.866),
                    "AutoKeras": (0.831, 0.871), "Google AutoML Vision": (0.861, 0.919)},
    "retinamnist": {"ResNet-18 (28)": (0.524, 0.717), "ResNet-18 (224)": (0.493, 0.710),
                    "ResNet-50 (28)": (0.528, 0.726), "ResNet-50 (224)": (0.511, 0.716),
                    "AutoKeras": (0.503, 0.719), "Google AutoML Vision": (0.531, 0.750)},
    "pneumoniamnist": {"ResNet-18 (28)": (0.854, 0.944), "ResNet-18 (224)": (0.864, 0.956),
                       "ResNet-50 (28)": (0.854, 0.948), "ResNet-50 (224)": (0.884, 0.962),
                       "AutoKeras": (0.878, 0.947), "Google AutoML Vision": (0.946, 0.991)},
}
# MedMNIST+ (Doerrich et al., 2024): the best test accuracy of any model at 64 px
PUBLISHED_PLUS_64_ACC = {"breastmnist": 0.878, "retinamnist": 0.574, "pneumoniamnist": 0.893}
BAR = "ResNet-18 (28)"
COMPACT = 1_500_000  # parameters: the bar for a compact model


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.medmnist", description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default=",".join(SETS), help="comma-separated MedMNIST sets")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="input sizes in pixels")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="training seeds")
    p.add_argument("--data-dir", default=str(DATA), help="the folder holding medmnist/ and medmnist-extra/")
    p.add_argument("--work-dir", default="runs/medmnist", help="run folders (resumable)")
    p.add_argument("--json", default=str(RESULT), help="result file")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per run")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a training setting over the recipe (a study of the recipe, not the default table)")
    p.add_argument("--weights", default=None,
                   help="start from these weights: 'medical' (the shipped backbones) or a local file; default scratch")
    p.add_argument("--probe", action="store_true",
                   help="a linear probe: the --weights backbone frozen (batch norm too), only the head trains")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="share of the official training split (seeded, stratified), e.g. 0.1")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    p.add_argument("--merge", nargs="+", metavar="RESULT.json",
                   help="write --json from these result files (other sets or sizes) and train nothing")
    return p


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_one(args, name: str, model: str, size: int, seed: int) -> dict:
    """Train (or reuse) one run; its record for the result file."""
    import zoo
    from zoo.training.config import TrainConfig
    from zoo.training.data import ArraySource

    source_spec = {"name": name, "dataset": "medmnist", "_data_dir": Path(args.data_dir) / SETS[name]}
    splits, labels = downstream_arrays(source_spec, size, args.fraction, seed)
    start = start_name(args.weights, args.probe)
    if args.quick:  # a pocket of each split: the loop, the scores and the file, not the model
        splits = {k: (x[:48], y[:48]) for k, (x, y) in splits.items()}
    task = "binary" if len(labels) == 2 else "multi-class"
    source = ArraySource(splits, labels=labels, task=task)
    overrides = dict(item.split("=", 1) for item in args.override)
    cfg = {"model": model, "image_size": size, "seed": seed, "export": False, "verbose": 0,
           "fresh": True, **{k: _value(v) for k, v in overrides.items()},
           **({"freeze_backbone": True} if args.probe else {}),
           "output_dir": str(Path(args.work_dir) / (f"{name}-{model}-{size}px-seed{seed}"
                                                     + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
                                                     + (f"-{start_name(args.weights)}" if args.weights else "")
                                                     + ("-probe" if args.probe else "")
                                                     + (f"-frac{args.fraction:g}" if args.fraction < 1 else "")))}
    if args.weights:
        cfg["weights"] = args.weights
    if args.quick:
        cfg.update(epochs=2, steps_per_epoch=2, batch_size=16, bn_calibration_batches=1)
    arch = TrainConfig.coerce(cfg).model_kwargs  # the recipe's architecture under the overrides
    n_train = len(splits["train"][0])
    key = {"config": cfg, "train_images": n_train, "n_boot": args.n_boot, "weights": args.weights,
           "model_kwargs": arch}  # a run of another architecture is never reused
    record = {"set": name, "model": model, "size": size, "seed": seed, "train_images": n_train,
              "start": start, "fraction": args.fraction, "overrides": ",".join(sorted(args.override)),
              "model_kwargs": arch}
    done = finished_run(cfg["output_dir"], key)
    if done is None:
        def model_fn(shape, k, act):
            return zoo.get_model(model, input_shape=tuple(shape), num_classes=k, activation=act,
                                 weights=args.weights, **arch)

        t0 = time.perf_counter()
        net = train_one(cfg, source, model_fn)
        seconds = round(time.perf_counter() - t0, 1)
        x_test, y_test = splits["test"]
        s = scores(y_test, predict(net, x_test), args.n_boot, seed)
        s["parameters"] = int(net.count_params())
        record_run(cfg["output_dir"], key, s, seconds)
        done = {"scores": s, "seconds": seconds}
    metrics_file = Path(cfg["output_dir"]) / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    epochs_run = int(metrics.get("epochs_run") or metrics.get("epochs") or 0)
    rate = n_train * epochs_run / done["seconds"] if done["seconds"] and epochs_run else None
    return {**record, **done["scores"], "seconds": done["seconds"], "train_images_per_s": rate,
            "best_epoch": metrics.get("best_epoch"), "epochs_run": epochs_run,
            "stopped_early": metrics.get("stopped_early"), "still_improving": metrics.get("still_improving")}


def run_kwargs(run: dict) -> dict:
    """The run's architecture settings (``model_kwargs`` as the recipe and overrides resolved
    them); a run recorded before the field: its override's ``model_kwargs``, else the defaults."""
    kwargs = run.get("model_kwargs")
    if kwargs is None:
        text = run.get("overrides") or ""
        at = text.find("model_kwargs=")
        kwargs = json.JSONDecoder().raw_decode(text, at + len("model_kwargs="))[0] if at >= 0 else {}
    return kwargs


def arch(run: dict) -> str:
    """:func:`run_kwargs` as text ("" for the model's defaults): part of a run's identity, so
    rows of the same model at two output strides never merge."""
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(run_kwargs(run).items()))


def recipe_arch(run: dict) -> str:
    """:func:`arch` of what the model's recipe builds today at the run's size; "" for a name
    the registry does not know."""
    import zoo

    if run["model"] not in zoo.list_models():
        return ""
    recipe = zoo.model_entry(run["model"]).recipe
    return arch({"model_kwargs": recipe.architecture(run["size"])})


def is_recipe_row(row: dict) -> bool:
    """A row of what the recipe gives today: no overrides, and the recipe's architecture (a row
    recorded before the recipe changed the architecture is history, not the recipe)."""
    return not row.get("overrides") and arch(row) == recipe_arch(row)


def start_name(weights, probe: bool = False) -> str:
    """'scratch', 'medical', or the weights file's name; ' linear probe' added for a frozen backbone."""
    name = "scratch" if not weights else ("medical" if weights == "medical" else Path(str(weights)).name)
    return f"{name} linear probe" if probe else name


def summarise(runs: list[dict]) -> list[dict]:
    """Mean ± sd over seeds per (set, model, size), with the marks a row must carry."""
    groups: dict = {}
    for r in runs:
        key = (r["set"], r["model"], r["size"], r.get("start", "scratch"), r.get("fraction", 1.0),
               r.get("overrides", ""), arch(r))
        groups.setdefault(key, []).append(r)
    rows = []
    for (name, model, size, start, fraction, overrides, _), rs in groups.items():
        row = {"set": name, "model": model, "size": size, "start": start, "fraction": fraction,
               "overrides": overrides, "model_kwargs": run_kwargs(rs[0]), "seeds": len(rs),
               "parameters": rs[0].get("parameters"), "seconds": float(np.mean([r["seconds"] for r in rs]))}
        row.update(seed_stats(rs))
        rates = [r["train_images_per_s"] for r in rs if r.get("train_images_per_s")]
        row["train_images_per_s"] = float(np.mean(rates)) if rates else None
        row["best_epoch"] = [r.get("best_epoch") for r in rs]
        marks = []
        if row["balanced_accuracy"] <= majority_level(name):
            marks.append("did not learn: balanced accuracy at the majority-class level")
        if any(r.get("still_improving") for r in rs):
            marks.append("not converged: the ceiling was hit while validation AUROC still rose")
        row["marks"] = marks
        bar_acc, bar_auc = PUBLISHED[name][BAR]
        row["beats_bar"] = bool(row["accuracy"] > bar_acc and row["auroc"] > bar_auc and not marks)
        rows.append(row)
    return rows


def verdicts(rows: list[dict]) -> dict:
    """Per set: the best compact model (< 1.5 M parameters), and the bar: the row with the
    highest mean accuracy among those that beat the bar on accuracy and AUROC, else among all. Only
    rows of the recipe itself count (:func:`is_recipe_row`): a row trained with ``--override``
    is a study of the recipe, and one of an architecture the recipe no longer builds is history;
    neither is what a user gets from it."""
    out = {}
    for name in dict.fromkeys(r["set"] for r in rows):
        compact = [r for r in rows if r["set"] == name and (r["parameters"] or 0) < COMPACT and not r["marks"]
                   and r.get("fraction", 1.0) == 1.0 and is_recipe_row(r)]
        if not compact:
            out[name] = {"best": None}
            continue
        # a row that clears both bars first (a higher accuracy with a lower AUROC does not beat it)
        best = max(compact, key=lambda r: (r["beats_bar"], r["accuracy"], r["auroc"]))
        bar_acc, bar_auc = PUBLISHED[name][BAR]
        origin = "" if best.get("start", "scratch") == "scratch" else f" from {best['start']}"
        out[name] = {"best": f"{best['model']}{origin} @ {best['size']} px", "accuracy": best["accuracy"],
                     "auroc": best["auroc"], "bar": {"accuracy": bar_acc, "auroc": bar_auc},
                     "beats_bar": best["beats_bar"], "accuracy_sd": best.get("accuracy_sd", 0.0),
                     "short_by": {"accuracy": round(bar_acc - best["accuracy"], 4),
                                  "auroc": round(bar_auc - best["auroc"], 4)}}
    return out


def verdict_lines(result: dict) -> list[str]:
    """One line per set: the best compact model against MedMNIST v2 ResNet-18 (28)."""
    lines = []
    for name, v in result["verdicts"].items():
        if not v.get("best"):
            lines.append(f"- {name}: no compact model (< 1.5 M parameters) gave a result here.")
            continue
        word = "beats" if v["beats_bar"] else "does not beat"
        if v["beats_bar"] and -v["short_by"]["accuracy"] < (v.get("accuracy_sd") or 0.0):
            word = "ties with"
        lines.append(f"- {name}: the best compact model, {v['best']}, {word} {BAR} "
                     f"({v['accuracy']:.3f} / {v['auroc']:.3f} against {v['bar']['accuracy']:.3f} / "
                     f"{v['bar']['auroc']:.3f} accuracy / AUROC; short by {v['short_by']['accuracy']:+.3f} / "
                     f"{v['short_by']['auroc']:+.3f}, negative = ahead)"
                     + ("; the accuracy lead is under one seed sd." if word == "ties with" else "."))
    return lines


def transfer_lines(result: dict) -> list[str]:
    """Per set, model, size and share: the medical start against scratch (mean test accuracy)."""
    lines = []
    by = {(r["set"], r["model"], r["size"], r.get("fraction", 1.0), r.get("start", "scratch"),
           r.get("overrides", ""), arch(r)): r for r in result["rows"]}
    for (name, model, size, fraction, start, overrides, kwargs), r in by.items():
        # the recipe's scratch row of the same architecture, else of the model's defaults
        base = by.get((name, model, size, fraction, "scratch", "", kwargs)) or by.get(
            (name, model, size, fraction, "scratch", "", ""))
        if start == "scratch" or base is None:
            continue
        gain = r["accuracy"] - base["accuracy"]
        how = f" with {overrides}" if overrides else ""
        lines.append(f"- {name}, `{model}` @ {size} px, {fraction:.0%} of train: from {start}{how} "
                     f"{r['accuracy']:.3f} ± {r['accuracy_sd']:.3f} against scratch {base['accuracy']:.3f} ± "
                     f"{base['accuracy_sd']:.3f} test accuracy ({gain * 100:+.1f} points; AUROC "
                     f"{r['auroc']:.3f} against {base['auroc']:.3f}).")
    return lines


def with_provenance(result: dict) -> dict:
    """The keys every result file carries (zoo.results): benchmark, model, seed, command, date,
    software, source."""
    runs = result.get("runs", [])
    return {"benchmark": "medmnist", "model": ",".join(dict.fromkeys(r["model"] for r in runs)),
            "seed": sorted({r["seed"] for r in runs}), "date": time.strftime("%Y-%m-%d"),
            "software": software(), "source": f"measured with {result['command']}", **result}


def merge(paths, out) -> dict:
    """One result file from several (runs of other sets or sizes); rows and verdicts recomputed.

    A run is identified by its set, model, size, seed, start, fraction, overrides and
    architecture (:func:`arch`): one that
    is in several files counts once (the last file's), and a command is listed once."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    by_key = {}
    for run in (r for part in parts for r in part["runs"]):
        key = (run["set"], run["model"], run["size"], run["seed"], run.get("start", "scratch"),
               run.get("fraction", 1.0), run.get("overrides", ""), arch(run))
        by_key.pop(key, None)
        by_key[key] = run
    runs = list(by_key.values())
    seeds = sorted({r["seed"] for r in runs})
    commands = dict.fromkeys(c for p in parts for c in p["command"].split(" && "))
    result = {"command": " && ".join(commands),
              "settings": {"sets": list(dict.fromkeys(r["set"] for r in runs)),
                           "models": list(dict.fromkeys(r["model"] for r in runs)),
                           "sizes": sorted({r["size"] for r in runs}), "seeds": seeds,
                           "quick": any(p["settings"]["quick"] for p in parts),
                           "overrides": sorted({o for p in parts for o in p["settings"]["overrides"]})},
              "published": PUBLISHED, "published_plus_64_accuracy": PUBLISHED_PLUS_64_ACC, "runs": runs}
    result["rows"] = summarise(runs)
    result["verdicts"] = verdicts(result["rows"])
    result = with_provenance(result)
    atomic_write_json(out, result)
    return result


def _arch_label(row: dict) -> str:
    """", output_stride=8" for a recipe row with settings; a row of an architecture the recipe no
    longer builds says so."""
    if arch(row) == recipe_arch(row):
        return f", {arch(row)}" if arch(row) else ""
    return f", {arch(row) or 'the model defaults'} (an earlier recipe; today: {recipe_arch(row) or 'the defaults'})"


def table(result: dict) -> str:
    """The Markdown table (docs/RESULTS.md renders this)."""
    lines = ["| set | model | size | params | test accuracy | test AUROC | balanced acc. | best epochs | train img/s | wall s | note |",
             "|---|---|---:|---:|---|---|---|---|---:|---:|---|"]
    for r in result["rows"]:
        cell = {k: f"{r[k]:.3f} ± {r[k + '_sd']:.3f} [{r[k + '_lo']:.3f}, {r[k + '_hi']:.3f}]"
                for k in ("accuracy", "auroc", "balanced_accuracy")}
        rate = f"{r['train_images_per_s']:.0f}" if r.get("train_images_per_s") else ""
        model = f"`{r['model']}`" + ("" if r.get("start", "scratch") == "scratch" else f" from {r['start']}") \
            + ("" if r.get("fraction", 1.0) == 1.0 else f", {r['fraction']:.0%} of train") \
            + (f", {r['overrides']}" if r.get("overrides") else _arch_label(r))
        lines.append(f"| {r['set']} | {model} | {r['size']} | {r['parameters']:,} | {cell['accuracy']} | "
                     f"{cell['auroc']} | {cell['balanced_accuracy']} | {', '.join(map(str, r['best_epoch']))} | "
                     f"{rate} | {r['seconds']:.0f} | {'; '.join(r['marks'])} |")
    for name in dict.fromkeys(r["set"] for r in result["rows"]):
        for label, (acc, auc) in PUBLISHED[name].items():
            lines.append(f"| {name} | {label} (published) | | | {acc:.3f} | {auc:.3f} | | | | | MedMNIST v2 |")
        lines.append(f"| {name} | best at 64 px (published) | | | {PUBLISHED_PLUS_64_ACC[name]:.3f} | | | | | | MedMNIST+ |")
    lines += ["", f"mean ± sd over {len(result['settings']['seeds'])} seeds [mean of per-seed bootstrap 95% CIs]; "
              f"command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.probe and not args.weights:
        raise SystemExit("benchmarks.medmnist: error: --probe freezes a pretrained backbone; pass --weights "
                         "medical (or a weights file) with it.")
    if args.merge:
        result = merge(args.merge, args.json)
        print(table(result) + "\n" + "\n".join(verdict_lines(result)))
        return 0
    if args.quick:
        args.sets, args.models, args.sizes, args.seeds, args.n_boot = "breastmnist", "ichnet_small", "32", "0", 20
    names = [s for s in args.sets.split(",") if s]
    for name in names:
        if name not in SETS:
            raise SystemExit(f"benchmarks.medmnist: error: unknown set {name!r}; choose from {', '.join(SETS)}.")
        if not (Path(args.data_dir) / SETS[name]).is_file():
            raise SystemExit(f"benchmarks.medmnist: error: {Path(args.data_dir) / SETS[name]} is missing; "
                             "pass --data-dir pointing at the folder that holds medmnist/ and medmnist-extra/.")
    models = [m for m in args.models.split(",") if m]
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    for name in names:
        for model in models:
            for size in sizes:
                for seed in seeds:
                    r = run_one(args, name, model, size, seed)
                    runs.append(r)
                    print(f"{name:<15} {model:<18} {size:>3} px seed {seed}: acc {r['accuracy']:.3f} "
                          f"auroc {r['auroc']:.3f} bacc {r['balanced_accuracy']:.3f} best epoch "
                          f"{r['best_epoch']}/{r['epochs_run']} {r['seconds']:.0f} s", flush=True)
    rows = summarise(runs)
    command = "python -m benchmarks.medmnist " + shlex.join(argv if argv is not None else sys.argv[1:])
    result = {"command": command.strip(), "settings": {"sets": names, "models": models, "sizes": sizes,
                                                      "seeds": seeds, "quick": args.quick, "overrides": args.override},
              "published": PUBLISHED, "published_plus_64_accuracy": PUBLISHED_PLUS_64_ACC,
              "runs": runs, "rows": rows, "verdicts": verdicts(rows)}
    result = with_provenance(result)
    atomic_write_json(args.json, result)
    print(table(result) + "\n" + "\n".join(verdict_lines(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
