"""zoo.results: the result files the model cards and the README read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo import results as R

ROOT = Path(__file__).resolve().parents[1]


def _record(model="m", seed=0, variant="", rows=None, **extra):
    return {"benchmark": "explain", "model": model, "phantom": "head CT", "class": "any",
            "seed": seed, "variant": variant, "command": f"python -m benchmarks.explain --seed {seed}",
            "source": f"measured with seed {seed}", "val_auroc": 0.9,
            "rows": rows if rows is not None else [
                {"method": "layercam", "layer": "4 scales", "hit_rate": 0.5 + seed / 10,
                 "scales": 4, "fusion": "product"}], **extra}


def test_measured_gives_rows_and_source_per_seed_and_keeps_variants_apart(tmp_path):
    for seed in (1, 0):
        R.write_result(tmp_path, _record(seed=seed))
    R.write_result(tmp_path, _record(variant="pooling=lse", summary={"x": [0.1, 0.2]}))
    R.write_result(tmp_path, _record(model="other"))
    out = R.measured("m", folder=tmp_path)
    assert [(r["seed"], r["hit_rate"]) for r in out["pointing_game"]] == [(0, 0.5), (1, 0.6)]
    assert out["pointing_game"][0] == {"phantom": "head CT", "class": "any", "seed": 0,
                                       "method": "layercam", "layer": "4 scales",
                                       "hit_rate": 0.5, "val_auroc": 0.9}
    assert out["source"] == "measured with seed 0; measured with seed 1"
    (variant,) = out["other_configurations"]
    assert variant["variant"] == "pooling=lse" and variant["summary"] == {"x": [0.1, 0.2]}
    assert R.measured("never_measured", folder=tmp_path) == {}
    assert R.measured("m", folder=tmp_path / "missing") == {}


def test_write_result_names_the_file_and_records_date_and_software(tmp_path):
    path = R.write_result(tmp_path, _record(variant="model_kwargs=output_stride=8"))
    assert path.name == "explain-m-head-ct-seed0-model_kwargs=output_stride=8.json"
    rec = json.loads(path.read_text())
    assert rec["date"] and rec["software"]["python"] and "tensorflow" in rec["software"]
    (loaded,) = R.load_results("explain", folder=tmp_path)
    assert loaded["file"] == path.name and R.load_results("learning", folder=tmp_path) == []


def test_a_broken_result_file_is_named(tmp_path):
    (tmp_path / "explain-bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="explain-bad.json"):
        R.load_results(folder=tmp_path)


def test_the_shipped_results_are_read_from_the_package_and_are_packaged():
    import tomllib

    assert Path(str(R.results_dir())) == ROOT / "benchmarks" / "results"
    for model in ("ichnet", "rensenet"):
        out = R.measured(model)
        assert out["pointing_game"] and "stop 10" in out["source"], model
        assert {r["seed"] for r in out["pointing_game"]} == {0, 1}
    assert "pointing_game" not in R.measured("myositisnet")  # never explained; ablations only
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "results/*.json" in data["package-data"]["benchmarks"]
    for rec in R.load_results():
        for key in ("benchmark", "model", "seed", "command", "date", "software", "source"):
            assert key in rec, (rec["file"], key)
