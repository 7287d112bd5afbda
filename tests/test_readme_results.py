"""docs/RESULTS.md's measured figures come from the result files; model cards quote none by hand.

The generated sections moved from README.md to docs/RESULTS.md (the README links it); regenerate
them with ``python scripts/results_tables.py`` after a benchmark run.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "RESULTS.md"


def _script():
    spec = importlib.util.spec_from_file_location(
        "results_tables", ROOT / "scripts" / "results_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("section,files", [
    ("explain", "benchmarks/results/explain-*.json"),
    ("ablation", "benchmarks/results/ablations.json"),
    ("speed", "benchmarks/results/pipeline-*.json"),
    ("transfer", "benchmarks/results/transfer/transfer.json"),
    ("medmnist", "benchmarks/results/medmnist.json"),
    ("medical", "benchmarks/results/medical-transfer.json"),
])
def test_readme_tables_are_current(section, files):
    """Each generated section of docs/RESULTS.md equals what its result files render today."""
    rt = _script()
    render, start, end = {
        "explain": (rt.render_explain_table, rt.START, rt.END),
        "ablation": (rt.render_ablation_table, rt.ABL_START, rt.ABL_END),
        "speed": (rt.render_speed_table, rt.SPEED_START, rt.SPEED_END),
        "transfer": (rt.render_transfer_table, rt.TRANSFER_START, rt.TRANSFER_END),
        "medmnist": (rt.render_medmnist_table, rt.MEDMNIST_START, rt.MEDMNIST_END),
        "medical": (rt.render_medical_table, rt.MEDICAL_START, rt.MEDICAL_END),
    }[section]
    text = RESULTS.read_text()
    assert start in text and end in text, f"docs/RESULTS.md lacks the {section} markers"
    assert rt.replace_section(text, render(), start, end) == text, (
        f"docs/RESULTS.md's {section} table differs from {files}; run "
        "`python scripts/results_tables.py`.")


def test_table_follows_the_files_and_marks_a_missing_seed():
    rt = _script()
    records = rt.explain_records()
    assert {(r["model"], r["seed"]) for r in records} == {
        (m, s) for m in ("ichnet", "rensenet") for s in (0, 1)}
    changed = copy.deepcopy(records)
    for rec in changed:
        for row in rec["rows"]:
            if row["method"] == "layercam" and rec["model"] == "ichnet" and rec["seed"] == 0:
                row["hit_rate"] = 0.5
    table = rt.render_explain_table(changed)
    assert table != rt.render_explain_table(records)
    assert "| `ichnet` |" in table and "**0.500 / 0.831**" in table
    only_seed0 = [r for r in records if not (r["model"] == "rensenet" and r["seed"] == 1)]
    line = next(ln for ln in rt.render_explain_table(only_seed0).splitlines()
                if ln.startswith("| `rensenet`"))
    assert "0.093 / -" in line and line.endswith("1.000 / - |")
    with pytest.raises(ValueError, match="benchmarks.explain"):
        rt.render_explain_table([])


def test_replace_section_keeps_the_rest_and_needs_markers():
    rt = _script()
    text = f"intro\n{rt.START}\nold\n{rt.END}\noutro\n"
    assert rt.replace_section(text, "| new |") == f"intro\n{rt.START}\n| new |\n{rt.END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        rt.replace_section("no markers", "| new |")


# A measured figure in prose: a decimal (0.884, 0.09) or a percentage (83-88%). What is allowed
# is architecture and hyperparameter text, which describes the model rather than a measurement
# of it (parameter and FLOP counts also come from the model itself: see the golden parameter
# counts and python -m benchmarks.models).
FIGURE = re.compile(r"\d*\.\d+|\d+(?:-\d+)?%")
NOT_MEASURED = re.compile(
    r"(?:dropout|momentum|compression) \d*\.\d+"
    r"|~?\d*\.?\d+\s?(?:M parameters|GFLOPs)"
    r"|under \d+% of [\w-]+'s parameters"
    r"|\bv\d+\.\d+|\d+\.\.\d+"
)


def measured_figures(text: str) -> list[str]:
    return FIGURE.findall(NOT_MEASURED.sub("", text))


def test_the_figure_check_catches_measurements_and_spares_design_text():
    assert measured_figures("LayerCAM on 83-88% (two seeds)") == ["83-88%"]
    assert measured_figures("hit rate 0.884, AUROC mean 0.89 vs 0.997") == ["0.884", "0.89",
                                                                          "0.997"]
    assert measured_figures("GAP -> dropout 0.2 -> Dense; BatchNorm momentum 0.9; ResNet v1.5; "
                            "~0.3M parameters, ~0.85 GFLOPs; under 3% of MobileNetV3-Large's "
                            "parameters; keras' 0..255 preprocessing; 256 px, 10 epochs") == []


def test_model_cards_quote_no_measured_figures():
    import zoo

    for name in zoo.list_models():
        for entry in zoo.model_info(name, count_params=False).get("our_reading") or []:
            assert not measured_figures(entry), (
                f"{name}: 'our_reading' quotes measured figures {measured_figures(entry)}; put "
                "them in a result file under benchmarks/results (zoo.results.measured adds them "
                f"to the card) and keep the reading qualitative: {entry!r}"
            )


def test_speed_table_follows_the_files(tmp_path):
    import json

    rt = _script()
    # a second result file becomes a second column; a figure it lacks is a dash
    source = ROOT / "benchmarks" / "results" / "pipeline-quick.json"
    record = json.loads(source.read_text())
    (tmp_path / source.name).write_text(source.read_text())
    other = {k: v for k, v in record.items() if k != "decode_nifti_vs_nibabel"}
    other["decode_vs_pydicom"] = 0.5
    (tmp_path / "pipeline-other.json").write_text(json.dumps(other))
    table = rt.render_speed_table(tmp_path)
    row = next(line for line in table.splitlines() if "`decode_vs_pydicom`" in line)
    assert row.count("|") == 4 and "| 0.50 (load" in row
    nifti = next(line for line in table.splitlines() if "`decode_nifti_vs_nibabel`" in line)
    assert "| - |" in nifti  # pipeline-other (sorted first) lacks it



def test_transfer_section_reports_the_targets():
    assert "Best corpus-initialised test accuracy" in _script().render_transfer_table()
