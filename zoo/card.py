"""Model cards filled from the registry (``zoo.model_info``) and an evaluation report.

    card = card_from_report(report, source)       # dict; JSON-safe
    write_card(out_dir, card)                      # out_dir/model_card.{json,md}
    update_export_card(version_dir, report, source)  # merge into assets.extra/model_card.*

An export's card accumulates evaluations: ``evaluations["<dataset>/<split>"]`` per run of
``python -m zoo.evaluate``; ``metrics`` holds a short summary line per evaluation (what
``zoo.export.render_model_card`` shows); ``operating_point`` keeps the thresholds (and
temperature) chosen on a validation split, which later external evaluations reuse. Every card says
it is not for diagnostic use and lists the limitations the evaluation itself exposes (synthetic
data, small samples, undefined classes, wide intervals, thresholds not from validation).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["card_from_report", "write_card", "render_card", "update_export_card",
           "INTENDED_USE", "NOT_FOR_DIAGNOSIS"]

NOT_FOR_DIAGNOSIS = ("Not for diagnostic use: this model is not a medical device, has not been "
                     "clinically validated, and must not inform the care of any patient.")
INTENDED_USE = ("Research and engineering on medical image classification (benchmarking, "
                "method development, teaching). " + NOT_FOR_DIAGNOSIS)
_OWN_KEYS = ("evaluations", "limitations", "operating_point", "not_for_diagnostic_use")


def _registry_facts(name: str) -> dict:
    import zoo

    if name not in zoo.list_models():
        return {}
    info = zoo.model_info(name, count_params=False)  # the card counts the evaluated model
    keep = ("summary", "paper", "doi", "task", "labels", "input_shape", "parameters",
            "from_paper", "our_reading")
    facts = {k: info[k] for k in keep if k in info}
    for k in ("labels", "input_shape"):
        if k in facts:
            facts[k] = list(facts[k])
    if "parameters" in facts:
        facts["default_parameters"] = facts.pop("parameters")
    return facts


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
        if source._keras is not None:
            card["parameters"] = int(source._keras.count_params())
        card.update({k: v for k, v in _registry_facts(source.model_name).items()
                     if k not in ("labels", "input_shape", "task")})
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


def _fmt(v):
    return "undefined" if v is None else f"{v:.3f}"


def render_card(card: dict) -> str:
    """Markdown: the export's rendering of the base facts, then the evaluation sections."""
    from zoo.export import render_model_card

    base = {k: v for k, v in card.items() if k not in _OWN_KEYS}
    if "version" not in base:
        base["version"] = "-"
    lines = [render_model_card(base).rstrip(), "", f"**{NOT_FOR_DIAGNOSIS}**", ""]
    for key, ev in (card.get("evaluations") or {}).items():
        d = ev["data"]
        lines += [f"## Evaluation: {key}", "",
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
            lines.append(f"| {lbl} | {auroc} | {ci} | {_fmt(pc['sensitivity'])} | "
                         f"{_fmt(pc['specificity'])} | {pc['threshold']:.3f} |")
        lines.append("")
    if card.get("limitations"):
        lines += ["## Limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    return "\n".join(lines)


def write_card(out_dir, card: dict) -> None:
    out_dir = Path(out_dir)
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out_dir / "model_card.md").write_text(render_card(card))


def update_export_card(version_dir, report: dict, source) -> dict:
    """Merge the evaluation into ``version_dir/assets.extra/model_card.{json,md}``."""
    from zoo.export import update_model_card

    extra = Path(version_dir) / "assets.extra"
    existing = json.loads((extra / "model_card.json").read_text())
    card = card_from_report(report, source, existing=existing)
    fields = {k: card[k] for k in ("evaluations", "metrics", "intended_use", "limitations",
                                    "not_for_diagnostic_use") if k in card}
    if "operating_point" in card:
        fields["operating_point"] = card["operating_point"]
    card = update_model_card(version_dir, **fields)
    (extra / "model_card.md").write_text(render_card(card))
    return card
