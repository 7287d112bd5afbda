#!/usr/bin/env python
"""Train any zoo model on any dataset adapter: flags -> TrainConfig -> zoo.training.run.

    python train.py                                   # the main job: synthetic head CT, ichnet
    python train.py --config configs/ichnet-synthetic.yaml --epochs 3
    python train.py --dataset medmnist --data-dir ../shared/data/medmnist/pneumoniamnist.npz \\
        --model ichnet --image-size 32
    TF_CONFIG='{...}' python train.py --strategy multiworker ...   # one process per worker
    python train.py --list-models
    python train.py --pretrain corpora/medical-64 --model resnet18 --image-size 64   # backbone
    python train.py --dataset medmnist --data-dir ../shared/data/medmnist-extra/breastmnist.npz \
        --model resnet18 --image-size 64 --weights runs/resnet18-corpus/backbone.weights.h5
    python train.py --model ichnet --weights medical   # the shipped medical backbone, offline

Precedence: built-in defaults < the model's training recipe (zoo.recipes: optimiser, lr, batch,
warmup, schedule, weight decay, label smoothing, augmentation, epochs, early stopping) <
--config FILE.yaml < flags. The resolved config is saved as config.yaml in the run directory,
with ``origins`` naming where each recipe option came from; running the same command again
resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.cli import debug, disk_full_message, is_disk_full, quiet_tf_startup  # noqa: E402

quiet_tf_startup()  # zoo imports Keras, which loads TensorFlow: silence its C++ start-up first

from zoo.recipes import DEFAULT_RECIPE, RECIPE_FIELDS  # noqa: E402
from zoo.training.config import (  # noqa: E402
    AUGMENT_ON,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    STRATEGIES,
    SWITCHES,
    ConfigError,
    TrainConfig,
    load_yaml,
    parse_model_kwargs,
)

S = argparse.SUPPRESS  # unset flags stay out of the namespace, so --config values survive


def _option(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"--option {text!r} is not KEY=VALUE; write e.g. --option channels=3.")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    r = DEFAULT_RECIPE  # the optimisation flags default to the model's recipe

    def recipe(name):
        return f"(default: the model's recipe; {getattr(r, name)} in the default recipe)"

    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train a medzoo model. With no flags: the main job (synthetic head CT, ichnet).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=S,
    )
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file of defaults (flags override)")
    p.add_argument("--list-models", action="store_true", help="print the model registry and exit")

    g = p.add_argument_group("data")
    g.add_argument("--dataset", help=f"dataset adapter (default {d.dataset})")
    g.add_argument("--data-dir", help="the dataset's folder or file (default: generated for synthetic)")
    g.add_argument("--cache-dir", help="TFRecord cache (default data/cache/<dataset>-<size>px-<key>)")
    g.add_argument("--image-size", type=int, help=f"square input size in pixels (default {d.image_size})")
    g.add_argument("--windows", help="CT windows as channels, e.g. brain,subdural,bone or 40/80,80/200")
    g.add_argument("--val-fraction", type=float, help=f"validation share of patients (default {d.val_fraction})")
    g.add_argument("--test-fraction", type=float, help=f"test share of patients (default {d.test_fraction})")
    g.add_argument("--split", "--eval-split", dest="eval_split",
                   help=f"split scored each epoch (default {d.eval_split})")
    g.add_argument("--augment", nargs="?", const=True,
                   help="augment training batches (on in the default recipe); optional spec "
                        "such as flip,rotation=10,zoom=0.1")
    g.add_argument("--no-augment", dest="augment", action="store_false", help="no augmentation")
    g.add_argument("--augment-on", choices=AUGMENT_ON,
                   help=f"where augmentation runs: 'device' = inside the replicated train step on "
                        f"the training device (tf.data only reads, decodes and batches); 'cpu' = "
                        f"in the tf.data map; the same batches either way (default {d.augment_on})")
    g.add_argument("--prepare-workers", type=int, help="processes for preparing the cache (default 1)")
    g.add_argument("--option", action="append", type=_option, metavar="KEY=VALUE",
                   help="an option of the dataset adapter, repeatable, as for python -m pipelines.prepare, "
                        "e.g. --option channels=3 (colour for the folder and csv datasets)")
    g.add_argument("--pretrain", metavar="CORPUS_DIR",
                   help="pretrain on a corpus from python -m pipelines.corpus; writes backbone.weights.h5 and backbone.json")
    g.add_argument("--sampling", choices=("auto", "shuffle", "class", "source"),
                   help="training sampling: auto = source-balanced for --pretrain, else shuffle")

    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"registry name (default {d.model}; see --list-models)")
    g.add_argument("--model-kwargs", help='JSON object of builder arguments, e.g. \'{"dropout": 0.2}\'; '
                   "merged over the recipe's own, if any (ichnet at <= 64 px: output_stride 8)")
    g.add_argument("--weights", help="'medical' (the medical backbone shipped with medzoo for --model, "
                                     "under a fresh head), a local .weights.h5/.keras file to start "
                                     "from, or a backbone.weights.h5 (pretrained backbone under a fresh head)")
    g.add_argument("--allow-overlap", action="store_true",
                   help="allow fine-tuning a backbone on a dataset that is one of its corpus sources")
    g.add_argument("--freeze-backbone", action="store_true", help="train only the head (linear probe)")
    g.add_argument("--backbone-lr-mult", type=float, help="backbone learning rate = --lr x this (default 1)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help=f"the ceiling on epochs {recipe('epochs')}")
    g.add_argument("--early-stop", type=int, metavar="PATIENCE",
                   help="stop when the scored split's mean AUROC has not improved for PATIENCE "
                        "epochs (the best epoch's weights are kept and exported); 0 = off "
                        f"{recipe('early_stop')}")
    g.add_argument("--ema", type=float, metavar="EPOCHS",
                   help="evaluate, keep and export a moving average of the weights over about this "
                        f"many epochs; 0 = off {recipe('ema')}")
    g.add_argument("--mixup", type=float, metavar="ALPHA",
                   help="MixUp in the train step: blend each image with another of its batch, "
                        f"labels alike, weight ~ Beta(ALPHA, ALPHA); 0 = off {recipe('mixup')}")
    g.add_argument("--cutmix", type=float, metavar="ALPHA",
                   help="CutMix in the train step (a box from another image, labels by area); "
                        f"with --mixup, batches alternate; 0 = off {recipe('cutmix')}")
    g.add_argument("--batch-size", type=int, help=f"GLOBAL batch, split over replicas {recipe('batch_size')}")
    g.add_argument("--lr", type=float, help=f"peak learning rate {recipe('lr')}")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help=recipe("optimizer"))
    g.add_argument("--weight-decay", type=float, help=recipe("weight_decay"))
    g.add_argument("--schedule", choices=SCHEDULES, help=f"decay after warmup {recipe('schedule')}")
    g.add_argument("--warmup-epochs", type=float, help=f"linear warmup length {recipe('warmup_epochs')}")
    g.add_argument("--loss", choices=LOSSES, help="auto = bce for multi-label, ce for multi-class")
    g.add_argument("--focal-gamma", type=float, help=f"focal loss gamma (default {d.focal_gamma})")
    g.add_argument("--class-weights", help="'balanced' or one comma-separated weight per label")
    g.add_argument("--label-smoothing", type=float, help=recipe("label_smoothing"))
    g.add_argument("--mixed-precision", nargs="?", const="on", choices=SWITCHES,
                   help="float16 compute with loss scaling on GPUs, bfloat16 on CPUs; auto = on "
                        "for GPUs, off for CPUs; the bare flag means on "
                        f"(default {d.mixed_precision})")
    g.add_argument("--jit-compile", choices=SWITCHES,
                   help="XLA-compile the forward and backward pass of the train step; auto = on "
                        "for GPUs, off for CPUs (CPU XLA measured 4-7x slower) "
                        f"(default {d.jit_compile})")
    g.add_argument("--seed", type=int, help="seeds weights, data order and augmentation (default 0)")
    g.add_argument("--steps-per-epoch", type=int, help="cap the steps of an epoch (default: one pass)")
    g.add_argument("--bn-calibration-batches", type=int,
                   help=f"training batches that set exact batch-norm statistics before each "
                        f"evaluation, 0 = off (default {d.bn_calibration_batches})")

    g = p.add_argument_group("distribution")
    g.add_argument("--strategy", choices=STRATEGIES,
                   help="auto: multi-worker if TF_CONFIG has several workers, mirrored if several GPUs")
    g.add_argument("--cpu-replicas", type=int,
                   help="split the CPU into N logical devices (MirroredStrategy without GPUs)")

    g = p.add_argument_group("output")
    g.add_argument("--output-dir", help="run directory (default runs/<model>-<dataset>)")
    g.add_argument("--export-dir", help=f"base of <model>/<version>/ exports (default {d.export_dir})")
    g.add_argument("--no-export", dest="export", action="store_false", help="skip the SavedModel export")
    g.add_argument("--checkpoint-steps", type=int, help=f"mid-epoch checkpoint interval (default {d.checkpoint_steps})")
    g.add_argument("--keep-checkpoints", type=int, help=f"checkpoints kept (default {d.keep_checkpoints})")
    g.add_argument("--fresh", action="store_true", help="discard the run directory's checkpoint and history")
    g.add_argument("--keep-path-ids", action="store_true",
                   help="record --data-dir itself in config.yaml, the cache and the export, and keep "
                        "file paths as ids in the cache (off by default: paths often hold names or "
                        "MRNs, so a digest of the folder's path is recorded instead)")
    g.add_argument("--quiet", dest="verbose", action="store_const", const=0, help="no progress bars")
    return p


def config_from_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    given = vars(args).copy()
    config_file = given.pop("config", None)
    given.pop("list_models", None)
    values = load_yaml(config_file) if config_file else {}
    if "option" in given:  # flags add to (and override) the config file's options
        values["options"] = {**(values.get("options") or {}), **dict(given.pop("option"))}
    values.pop("origins", None)  # a saved config.yaml: its values are given now, by the file
    if "model_kwargs" in given:
        given["model_kwargs"] = parse_model_kwargs(given["model_kwargs"])
    origins = {k: f"config file {config_file}" for k in values if k in RECIPE_FIELDS}
    origins.update({k: "flag" for k in given if k in RECIPE_FIELDS})
    values.update(given)
    values["origins"] = origins
    source = f"config file {config_file}" if config_file else "flags"
    return TrainConfig.from_dict(values, source=source), args


def list_models() -> None:
    import zoo

    for name in zoo.list_models():
        entry = zoo.registry.model_entry(name)
        info = entry.info
        doc = (entry.fn.__doc__ or "").strip().splitlines()
        shape = info.get("input_shape", "")
        print(f"{name:<22} {info.get('task', ''):<12} {str(tuple(shape)) if shape else '':<16} "
              f"{doc[0] if doc else ''}")


def main(argv=None) -> int:
    try:
        cfg, args = config_from_args(argv)
        if getattr(args, "list_models", False):
            list_models()
            return 0
        from zoo.training.strategy import configure_cpu_replicas

        configure_cpu_replicas(cfg.cpu_replicas)  # before anything initialises TensorFlow
        from zoo.training import run

        run(cfg)
    except (ConfigError, FileNotFoundError, NotADirectoryError, ValueError, KeyError) as err:
        if debug():
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"train.py: error: {message}", file=sys.stderr)
        return 2
    except Exception as err:  # a full disk (OSError, or TensorFlow's own error types)
        if debug() or not is_disk_full(err):
            raise
        print(f"train.py: error: {disk_full_message(err, cfg.output_dir or '.')}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
