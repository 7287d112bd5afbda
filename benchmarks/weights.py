"""Rebuild every shipped medical backbone from ``../shared/data``: ``python -m benchmarks.weights``.

::

    python -m benchmarks.weights [--models ichnet,ichnet_small,...] [--size 64]

One command, three steps, each reused when its output is already there:

1. the corpus: ``configs/corpus-medical.yaml`` built at ``--size`` px with the downstream sets of
   the transfer study (BreastMNIST, PneumoniaMNIST, RetinaMNIST) held out, so a fine-tune on any
   of them passes the leak check (:func:`zoo.training.transfer.check_leak`);
2. one pretraining run per model (``train.py --pretrain``, the model's recipe, ``--epochs`` as the
   ceiling and early stopping on the corpus validation mean AUROC, ``--steps-per-epoch`` images
   per "epoch" so the curve has points); the run's ``history.csv`` is the curve;
3. the shipped files: the run's ``backbone.weights.h5`` copied to
   ``zoo/weights/<model>-medical-<size>.weights.h5`` with its card beside it
   (:func:`zoo.models.medical.write_card`: corpus card, held-out sources, this command, date,
   versions, the architecture it was pretrained in (``model_kwargs``: the model's recipe at this
   size, as ``train.py`` resolves it), corpus validation metric, curve, sha256). Each file's
   sha256 is printed. A file
   whose float32 form is over ``--max-bytes`` (2 MB, the package's budget per compact model) is
   stored as float16 (:func:`zoo.models.backbone.recast_backbone`; ``stored_dtype`` in the card),
   and one still over it is refused.

A rerun from scratch (``--fresh``) gives other bytes (threads, cuDNN, float order) but the same
corpus metric within the noise stated in ``docs/TRAINING.md``. The table goes to
``benchmarks/results/weights.json``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipelines.corpus import build_corpus  # noqa: E402
from pipelines.fs import atomic_path, atomic_write_json  # noqa: E402
from pipelines.yamlfile import read_yaml  # noqa: E402
from zoo.models.backbone import recast_backbone  # noqa: E402
from zoo.models.medical import WEIGHTS_DIR, write_card  # noqa: E402
from zoo.results import software  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "configs" / "corpus-medical.yaml"
MODELS = ("ichnet", "ichnet_small", "myositisnet", "rensenet_small", "mobilenetv3_small")  # shipped today; any registry name with a `features` layer works
HELD_OUT = ("breastmnist", "pneumoniamnist", "retinamnist")
RESULT = ROOT / "benchmarks" / "results" / "weights.json"
MAX_BYTES = 2_000_000  # per shipped file of a compact model (the weights issue's budget)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.weights", description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    p.add_argument("--size", type=int, default=64, help="corpus and input size in pixels")
    p.add_argument("--spec", default=str(SPEC), help="the corpus spec")
    p.add_argument("--corpus", default=None, help="corpus folder (default corpora/medical-<size>-heldout)")
    p.add_argument("--runs", default="runs/weights", help="where the pretraining runs go")
    p.add_argument("--out", default=str(WEIGHTS_DIR), help="where the shipped files go")
    p.add_argument("--epochs", type=int, default=30, help="the ceiling")
    p.add_argument("--early-stop", type=int, default=5, help="patience in epochs")
    p.add_argument("--steps-per-epoch", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out", default=",".join(HELD_OUT), help="spec sources left out of the corpus")
    p.add_argument("--fresh", action="store_true", help="retrain even where a finished run exists")
    p.add_argument("--json", default=str(RESULT), help="the result table")
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES,
                   help="size budget per shipped file: a larger float32 file is stored as float16")
    return p


def held_out(args) -> list[str]:
    return [s for s in args.held_out.split(",") if s]


def _finished(run_dir: Path) -> bool:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return (run_dir / "backbone.weights.h5").is_file() and bool(metrics.get("backbone"))


def pretrain(model: str, corpus: Path, run_dir: Path, args) -> None:
    """``train.py --pretrain`` for ``model`` into ``run_dir`` (resumes an interrupted run)."""
    cmd = [sys.executable, str(ROOT / "train.py"), "--pretrain", str(corpus), "--model", model,
           "--image-size", str(args.size), "--epochs", str(args.epochs), "--early-stop", str(args.early_stop),
           "--steps-per-epoch", str(args.steps_per_epoch), "--seed", str(args.seed),
           "--output-dir", str(run_dir), "--quiet"]
    if args.fresh:
        cmd.append("--fresh")
    print(" ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def curve(run_dir: Path) -> list[dict]:
    """Per epoch: corpus val mean AUROC and val loss, from the run's history.csv."""
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{"epoch": int(r["epoch"]), "val_auroc_mean": round(float(r["val_auroc_mean"]), 5),
             "val_loss": round(float(r["val_loss"]), 5), "train_loss": round(float(r["train_loss"]), 5)}
            for r in rows]


def store(src: Path, target: Path, max_bytes: int) -> str:
    """Copy the run's backbone ``src`` to ``target``, as float16 when the float32 file is over
    ``max_bytes``; returns the stored dtype. A file over the budget even then is refused."""
    if src.stat().st_size <= max_bytes:
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
        return "float32"
    with atomic_path(target) as tmp:  # refused: the file shipped before, if any, stays as it was
        size = Path(recast_backbone(src, tmp, "float16")).stat().st_size
        if size > max_bytes:
            raise SystemExit(f"The backbone {target.name} is {size} bytes even as float16, over the "
                             f"{max_bytes}-byte budget of a shipped file; ship a smaller model or raise "
                             "--max-bytes.")
    return "float16"


def ship(model: str, run_dir: Path, corpus: Path, args, command: str) -> dict:
    """Copy the run's backbone into the package folder with its card; returns the card."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    card_json = json.loads((corpus / "corpus_card.json").read_text())
    points = curve(run_dir)
    best = metrics.get("best_epoch")
    best_point = next((p for p in points if p["epoch"] == best), points[-1])
    target = Path(args.out) / f"{model}-medical-{args.size}.weights.h5"
    stored = store(run_dir / "backbone.weights.h5", target, args.max_bytes)
    kept = [s for s, v in (card_json.get("sources") or {}).items() if not (isinstance(v, dict) and v.get("excluded"))]
    card = {
        "model": model, "image_size": args.size, "channels": 1,
        # the architecture it was pretrained in (the recipe's at this size, e.g. ichnet's stride 8)
        "model_kwargs": read_yaml(run_dir / "config.yaml").get("model_kwargs") or {},
        "corpus": {"name": corpus.name, "sources": [s for s in kept if s not in held_out(args)],
                   "held_out": held_out(args), "card": card_json},
        "command": command, "date": datetime.date.today().isoformat(), "versions": software(),
        "corpus_metric": {"name": "corpus val mean AUROC (best epoch)", "value": best_point["val_auroc_mean"],
                          "val_loss": best_point["val_loss"]},
        "stored_dtype": stored, "best_epoch": best, "epochs_run": metrics.get("epochs_run"),
        "stopped_early": metrics.get("stopped_early"),
        "still_improving": metrics.get("still_improving"), "steps_per_epoch": args.steps_per_epoch,
        "curve": points,
    }
    return json.loads(write_card(target, card).read_text())


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    corpus = Path(args.corpus or f"corpora/medical-{args.size}-heldout")
    command = "python -m benchmarks.weights " + " ".join(argv if argv is not None else sys.argv[1:])
    if not (corpus / "corpus_card.json").is_file():
        build_corpus(args.spec, corpus, image_size=args.size, exclude=held_out(args), seed=args.seed, progress=False)
    rows = []
    for model in models:
        run_dir = Path(args.runs) / f"{model}-{args.size}"
        if args.fresh or not _finished(run_dir):
            pretrain(model, corpus, run_dir, args)
        card = ship(model, run_dir, corpus, args, command.strip())
        size_kb = (Path(args.out) / card["file"]).stat().st_size / 1024
        rows.append({"model": model, "size": args.size, "file": card["file"], "kib": round(size_kb, 1),
                     "stored_dtype": card["stored_dtype"],
                     "best_epoch": card["best_epoch"], "epochs_run": card["epochs_run"],
                     "stopped_early": card["stopped_early"], "corpus_val_auroc": card["corpus_metric"]["value"],
                     "corpus_val_loss": card["corpus_metric"]["val_loss"], "sha256": card["sha256"]})
        print(f"{card['file']}  sha256 {card['sha256']}", flush=True)
    atomic_write_json(args.json, {"benchmark": "weights", "model": ",".join(models), "seed": args.seed,
                                  "command": command.strip(), "date": datetime.date.today().isoformat(),
                                  "software": software(), "source": f"measured with {command.strip()}",
                                  "corpus": str(corpus), "rows": rows})
    print("\n| model | px | file KiB | best epoch / run | corpus val AUROC | val loss | sha256 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['model']}` | {r['size']} | {r['kib']:.0f} | {r['best_epoch']} / {r['epochs_run']} | "
              f"{r['corpus_val_auroc']:.4f} | {r['corpus_val_loss']:.4f} | `{r['sha256'][:16]}` |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
