"""Every model card: registry facts, export facts and evaluations, in one JSON and one Markdown file.

    card = build_export_card(model, model_name=..., version=1, labels=..., ...)  # zoo.export
    write_card(out_dir, card)                        # out_dir/model_card.{json,md}, once each
    update_model_card(version_dir, metrics={...})    # merge into assets.extra/model_card.*
    card = card_from_report(report, source)          # zoo.evaluation: a card from one report
    update_export_card(version_dir, report, source)  # merge an evaluation into an export's card

What lives here: the one reader of registry facts (:func:`registry_facts`, through the public
``zoo.model_info``), the one renderer (:func:`render_card`) and the one writer
(:func:`write_card`); ``zoo.export`` and ``zoo.evaluation`` call them and write no card
themselves.

An export's card accumulates evaluations: ``evaluations["<dataset>/<split>"]`` per run of
``python -m zoo.evaluate``; ``metrics`` holds a short summary line per evaluation;
``operating_point`` keeps the thresholds (and temperature) chosen on a validation split, which
later external evaluations reuse. Every evaluated card says it is not for diagnostic use and
lists the limitations the evaluation itself exposes (synthetic data, small samples, undefined
classes, wide intervals, thresholds not from validation).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path

import numpy as np

import zoo
from pipelines.cells import md_cell
from zoo.results import measured

__all__ = ["build_export_card", "card_from_report", "render_card", "write_card",
           "update_model_card", "update_export_card", "plain_data", "registry_facts",
           "ablation_lines", "INTENDED_USE", "NOT_FOR_DIAGNOSIS", "NOT_EVALUATED"]

CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
NOT_EVALUATED = "not evaluated yet"
NOT_FOR_DIAGNOSIS = ("Not for diagnostic use: this model is not a medical device, has not been "
                     "clinically validated, and must not inform the care of any patient.")
INTENDED_USE = ("Research and engineering on medical image classification (benchmarking, "
                "method development, teaching). " + NOT_FOR_DIAGNOSIS)
# What an export's card says before any evaluation (an evaluation replaces it by INTENDED_USE).
EXPORT_INTENDED_USE = ("Research and engineering on medical image classification; not a medical "
                       "device and not validated for clinical decisions.")
# Keys an evaluation adds; rendered in their own sections, never under "Other facts".
_OWN_KEYS = ("evaluations", "limitations", "operating_point", "not_for_diagnostic_use")


# --------------------------------------------------------------------------------------------
# Plain data and registry facts
# --------------------------------------------------------------------------------------------


def plain_data(obj):
    """Config objects -> YAML/JSON-safe builtins (dataclasses, paths, tuples, numpy scalars)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    elif hasattr(obj, "to_dict") and callable(obj.to_dict):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): plain_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [plain_data(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def registry_facts(model_name: str) -> dict:
    """Card facts from ``zoo.model_info`` when ``model_name`` is registered, else ``{}``.

    Keys: summary, paper, doi, task, feature_layer, from_paper, our_reading, ``measured`` (the
    benchmark result files of :mod:`zoo.results`, when there are any), ``shipped_weights`` (the
    medical backbones shipped with medzoo, ``weights="medical"``, when there are any), and the
    registered
    defaults as ``default_labels``, ``default_input_shape`` (and ``default_parameters`` when the
    registry has counted them): the card's own ``labels``, ``input_shape`` and ``parameters``
    describe the model that was exported or evaluated, which may differ from the defaults.
    """
    if model_name not in zoo.list_models():
        return {}
    # Without model_info's parameter count, which builds the model at its default size (seconds
    # for the big ones); the card counts the exported or evaluated model instead.
    info = zoo.model_info(model_name, count_params=False)
    keep = ("summary", "paper", "doi", "task", "labels", "input_shape", "feature_layer",
            "from_paper", "our_reading", "parameters", "recipe")
    facts = {k: info[k] for k in keep if k in info}
    for key in ("input_shape", "parameters", "labels"):
        if key in facts:
            facts[f"default_{key}"] = facts.pop(key)
    if info.get("weights"):  # the medical backbones shipped with medzoo (zoo.models.medical)
        facts["shipped_weights"] = info["weights"]
    if results := measured(model_name):  # benchmark result files, never constants in code
        facts["measured"] = results
    return plain_data(facts)


# --------------------------------------------------------------------------------------------
# Building a card: at export, from an evaluation report
# --------------------------------------------------------------------------------------------


def build_export_card(model, *, model_name: str, version, labels, config, input_shape,
                      signatures: dict, extra: dict | None = None) -> dict:
    """The card an export starts with: registry facts, the exported model, its signatures.

    ``signatures`` maps each serving signature to a one-line description; ``extra`` (the
    ``card=`` argument of ``export_saved_model``) is merged over everything else.
    """
    import keras
    import tensorflow as tf

    facts = registry_facts(model_name)
    h, w, c = input_shape
    card = {
        "model_name": model_name,
        "version": version,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "summary": facts.pop("summary", "") or f"{model_name} image classifier",
        "registered": bool(facts),
        **facts,
        "labels": list(labels),
        "input_shape": [h, w, c],
        "parameters": int(model.count_params()),
        "training": {
            k: config[k]
            for k in ("dataset", "image_size", "windows", "epochs", "batch_size", "seed")
            if isinstance(config, dict) and k in config
        },
        "signatures": dict(signatures),
        "metrics": {"status": NOT_EVALUATED},
        "intended_use": EXPORT_INTENDED_USE,
        "software": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    card.update(plain_data(extra or {}))
    return card


def _key(report: dict) -> str:
    d = report["data"]
    key = f"{d['dataset']}/{d['split']}"
    return key + (f"/scan-{d['aggregate']}" if d.get("aggregate") else "")


def _summary_line(report: dict) -> str:
    m = report["metrics"]
    ci = m.get("macro_auroc_ci95") or [None, None]
    macro = "undefined" if m["macro_auroc"] is None else f"{m['macro_auroc']:.3f}"
    text = f"macro AUROC {macro}"
    if ci[0] is not None:
        text += f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    return text + f", n={m['n']} {report['data']['level']}s of {m['n_groups']} patients"


def _evaluation_entry(report: dict) -> dict:
    m = report["metrics"]
    per = {
        lbl: {
            "auroc": pc["auroc"], "auroc_ci95": pc["auroc_ci95"], "status": pc["auroc_status"],
            "pr_auc": pc["pr_auc"], "threshold": pc["threshold"],
            "sensitivity": pc["sensitivity"], "specificity": pc["specificity"], "f1": pc["f1"],
            "positives": pc["positives"], "negatives": pc["negatives"],
        }
        for lbl, pc in m["per_class"].items()
    }
    return {
        "date": report["created"],
        "data": report["data"],
        "label_mapping": report["label_mapping"],
        "operating_point": report["operating_point"],
        "macro_auroc": m["macro_auroc"], "macro_auroc_ci95": m["macro_auroc_ci95"],
        "micro_auroc": m["micro_auroc"], "micro_auroc_ci95": m["micro_auroc_ci95"],
        "ece": m["ece"], "brier": m["brier"], "accuracy": m.get("accuracy"),
        "per_class": per,
    }


def _limitations(report: dict, card: dict) -> list[str]:
    d, m = report["data"], report["metrics"]
    out = []
    if d["dataset"] == "synthetic" or "synthetic" in str(card.get("training", {})):
        out.append("Trained and/or evaluated on a synthetic phantom: the numbers say the code "
                   "works, nothing about performance on real patients.")
    if m["n_groups"] < 100:
        out.append(f"Small evaluation sample ({m['n_groups']} patients): wide confidence "
                   "intervals; differences between models may not be significant.")
    undefined = [k for k, pc in m["per_class"].items() if pc["auroc"] is None]
    if undefined:
        out.append(f"AUROC undefined for {', '.join(undefined)} (no positives or no negatives in "
                   "the evaluated data).")
    kind = report["operating_point"]["source"].get("kind")
    if kind != "validation split":
        out.append(f"Operating thresholds not chosen on a validation split of this evaluation "
                   f"({kind}); sensitivity and specificity may not transfer.")
    if d.get("aggregate"):
        out.append(f"Scan-level scores are {d['aggregate']} aggregates of slice probabilities; "
                   "the model never saw a whole scan.")
    out += [
        "One dataset per evaluation: performance can drop on other scanners, protocols, "
        "populations and label definitions (external validation needed per site).",
        "Probabilities are calibrated only as far as the reported ECE shows; not risk estimates.",
    ]
    return out


def card_from_report(report: dict, source, existing: dict | None = None) -> dict:
    """A model card dict from the registry facts, an existing card and one evaluation report."""
    card = dict(existing or {})
    if not card:
        card.update({"model_name": source.model_name, "labels": list(source.labels),
                     "input_shape": list(source.input_shape), "task": source.task})
        if source.model is not None:  # in memory (a run's): count it; an export's is not loaded
            card["parameters"] = int(source.model.count_params())
        card.update({k: v for k, v in registry_facts(source.model_name).items()
                     if k != "task"})
        card.setdefault("task", source.task)
    evaluations = dict(card.get("evaluations") or {})
    evaluations[_key(report)] = _evaluation_entry(report)
    card["evaluations"] = evaluations
    metrics = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
    metrics = {k: v for k, v in metrics.items() if k != "status"}
    metrics[_key(report)] = _summary_line(report)
    card["metrics"] = metrics
    op = report["operating_point"]
    if op["source"].get("kind") == "validation split":
        card["operating_point"] = {"thresholds": op["thresholds"],
                                   "temperature": op.get("temperature"),
                                   "source": f"{op['source'].get('dataset')} val split "
                                   f"({op['source'].get('rule')})"}
    card["intended_use"] = INTENDED_USE
    card["not_for_diagnostic_use"] = True
    card["limitations"] = _limitations(report, card)
    return json.loads(json.dumps(card, default=str))


# --------------------------------------------------------------------------------------------
# The one renderer and the one writer
# --------------------------------------------------------------------------------------------


def _md_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_md_value(v)}" for k, v in value.items())
    return str(value)


def _fmt(v):
    return "undefined" if v is None else f"{v:.3f}"


def _facts_lines(card: dict) -> list[str]:
    """The model, its signatures, training, metrics summary, intended use and other facts."""
    lines = [f"# Model card: {card.get('model_name', 'model')} (version {card.get('version', '-')})",
             ""]
    if card.get("summary"):
        lines += [str(card["summary"]), ""]
    lines += ["## Model", ""]
    for key, title in (("task", "Task"), ("paper", "Paper"), ("doi", "DOI"),
                       ("input_shape", "Input (H, W, C)"), ("parameters", "Parameters"),
                       ("labels", "Labels (output order)"), ("exported_at", "Exported"),
                       ("software", "Software")):
        if card.get(key) not in (None, "", [], {}):
            lines.append(f"- {title}: {_md_value(card[key])}")
    for key, title in (("from_paper", "From the paper"), ("our_reading", "Our reading")):
        if card.get(key):
            lines += ["", f"### {title}", ""] + [f"- {item}" for item in card[key]]
    lines += _weights_lines(card.get("shipped_weights") or [])
    lines += _measured_lines(card.get("measured") or {})
    lines += _recipe_lines(card.get("recipe") or {})
    lines += ["", "## Serving signatures", ""]
    lines += [f"- `{name}`: {desc}" for name, desc in card.get("signatures", {}).items()]
    if card.get("training"):
        lines += ["", "## Training", ""]
        lines += [f"- {k}: {_md_value(v)}" for k, v in card["training"].items()]
        if card.get("initial_weights"):
            lines.append(f"- started from: {_started_from(card['initial_weights'])}")
        lines.append("- Full resolved config: `assets.extra/config.yaml`")
    lines += ["", "## Metrics", ""]
    metrics = card.get("metrics") or {"status": NOT_EVALUATED}
    if set(metrics) == {"status"}:
        lines.append(f"{str(metrics['status']).capitalize()}.")
    else:
        lines += [f"- {k}: {_md_value(v)}" for k, v in metrics.items()]
    if card.get("intended_use"):
        lines += ["", "## Intended use", "", str(card["intended_use"])]
    shown = {"model_name", "version", "summary", "task", "paper", "doi", "input_shape",
             "parameters", "labels", "exported_at", "software", "from_paper", "our_reading",
             "signatures", "training", "metrics", "intended_use", "measured", "recipe",
             "shipped_weights", "initial_weights", *_OWN_KEYS}
    other = {k: v for k, v in card.items() if k not in shown and v not in (None, "", [], {})}
    if other:
        lines += ["", "## Other facts", ""] + [f"- {k}: {_md_value(v)}" for k, v in other.items()]
    return lines


def _weights_lines(shipped: list) -> list[str]:
    """The medical backbones shipped for the model (``weights="medical"``); [] without any."""
    if not shipped:
        return []
    lines = ["", "### Shipped pretrained weights (`weights=\"medical\"`)", ""]
    for w in shipped:
        metric = w.get("corpus_metric") or {}
        score = f", corpus {metric.get('name')} {metric.get('value')}" if metric else ""
        lines.append(f"- {w.get('file')}: {w.get('image_size')} px, {w.get('channels')} "
                     f"channel(s), sha256 {w.get('sha256')}{score}")
    return lines


def _started_from(record: dict) -> str:
    """The weights a run started from (``zoo.models.medical.describe``), in one line."""
    sources = (record.get("corpus") or {}).get("sources")
    corpus = f", corpus {', '.join(map(str, sources))}" if sources else ""
    return f"{record.get('weights')} ({record.get('file')}, sha256 {record.get('sha256')}{corpus})"


def _recipe_lines(recipe: dict) -> list[str]:
    """The registered training recipe (``zoo.recipes``) as a two-column table; [] without one."""
    if not recipe:
        return []
    lines = ["", "### Training recipe (train.py's defaults for this model; flags override)", "",
             "| option | value |", "|---|---|"]
    shown = dict(recipe)
    if "model_kwargs" in shown:  # architecture settings hold at the tuned sizes only
        kwargs, sizes = shown["model_kwargs"], shown.get("input_sizes") or []
        shown["model_kwargs"] = (f"{_md_value(kwargs)} (inputs up to {max(sizes)} px)"
                                 if kwargs and sizes else _md_value(kwargs) or "none (the model's defaults)")
    return lines + [f"| {key} | {_md_value(value)} |" for key, value in shown.items()]


def _measured_lines(measured: dict) -> list[str]:
    """The benchmark figures behind the card's reading (``benchmarks/results``), as a table."""
    lines = ablation_lines(measured.get("ablations") or [])
    rows = measured.get("pointing_game") or []
    if not rows:
        return lines
    lines += ["", "### Measured (benchmark result files)", "",
             "| phantom | class | seed | map | layers | pointing game | val AUROC |",
             "|---|---|---:|---|---|---:|---:|"]
    for r in rows:
        auroc = r.get("val_auroc")
        lines.append(f"| {r.get('phantom', '')} | {r.get('class', '')} | {r.get('seed', '')} | "
                     f"{r.get('method', '')} | {r.get('layer', '')} | {_fmt(r.get('hit_rate'))} | "
                     f"{'-' if auroc is None else _fmt(auroc)} |")
    if measured.get("source"):
        lines += ["", f"Source: {measured['source']}"]
    return lines


def ablation_lines(rows: list[dict]) -> list[str]:
    """Does the paper block help? The ablation rows (paper form against its twins) as a table."""
    if not rows:
        return []
    lines = ["", "### Ablations: the paper block against its twins (benchmarks.ablations)", "",
             "| claim | data | measured on | form | test AUROC (mean ± sd) | twin − paper [95% CI] |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        form = f"**{r['form']}** (paper)" if r.get("is_paper") else r["form"]
        if r.get("converged") is False:
            form += " (not converged)"
        diff = ("—" if r.get("is_paper") or r.get("diff") is None else
                f"{r['diff']:+.3f} [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}]")
        lines.append(f"| {r['claim']} | {r['data']} | {r.get('model', '')} | {form} | "
                     f"{_fmt(r['auroc_mean'])} ± {_fmt(r['auroc_sd'])} | {diff} |")
    sources = "; ".join(dict.fromkeys(r["source"] for r in rows if r.get("source")))
    if sources:
        lines += ["", f"Source: `{sources}`"]
    return lines


def _evaluation_lines(key: str, ev: dict) -> list[str]:
    d = ev["data"]
    lines = [f"## Evaluation: {key}", "",
             f"- Data: {d['images']} images of {d['patients']} patients "
             f"(dataset {d['dataset']}, split {d['split']}, level {d['level']})",
             f"- Label mapping: {'; '.join(ev['label_mapping'])}",
             f"- Thresholds from: {ev['operating_point']['source'].get('kind')}",
             f"- Macro AUROC {_fmt(ev['macro_auroc'])} (95% CI "
             f"{_fmt(ev['macro_auroc_ci95'][0])}-{_fmt(ev['macro_auroc_ci95'][1])}), "
             f"micro {_fmt(ev['micro_auroc'])}, ECE {_fmt(ev['ece'])}, Brier "
             f"{_fmt(ev['brier'])}", "",
             "| label | AUROC | 95% CI (patients) | sens | spec | threshold |",
             "|---|---|---|---|---|---|"]
    for lbl, pc in ev["per_class"].items():
        auroc = _fmt(pc["auroc"]) if pc["auroc"] is not None else pc["status"]
        ci = pc["auroc_ci95"]
        ci = "n/a" if ci[0] is None else f"{ci[0]:.3f}-{ci[1]:.3f}"
        lines.append(f"| {md_cell(lbl)} | {auroc} | {ci} | {_fmt(pc['sensitivity'])} | "
                     f"{_fmt(pc['specificity'])} | {pc['threshold']:.3f} |")
    return lines + [""]


def render_card(card: dict) -> str:
    """The Markdown view of a model card dict (what ``model_card.md`` holds).

    The facts first; an evaluated card (``not_for_diagnostic_use``, set by
    :func:`card_from_report`) then carries the not-for-diagnosis line, one section per
    evaluation and the limitations.
    """
    lines = _facts_lines(card)
    if not (card.get("not_for_diagnostic_use") or card.get("evaluations")
            or card.get("limitations")):
        return "\n".join(lines) + "\n"
    lines += ["", f"**{NOT_FOR_DIAGNOSIS}**", ""]
    for key, ev in (card.get("evaluations") or {}).items():
        lines += _evaluation_lines(key, ev)
    if card.get("limitations"):
        lines += ["## Limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    return "\n".join(lines)


def write_card(out_dir, card: dict) -> None:
    """Write ``out_dir/model_card.json`` and ``out_dir/model_card.md`` (rendered once)."""
    out_dir = Path(out_dir)
    (out_dir / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (out_dir / CARD_MD).write_text(render_card(card))


# --------------------------------------------------------------------------------------------
# Updating an export's card
# --------------------------------------------------------------------------------------------


def update_model_card(version_dir, **fields) -> dict:
    """Merge ``fields`` (e.g. ``metrics={...}``) into an export's model card; rewrites .json and .md."""
    extra = Path(version_dir) / "assets.extra"
    path = extra / CARD_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; pass a version directory written by zoo.export "
            "(saved_models/<model>/<version>)."
        )
    card = json.loads(path.read_text())
    card.update(plain_data(fields))
    write_card(extra, card)
    return card


def update_export_card(version_dir, report: dict, source) -> dict:
    """Merge one evaluation into ``version_dir/assets.extra/model_card.{json,md}``."""
    extra = Path(version_dir) / "assets.extra"
    existing = json.loads((extra / CARD_JSON).read_text())
    card = card_from_report(report, source, existing=existing)
    fields = {k: card[k] for k in ("evaluations", "metrics", "intended_use", "limitations",
                                    "not_for_diagnostic_use", "operating_point") if k in card}
    return update_model_card(version_dir, **fields)
