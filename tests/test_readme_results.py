"""README.md's measured figures come from the result files; model cards quote none by hand.

Regenerate the README table with ``python scripts/results_tables.py`` after a benchmark run.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "results_tables", ROOT / "scripts" / "results_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_explanation_table_is_current():
    rt = _script()
    text = (ROOT / "README.md").read_text()
    expected = rt.replace_section(text, rt.render_explain_table())
    assert expected == text, (
        "README.md's explanation table differs from benchmarks/results/explain-*.json; "
        "run `python scripts/results_tables.py`."
    )


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
