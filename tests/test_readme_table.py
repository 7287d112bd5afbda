"""README.md's model table must match the registry (regenerate: python scripts/model_table.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "model_table", ROOT / "scripts" / "model_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_model_table_is_current():
    mt = _script()
    text = (ROOT / "README.md").read_text()
    expected = mt.replace_section(text, mt.render_table())
    assert expected == text, (
        "README.md's model table is stale (models or parameter counts changed); "
        "run `python scripts/model_table.py`."
    )


def test_table_lists_every_model_once_with_its_parameters():
    import zoo

    mt = _script()
    table = mt.render_table()
    for name in zoo.list_models():
        assert table.count(f"| `{name}` |") == 1, name
        assert f"{zoo.model_info(name)['parameters']:,} |" in table


def test_replace_section_keeps_the_rest_and_needs_markers():
    mt = _script()
    text = f"intro\n{mt.START}\nold table\n{mt.END}\noutro\n"
    assert mt.replace_section(text, "| new |") == f"intro\n{mt.START}\n| new |\n{mt.END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        mt.replace_section("no markers here", "| new |")
