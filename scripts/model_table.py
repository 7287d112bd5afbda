"""Regenerate the README model table (and the golden parameter counts) from the registry.

    python scripts/model_table.py                  # rewrite README.md between the markers
    python scripts/model_table.py --check          # exit 1 if README.md's table is stale
    python scripts/model_table.py --update-golden  # rewrite tests/models/golden_params.json

The table sits between ``<!-- models:start -->`` and ``<!-- models:end -->`` in README.md;
everything outside the markers is left alone. Rows come from ``zoo.list_models()`` and
``zoo.model_info()`` (parameters counted on the model built with its defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GOLDEN = ROOT / "tests" / "models" / "golden_params.json"
START, END = "<!-- models:start -->", "<!-- models:end -->"
PAPER_CHARS = 70
# the paper models first, the keras.applications baselines last; unknown families before those
FAMILY_ORDER = ("ichnet", "rensenet", "myositisnet", "cxr", "cpmid", "other", "baselines")


def _family(name: str, info: dict) -> str:
    if info.get("family"):
        return str(info["family"])
    for modname, module in sorted(sys.modules.items()):
        if modname.startswith("zoo.models.") and callable(getattr(module, name, None)):
            return modname.rsplit(".", 1)[-1]
    return "?"


def _short(text: str, limit: int = PAPER_CHARS) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:.")
    return cut + " ..."


def rows() -> list[dict]:
    """One dict per registered model: name, family, paper, doi, task, input, parameters."""
    import zoo

    out = []
    for name in zoo.list_models():
        info = zoo.model_info(name)
        out.append(
            {
                "name": name,
                "family": _family(name, info),
                "paper": info.get("paper") or "",
                "doi": info.get("doi"),
                "task": info.get("task", ""),
                "outputs": len(info.get("labels") or ()),
                "input_shape": tuple(info["input_shape"]),
                "parameters": int(info["parameters"]),
            }
        )
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    out.sort(key=lambda r: (order.get(r["family"], len(FAMILY_ORDER) - 1), r["name"]))
    return out


def render_table(table_rows: list[dict] | None = None) -> str:
    """The Markdown table that belongs between the README markers."""
    table_rows = rows() if table_rows is None else table_rows
    lines = [
        "| Model | Family / paper | Task (outputs) | Default input | Parameters |",
        "|---|---|---|---|---:|",
    ]
    for r in table_rows:
        paper = _short(r["paper"])
        if r["doi"]:
            paper = f"[{paper}](https://doi.org/{r['doi']})"
        shape = " x ".join(str(s) for s in r["input_shape"])
        lines.append(
            f"| `{r['name']}` | {r['family']}: {paper} | {r['task']} ({r['outputs']}) | "
            f"{shape} | {r['parameters']:,} |"
        )
    return "\n".join(lines)


def replace_section(text: str, table: str, start: str = START, end: str = END) -> str:
    """``text`` with everything between the ``start`` and ``end`` markers replaced by ``table``
    (the README's model table generated here; docs/RESULTS.md's by ``scripts/results_tables.py``)."""
    if start not in text or end not in text or text.index(start) > text.index(end):
        raise ValueError(f"The file has no '{start}' ... '{end}' section; add the two markers "
                         "where the table belongs.")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table}\n{end}{tail}"


def sync_readme(readme: Path, text: str, new: str, *, check: bool, what: str, command: str) -> int:
    """Write ``new`` over ``readme`` (the README or a docs/ page; or, with ``check``, report
    whether it is stale: exit 1)."""
    if check:
        if new != text:
            print(f"{readme} {what} is stale; run `{command}`.")
            return 1
        print(f"{readme} {what} is up to date.")
        return 0
    if new != text:
        readme.write_text(new)
        print(f"updated the {what} in {readme}")
    else:
        print(f"{readme} {what} already up to date")
    return 0


def golden_counts() -> dict[str, int]:
    return {r["name"]: r["parameters"] for r in sorted(rows(), key=lambda r: r["name"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README's table is stale")
    parser.add_argument(
        "--update-golden", action="store_true", help=f"rewrite {GOLDEN.relative_to(ROOT)}"
    )
    parser.add_argument("--readme", type=Path, default=README, help="README path")
    args = parser.parse_args(argv)

    if args.update_golden:
        GOLDEN.write_text(json.dumps(golden_counts(), indent=2) + "\n")
        print(f"wrote {GOLDEN.relative_to(ROOT)}")
        return 0
    text = args.readme.read_text()
    new = replace_section(text, render_table())
    return sync_readme(args.readme, text, new, check=args.check, what="model table",
                       command="python scripts/model_table.py")


if __name__ == "__main__":
    sys.exit(main())
