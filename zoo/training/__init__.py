"""Training: strategy selection, the one custom loop, checkpoints and resume, export at the end.

    from zoo.training import run
    metrics = run({"model": "ichnet", "dataset": "synthetic", "epochs": 3})

``run(config)`` is what ``python train.py`` calls: it validates the config (cheap, before any
heavy work), picks the tf.distribute strategy, makes sure the data is there (the synthetic
phantom is generated, a dataset is prepared into a TFRecord cache once), trains with
:func:`zoo.training.trainer.fit` (resuming from the run directory's checkpoint when there is one),
saves ``model.keras`` with the best weights and exports a SavedModel version for TF Serving.

Run directory (``--output-dir``, default ``runs/<model>-<dataset>``): config.yaml, history.csv,
metrics.json, checkpoints/, logs/ (TensorBoard), best.weights.h5, model.keras.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import keras

import zoo
from pipelines.cache import PrepareError, prepare
from pipelines.cli import check_writable
from pipelines.corpus import corpus_sources
from pipelines.datasets import get_adapter, list_adapters
from pipelines.fs import atomic_write_json
from pipelines.yamlfile import YamlFileError, read_yaml
from zoo.export import export_saved_model
from zoo.models import medical
from zoo.models.backbone import is_backbone_file, read_metadata
from zoo.training.config import RESUME_KEYS, ConfigError, TrainConfig, resolve_switch
from zoo.training.data import CacheSource, DataSource
from zoo.training.strategy import configure_cpu_replicas, has_gpu, is_chief, make_strategy
from zoo.training.trainer import fit
from zoo.training.transfer import backbone_metadata, check_leak, write_backbone

__all__ = ["run", "TrainConfig", "ConfigError", "default_cache_dir", "default_output_dir"]


def default_output_dir(cfg: TrainConfig) -> str:
    return os.path.join("runs", f"{cfg.model}-{cfg.dataset}")


def default_cache_dir(cfg: TrainConfig) -> str:
    """``data/cache/<dataset>-<size>px-<key>``: one cache per data dir, size, windows, split
    (and adapter options)."""
    parts = [os.path.abspath(cfg.data_dir) if cfg.data_dir else None, cfg.image_size,
             cfg.windows, cfg.val_fraction, cfg.test_fraction, cfg.seed]
    if cfg.options:  # only when given, so caches made without options keep their key
        parts.append(dict(sorted(cfg.options.items())))
    if cfg.keep_path_ids:  # likewise: a cache keeping path ids is another cache
        parts.append("keep_path_ids")
    key = json.dumps(parts)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return os.path.join("data", "cache", f"{cfg.dataset}-{cfg.image_size}px-{digest}")


def _check_names(cfg: TrainConfig, *, data: bool = True) -> None:
    """Model and dataset names against the registry and the adapters (before heavy work)."""
    try:
        zoo.registry.model_entry(cfg.model)
    except KeyError as err:
        raise ConfigError(f"{err.args[0]} Pass one of them to --model (see --list-models).") from None
    if not data:
        return
    if cfg.cache_dir and (Path(cfg.cache_dir) / "dataset.json").is_file():
        return  # a prepared cache is enough, whatever the dataset name

    known = list_adapters()
    if cfg.dataset not in known:
        close = difflib.get_close_matches(cfg.dataset, known, n=2)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise ConfigError(f"Unknown dataset {cfg.dataset!r}{hint}; pass one of {', '.join(known)} to --dataset.")
    if get_adapter(cfg.dataset).default_data_dir is None and cfg.data_dir is None:
        raise ConfigError(
            f"--dataset {cfg.dataset} needs --data-dir (the folder or file of the dataset), or "
            "--cache-dir pointing at a prepared cache."
        )


def _adapter(name: str):
    """The registered dataset adapter ``name``, or None (a prepared cache may carry any name)."""
    return get_adapter(name) if name in list_adapters() else None


def _prepare_data(cfg: TrainConfig, chief: bool):
    """Make sure the cache exists (only the chief writes it); return a CacheSource."""
    cache = Path(cfg.cache_dir)
    if not (cache / "dataset.json").is_file():
        if chief:
            adapter = _adapter(cfg.dataset)
            if adapter is not None and adapter.default_data_dir is not None:
                if not Path(cfg.data_dir or adapter.default_data_dir).is_dir():
                    print(f"Generating the {cfg.dataset} dataset ...", flush=True)
                made = adapter.ensure_data(cfg.data_dir)
                cfg.data_dir = cfg.data_dir or os.fspath(made)
            # the path may name a patient: its id unless --keep-path-ids
            print(f"Preparing {cfg.dataset} from {cfg.shown_data_dir()} into {cache} ...", flush=True)
            try:
                prepare(cfg.dataset, cfg.data_dir, cache, image_size=cfg.image_size,
                        windows=cfg.windows, workers=cfg.prepare_workers,
                        val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                        seed=cfg.seed, progress=bool(cfg.verbose), options=cfg.options,
                        keep_path_ids=cfg.keep_path_ids)
            except PrepareError as err:  # all files quarantined, changed settings, ...
                raise ConfigError(str(err)) from None
        else:  # other workers wait for the chief's cache (shared filesystem)
            deadline = time.time() + 3600
            while not (cache / "dataset.json").is_file():
                if time.time() > deadline:
                    raise TimeoutError(f"Waited an hour for the chief to prepare {cache}.")
                time.sleep(2)
    return CacheSource(cache)


def _pretrain_setup(cfg: TrainConfig):
    """``--pretrain CORPUS``: train on the corpus cache; returns its sources (or None)."""
    if not cfg.pretrain:
        return None
    corpus = corpus_sources(cfg.pretrain)
    if corpus is None:
        raise ConfigError(f"--pretrain {cfg.pretrain!r} is not a corpus folder (no corpus_card.json); "
                          "build one with python -m pipelines.corpus.")
    cfg.cache_dir = cfg.pretrain
    cfg.dataset = f"corpus-{Path(cfg.pretrain).resolve().name}"
    cfg.data_dir = None
    return corpus


def _check_backbone(cfg: TrainConfig, *, data: bool):
    """A backbone in ``--weights`` (a backbone file, or ``medical``: the file shipped for
    ``--model`` at the size nearest ``--image-size``, checked against its card's sha256):
    readable, of ``--model``, and not trained on the downstream data (the leak check). Returns
    its metadata, or None for other weights."""
    if not cfg.weights:
        return None
    path, name, what = cfg.weights, cfg.weights, "--weights"
    if cfg.weights == medical.MEDICAL:
        try:
            path, card = medical.resolve(cfg.model, cfg.image_size)
            medical.verify(path, card)
        except medical.MedicalWeightsError as err:
            raise ConfigError(str(err)) from None
        name = what = f"--weights medical ({path.name})"
    elif not is_backbone_file(path):
        return None
    meta = read_metadata(path)
    if meta.get("model") and meta["model"] != cfg.model:
        raise ConfigError(
            f"The backbone {name} was pretrained as {meta['model']}, not {cfg.model}; pass "
            f"--model {meta['model']} or a backbone of {cfg.model}."
        )
    if data:
        check_leak(meta, cfg.dataset, cfg.data_dir, allow_overlap=cfg.allow_overlap, what=what)
    return meta


def _weights_record(cfg: TrainConfig, source, registry_model: bool) -> dict | None:
    """What the run starts from (``medical.describe``: file name, sha256, corpus sources), for
    the opening console lines, metrics.json and the export's card; None without ``--weights``
    or when a caller's ``model_fn`` builds the model."""
    if not cfg.weights or not registry_model:
        return None
    try:
        return medical.describe(cfg.weights, cfg.model, source.input_shape)
    except medical.MedicalWeightsError as err:
        raise ConfigError(str(err)) from None


def _check_outputs(cfg: TrainConfig, source) -> None:
    """Every folder the run will write, proved writable before any heavy work (one sentence)."""
    check_writable(cfg.output_dir, "--output-dir")
    if cfg.export:
        check_writable(cfg.export_dir, "--export-dir")
    if source is None and not (Path(cfg.cache_dir) / "dataset.json").is_file():
        check_writable(cfg.cache_dir, "--cache-dir")


def _registry_model_fn(cfg: TrainConfig):
    def model_fn(input_shape, num_classes, activation):
        try:
            return zoo.get_model(cfg.model, input_shape=tuple(input_shape), num_classes=num_classes,
                                 activation=activation, weights=cfg.weights, **cfg.model_kwargs)
        except TypeError as err:
            raise ConfigError(f"--model-kwargs do not fit {cfg.model!r}: {err}.") from None

    return model_fn


def _config_mismatch(old: dict, new: dict) -> list[str]:
    """RESUME_KEYS whose values differ; mixed_precision compares as resolved on this machine
    (a run saved with ``false`` resumes under the ``auto`` default on a CPU)."""
    def same(key):
        if key == "mixed_precision":
            return resolve_switch(old[key], has_gpu()) == resolve_switch(new.get(key), has_gpu())
        return old.get(key) == new.get(key)

    return [k for k in RESUME_KEYS if k in old and not same(k)]


def run(config: TrainConfig | dict | None = None, *, source: DataSource | None = None,
        model_fn=None) -> dict:
    """Train as ``config`` says and return the metrics (also written to metrics.json).

    ``source`` (any :class:`zoo.training.data.DataSource`: a ``CacheSource``, an ``ArraySource``
    or a user's own) replaces the dataset options; ``model_fn(input_shape, num_classes,
    activation)`` replaces the registry model.
    """
    cfg = TrainConfig.coerce(config).validate()
    corpus = _pretrain_setup(cfg)
    backbone_meta = _check_backbone(cfg, data=source is None)
    if model_fn is None:
        _check_names(cfg, data=source is None)
    if source is None:
        adapter = _adapter(cfg.dataset)
        if adapter is not None and adapter.default_data_dir and cfg.data_dir is None and not cfg.cache_dir:
            cfg.data_dir = adapter.default_data_dir  # generated when absent
        if adapter is not None:
            try:  # an option the adapter lacks: one sentence listing its options
                cfg.options = adapter.check_options(cfg.options)
            except ValueError as err:
                raise ConfigError(f"--option: {err}") from None
        cfg.cache_dir = cfg.cache_dir or default_cache_dir(cfg)
    cfg.output_dir = cfg.output_dir or default_output_dir(cfg)
    _check_outputs(cfg, source)

    configure_cpu_replicas(cfg.cpu_replicas)
    strategy = make_strategy(cfg.strategy, cfg.cpu_replicas)
    if cfg.batch_size % strategy.num_replicas_in_sync:
        n = strategy.num_replicas_in_sync
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is the global batch and must be divisible by the {n} "
            f"replicas; pass a multiple of {n}."
        )
    chief = is_chief(strategy)

    run_dir = Path(cfg.output_dir)
    config_path = run_dir / "config.yaml"
    if cfg.fresh and chief and run_dir.exists():
        for name in ("checkpoints", "logs", "history.csv", "metrics.json", "best.weights.h5"):
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    has_checkpoint = (run_dir / "checkpoints" / "checkpoint").is_file()
    if has_checkpoint and config_path.is_file():
        try:
            old = read_yaml(config_path, "run's saved config") or {}
        except YamlFileError as err:
            raise ConfigError(str(err)) from None
        differ = _config_mismatch(old, cfg.to_record())
        if differ:
            raise ConfigError(
                f"{run_dir} holds a checkpoint of a run with different {', '.join(differ)}; pass "
                "another --output-dir, or --fresh to start this run over."
            )

    if source is None:
        source = _prepare_data(cfg, chief)
    if hasattr(source, "balanced"):
        several = corpus is not None and len(corpus["sources"]) > 1
        sampling = cfg.sampling if cfg.sampling != "auto" else ("source" if several else "shuffle")
        source.balanced = {"shuffle": False, "class": "class", "source": "source"}[sampling]
    weights = _weights_record(cfg, source, registry_model=model_fn is None)
    if model_fn is None:
        model_fn = _registry_model_fn(cfg)
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(config_path)

    model, metrics = fit(cfg, source, strategy=strategy, run_dir=run_dir, model_fn=model_fn,
                         weights=weights)
    if chief:
        final_model = _final_model(model, model_fn, source, run_dir)
        final_model.save(run_dir / "model.keras")
        if cfg.pretrain:
            path = write_backbone(final_model, run_dir, backbone_metadata(cfg, source, corpus))
            metrics["backbone"] = os.fspath(path)
            print(f"Wrote {path} and backbone.json", flush=True)
        elif backbone_meta is not None:
            metrics["backbone"] = {"weights": cfg.shown_weights(), "model": backbone_meta.get("model"),
                                   "corpus_sources": (backbone_meta.get("corpus") or {}).get("sources")}
        if cfg.export and not cfg.pretrain:
            version = _export(final_model, cfg, source, metrics)
            metrics["export"] = os.fspath(version)
            print(f"Exported {version}", flush=True)
        atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


def _final_model(model, model_fn, source, run_dir):
    """A plain (undistributed, float32) copy of the model holding the best weights."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = model_fn(source.input_shape, len(source.labels), source.activation)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    copy.set_weights(model.get_weights())
    best = run_dir / "best.weights.h5"
    if best.is_file():
        copy.load_weights(best)
    return copy


def _export(model, cfg: TrainConfig, source, metrics):
    # the cache's preprocessing spec, so both signatures decode, resize and round as it did
    preprocessing = getattr(source, "spec", None) or dict(source.description)
    training_facts = {"labels": list(source.labels), "activation": source.activation,
                  "input": "float32 [batch, height, width, channels] in [0, 1]"}
    card = {"validation": {"split": cfg.eval_split, "best_epoch": metrics["best"]["epoch"],
                           "auroc": metrics["best"]["auroc"] or metrics["val_auroc"],
                           "auroc_mean": metrics["best"]["auroc_mean"],
                           "examples": metrics["final"]["examples"]},
            "initial_weights": metrics.get("weights")}
    return export_saved_model(model, cfg.export_dir, model_name=cfg.model, labels=list(source.labels),
                              config=cfg.to_record(), preprocessing=preprocessing,
                              training_data={**dict(source.description), **training_facts}, card=card)
