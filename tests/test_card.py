"""zoo.card: one source of registry facts, one renderer, one writer; the Markdown written once."""

import json

import pytest

import zoo
from zoo import card as C

_PC = {"auroc": 0.8, "auroc_ci95": [0.7, 0.9], "auroc_status": "ok", "pr_auc": 0.5,
       "threshold": 0.4, "sensitivity": 0.5, "specificity": 0.6, "f1": 0.5, "positives": 3,
       "negatives": 4}
REPORT = {
    "created": "2024-01-01", "label_mapping": ["any=any"],
    "data": {"dataset": "synthetic", "split": "test", "level": "image", "images": 10,
             "patients": 5},
    "operating_point": {"thresholds": {"any": 0.4}, "temperature": 1.0,
                        "source": {"kind": "validation split", "dataset": "synthetic",
                                   "rule": "youden"}},
    "metrics": {"macro_auroc": 0.8, "macro_auroc_ci95": [0.7, 0.9], "micro_auroc": 0.8,
                "micro_auroc_ci95": [0.7, 0.9], "ece": 0.1, "brier": 0.2, "n": 10,
                "n_groups": 5, "per_class": {"any": _PC}},
}


class _Source:
    model_name = "ichnet_small"
    labels = ("any",)
    input_shape = (32, 32, 3)
    task = "multi-label"
    model = None


def test_registry_facts_name_the_defaults_as_defaults():
    info = zoo.model_info("ichnet_small", count_params=False)
    facts = C.registry_facts("ichnet_small")
    assert facts["paper"] == info["paper"] and facts["doi"] == info["doi"]
    assert facts["default_labels"] == list(info["labels"])
    assert facts["default_input_shape"] == list(info["input_shape"])
    assert not {"labels", "input_shape", "parameters"} & set(facts)
    assert C.registry_facts("not_a_model") == {}


def test_one_renderer_for_export_and_evaluated_cards():
    card = {"model_name": "m", "version": 3, "metrics": {"status": C.NOT_EVALUATED},
            "signatures": {"serving_default": "image -> probabilities"}}
    md = C.render_card(card)
    assert md.startswith("# Model card: m (version 3)") and "Not evaluated yet." in md
    assert C.NOT_FOR_DIAGNOSIS not in md

    evaluated = C.card_from_report(REPORT, _Source, existing=card)
    md = C.render_card(evaluated)
    assert f"**{C.NOT_FOR_DIAGNOSIS}**" in md and "## Evaluation: synthetic/test" in md
    assert "## Limitations" in md and "95% CI" in md
    assert "- evaluations:" not in md and "- limitations:" not in md  # never as "Other facts"


def test_update_export_card_writes_the_markdown_once(tmp_path, monkeypatch):
    extra = tmp_path / "m" / "1" / "assets.extra"
    extra.mkdir(parents=True)
    (extra / "model_card.json").write_text(json.dumps(
        {"model_name": "ichnet_small", "version": 1, "metrics": {"status": C.NOT_EVALUATED}}))
    calls = []
    render = C.render_card
    monkeypatch.setattr(C, "render_card", lambda card: calls.append(1) or render(card))
    card = C.update_export_card(extra.parent, REPORT, _Source)
    assert len(calls) == 1
    assert json.loads((extra / "model_card.json").read_text()) == card
    assert (extra / "model_card.md").read_text() == render(card)
    assert "synthetic/test" in card["evaluations"] and card["not_for_diagnostic_use"] is True


def test_export_writes_the_markdown_card_once(tmp_path, monkeypatch):
    from tests.export.support import tiny_model
    from zoo.export import export_saved_model

    calls = []
    render = C.render_card
    monkeypatch.setattr(C, "render_card", lambda card: calls.append(1) or render(card))
    version = export_saved_model(tiny_model(3, 2), tmp_path, model_name="tiny", labels=("a", "b"))
    assert len(calls) == 1
    md = (version / "assets.extra" / "model_card.md").read_text()
    assert md == render(json.loads((version / "assets.extra" / "model_card.json").read_text()))


def test_update_model_card_names_a_missing_card(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_card.json does not exist"):
        C.update_model_card(tmp_path)


def test_measured_figures_reach_the_card_from_result_files_not_code():
    """The pointing-game figures come from benchmarks/results (zoo.results), rendered as a table;
    a model without result files gets no such section."""
    from zoo import card as card_mod
    from zoo.results import measured

    facts = card_mod.registry_facts("ichnet")
    assert facts["measured"] == measured("ichnet") and facts["measured"]["pointing_game"]
    text = card_mod.render_card({"model_name": "ichnet", **facts})
    assert "### Measured (benchmark result files)" in text
    rate = facts["measured"]["pointing_game"][0]["hit_rate"]
    assert f"{rate:.3f}" in text
    plain = card_mod.registry_facts("efficientnet_b0")  # no benchmark measured it
    assert "measured" not in plain
    assert "Measured" not in card_mod.render_card({"model_name": "efficientnet_b0", **plain})


def test_ablation_rows_reach_the_cards_of_every_model_with_the_block(tmp_path):
    """benchmarks.ablations' result file puts the paper-vs-twin rows on the card of each model
    that carries the claim's block (rensenet_small measured, rensenet shown too)."""
    from zoo import card as card_mod
    from zoo.results import ablation_rows

    row = {"claim": "edge_conservative", "data": "small-lesion phantom", "model": "rensenet_small",
           "form": "downsample=avg", "is_paper": False, "seeds": 3, "auroc_mean": 0.9,
           "auroc_sd": 0.01, "diff": 0.2, "diff_lo": 0.1, "diff_hi": 0.3}
    paper = {**row, "form": "downsample=edge", "is_paper": True, "auroc_mean": 0.7}
    (tmp_path / "ablations.json").write_text(json.dumps(
        {"benchmark": "ablations", "command": "python -m benchmarks.ablations --x", "rows": [paper, row]}))
    for model in ("rensenet", "rensenet_small"):
        rows = ablation_rows(model, tmp_path)
        assert [r["form"] for r in rows] == ["downsample=edge", "downsample=avg"]
    assert ablation_rows("ichnet", tmp_path) == []
    text = "\n".join(card_mod.ablation_lines(ablation_rows("rensenet", tmp_path)))
    assert "**downsample=edge** (paper)" in text and "+0.200 [+0.100, +0.300]" in text
    assert "`python -m benchmarks.ablations --x`" in text
