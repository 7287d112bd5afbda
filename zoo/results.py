"""Measured results: the benchmark result files, read for model cards and docs/RESULTS.md.

    from zoo.results import measured
    measured("ichnet")    # {"pointing_game": [...], "source": "..."}; {} for a model never measured

A benchmark writes one JSON file per trained model under ``benchmarks/results/`` (shipped as
package data of ``benchmarks``, so an installed medzoo reads the same files)::

    benchmarks/results/explain-<model>-<phantom>-seed<S>[-<variant>].json
    {
      "benchmark": "explain", "model": "ichnet", "phantom": "head CT", "class": "any", "seed": 0,
      "variant": "",            # "" for the default configuration, else e.g. "pooling=lse"
      "config": {...},          # every argument that shapes the result
      "command": "python -m benchmarks.explain --no-kidney --seed 0",
      "date": "2026-12-02", "software": {"tensorflow": "2.21.0", ...},
      "source": "...",          # how the figures were obtained (who ran what, where)
      "val_auroc": 1.0,
      "rows": [{"method": "gradcam", "layer": "features (16x16)", "hit_rate": 0.035, ...}],
      "summary": {...}          # optional: figures that are not one row per map
    }

Nothing here imports TensorFlow; the results-table generator and the card builder both read through
:func:`load_results`, so a figure appears in prose only if it is in a result file.
"""

from __future__ import annotations

import json
import platform
from datetime import date
from importlib import metadata, resources
from pathlib import Path

from zoo.ablations import CLAIMS

__all__ = ["RESULTS_PACKAGE", "results_dir", "load_results", "measured", "software",
           "write_result", "result_name"]

RESULTS_PACKAGE, RESULTS_FOLDER = "benchmarks", "results"
# what a model card reads as one row of the pointing game (keys a row has are kept in this order)
_ROW_KEYS = ("phantom", "class", "seed", "method", "layer", "hit_rate", "hit_rate_tol",
             "tolerance", "ceiling", "energy", "n", "val_auroc")


def results_dir():
    """The folder of result files (a ``Path`` for a source tree or an editable install)."""
    return resources.files(RESULTS_PACKAGE).joinpath(RESULTS_FOLDER)


def load_results(benchmark: str | None = None, folder=None) -> list[dict]:
    """Every result file (of one ``benchmark``), sorted by file name; each dict gains ``file``."""
    folder = results_dir() if folder is None else Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            record = json.loads(entry.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"result file {entry.name} is not valid JSON ({err}); fix or "
                             "delete it and rerun its benchmark.") from err
        if benchmark is None or record.get("benchmark") == benchmark:
            out.append({**record, "file": entry.name})
    return out


def measured(model_name: str, folder=None) -> dict:
    """The measured results of ``model_name`` for its model card.

    ``{"pointing_game": [row, ...], "source": "..."}`` from the default-configuration runs of
    ``benchmarks.explain`` (one row per map, phantom and seed; keys as in ``_ROW_KEYS``), plus
    ``"other_configurations"`` (variant runs such as ``pooling=lse``, each with its own source)
    when there are any. An empty dict for a model with no result files.
    """
    out: dict = {}
    ablation = ablation_rows(model_name, folder)
    if ablation:
        out["ablations"] = ablation
    files = [r for r in load_results("explain", folder) if r.get("model") == model_name]
    if not files:
        return out
    default = [r for r in files if not r.get("variant")]
    if default:
        rows = []
        for rec in sorted(default, key=lambda r: (r.get("phantom", ""), r.get("seed", 0))):
            for row in rec.get("rows", []):
                full = {"phantom": rec.get("phantom"), "class": rec.get("class"),
                        "seed": rec.get("seed"), "val_auroc": rec.get("val_auroc"), **row}
                rows.append({k: full[k] for k in _ROW_KEYS if full.get(k) is not None})
        out["pointing_game"] = rows
        out["source"] = "; ".join(dict.fromkeys(r["source"] for r in default if r.get("source")))
    others = [r for r in files if r.get("variant")]
    if others:
        out["other_configurations"] = [
            {k: r[k] for k in ("variant", "phantom", "class", "seed", "rows", "summary", "source")
             if r.get(k) is not None}
            for r in others
        ]
    return out


_ABLATION_KEYS = ("claim", "data", "model", "form", "is_paper", "seeds", "auroc_mean", "auroc_sd",
                  "diff", "diff_lo", "diff_hi", "converged", "pg_layercam")


def ablation_rows(model_name: str, folder=None) -> list[dict]:
    """Rows of ``benchmarks/results/ablations.json`` for the claims about ``model_name``'s block.

    A claim names the models that carry its block (``zoo.ablations.CLAIMS``, e.g. ``rensenet``
    and ``rensenet_small``); the rows were measured on one of them (their ``model`` says which)
    and are shown on the card of each. Each row gains ``source`` (the command that measured it).
    """
    claims = {c.key for c in CLAIMS if model_name in c.models}
    out = []
    for record in load_results("ablations", folder):
        for row in record.get("rows", []):
            if row.get("claim") in claims:
                out.append({**{k: row[k] for k in _ABLATION_KEYS if k in row},
                            "source": record.get("command", "")})
    return out


def software() -> dict:
    """Versions that shape a measurement (``None`` for a package that is not installed)."""
    out = {"python": platform.python_version()}
    for dist in ("medzoo", "tensorflow", "keras", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def result_name(benchmark: str, model: str, phantom: str, seed: int, variant: str = "") -> str:
    """``explain-ichnet-head-ct-seed0.json``; a variant is appended (``...-seed0-pooling=lse``)."""
    slug = "-".join(phantom.lower().split())
    stem = f"{benchmark}-{model}-{slug}-seed{seed}" + (f"-{variant}" if variant else "")
    return stem.replace("/", "_").replace(" ", "") + ".json"


def write_result(folder, record: dict) -> Path:
    """Write ``record`` (``date`` and ``software`` filled in when missing) to its file name."""
    record = {"date": date.today().isoformat(), "software": software(), **record}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / result_name(record["benchmark"], record["model"], record["phantom"],
                                record["seed"], record.get("variant", ""))
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
