"""Every documented switch value builds what it names through ``zoo.get_model``.

The registry drops ``None`` kwargs (an unset CLI flag falls back to the default), so a switch
whose ``None`` is a documented value would silently build the default instead: that is how
``get_model("myositisnet", attention=None)`` once built the paper form (issue 23). The values
come from the docs' switch table (docs/RESULTS.md, "Do the paper blocks help?"), which must list
exactly the switches of ``zoo.ablations``, and from the README's common keyword arguments.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import keras
import pytest

import zoo
from zoo.ablations import CLAIMS, SWITCHES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "RESULTS.md"
SIZE = 32
# | `rensenet*(downsample="edge")` | `"avg"`, `"max"`, `"strided"` | claim |
ROW = re.compile(r"^\| `([\w*]+)\((\w+)=\"(\w+)\"\)` \| (.+?) \| .+ \|$")


def _documented() -> list[tuple[str, str, str, tuple]]:
    """(model pattern, switch, paper value, twin values) per row of the docs' switch table."""
    section = DOC.read_text().split("## Do the paper blocks help?", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        found = ROW.match(line.strip())
        if found:
            pattern, switch, paper, twins = found.groups()
            values = tuple(v.strip('`" ') for v in twins.split(","))
            rows.append((pattern, switch, paper, values))
    return rows


def _value(text: str):
    return None if text == "None" else text


def _cases():
    cases = []
    for pattern, switch, paper, twins in _documented():
        for model in fnmatch.filter(zoo.list_models(), pattern):
            for value in (paper, *twins):
                cases.append((model, switch, _value(value)))
    return cases


def _outline(model) -> list[tuple[str, str, int]]:
    return [(la.name, type(la).__name__, la.count_params()) for la in model.layers]


def _build(name, **kwargs):
    keras.utils.set_random_seed(0)
    return zoo.get_model(name, input_shape=(SIZE, SIZE, 1), **kwargs)


def test_the_docs_switch_table_lists_exactly_the_claims():
    rows = _documented()
    assert len(rows) == len(CLAIMS), f"docs/RESULTS.md's switch table has {len(rows)} rows"
    for pattern, switch, paper, twins in rows:
        claim = SWITCHES[switch]
        assert sorted(fnmatch.filter(zoo.list_models(), pattern)) == sorted(claim.models), pattern
        assert paper == claim.paper_value, switch
        assert tuple(map(_value, twins)) == claim.twin_values, (
            f"docs/RESULTS.md lists {switch} twins {twins}, zoo.ablations {claim.twin_values}")


def test_the_readme_names_every_switch_and_value():
    """The README's "Use" section lists each switch with its paper form first, then its twins."""
    use = (ROOT / "README.md").read_text().split("## Use", 1)[1].split("\n## ", 1)[0]
    use = " ".join(use.split())
    for claim in CLAIMS:
        listed = " | ".join(f'"{v}"' for v in claim.values)
        assert f"{claim.switch}={listed}" in use, f"README.md's Use section lacks {claim.switch}"


@pytest.mark.parametrize("name, switch, value", _cases(), ids=lambda v: str(v))
def test_a_documented_value_builds_what_it_names(name, switch, value):
    """Through the registry, the same model the variant builds with that value given directly."""
    entry = zoo.model_entry(name)
    keras.utils.set_random_seed(0)
    direct = entry.fn(**{**entry.defaults, "input_shape": (SIZE, SIZE, 1), switch: value})
    assert _outline(_build(name, **{switch: value})) == _outline(direct)


def test_attention_none_given_to_get_model_is_the_no_attention_twin():
    """The spelling in the docs ("none") and the builder's None build the same twin, not the
    paper form (98,288 parameters at 224 px against 94,330)."""
    none = _build("myositisnet", attention=None)
    assert _outline(none) == _outline(_build("myositisnet", attention="none"))
    assert _outline(none) != _outline(_build("myositisnet"))
    assert not [la.name for la in none.layers if la.name.endswith(("_shrink", "_se"))]
    assert zoo.get_model("myositisnet", attention=None).count_params() == 94_330


@pytest.mark.parametrize("name", ["ichnet_small", "myositisnet", "resnet18"])
def test_activation_none_is_logits_as_the_readme_says(name):
    """README: every model takes activation "sigmoid", "softmax" or None for logits."""
    def act(model):
        return model.get_layer("predictions").get_config().get("activation")

    default = act(_build(name))
    assert default in ("sigmoid", "softmax")
    assert act(_build(name, activation=None)) == act(_build(name, activation="logits")) == "linear"
    other = "softmax" if default == "sigmoid" else "sigmoid"
    assert act(_build(name, activation=other)) == other


def test_an_unset_flag_still_falls_back_to_the_default():
    """None stays "unset" for every other keyword: dropout=None is the variant's dropout."""
    assert _outline(_build("myositisnet", dropout=None, weights=None)) == _outline(
        _build("myositisnet"))
