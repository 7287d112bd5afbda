import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tests.evaluate.conftest import assert_real_png
from zoo import evaluation as E
from zoo import metrics as M
from zoo.evaluation import run as evaluation_run


def test_end_to_end_cli_on_an_export(tiny, tmp_path):
    out = tmp_path / "eval"
    rc = E.main(["--model", str(tiny.version), "--cache", str(tiny.cache), "--split", "test",
                 "--out", str(out), "--bootstrap", "40", "--temperature"])
    assert rc == 0

    # predictions.csv: exactly the test split of the cache, truth named as the label, prob_<label>
    pred = pd.read_csv(out / "predictions.csv", dtype={"id": str, "patient_id": str})
    assert list(pred.columns) == ["id", "patient_id", *tiny.labels,
                                  *[f"prob_{x}" for x in tiny.labels]]
    manifest = pd.read_csv(tiny.cache / "manifest.csv", dtype=str)
    test_rows = manifest[manifest["split"] == "test"].set_index("id")
    assert sorted(pred["id"]) == sorted(test_rows.index)
    assert (pred.set_index("id")["patient_id"] == test_rows.loc[pred["id"], "patient_id"]).all()
    for label in tiny.labels:
        assert (pred.set_index("id")[label] == test_rows.loc[pred["id"], label].astype(int)).all()

    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    assert m["n"] == len(pred) and m["n_groups"] == pred["patient_id"].nunique()
    assert m["bootstrap"]["unit"] == "patient"
    for label in tiny.labels:
        pc = m["per_class"][label]
        y = pred[label].to_numpy()
        if y.min() == y.max():
            assert pc["auroc"] is None and pc["auroc_status"].startswith("undefined")
        else:  # the report's AUROC is sklearn's on the written predictions
            assert pc["auroc"] == pytest.approx(roc_auc_score(y, pred[f"prob_{label}"]), abs=1e-5)
            lo, hi = pc["auroc_ci95"]
            assert lo is None or lo <= hi
    assert report["operating_point"]["source"]["kind"] == "validation split"
    assert report["operating_point"]["temperature"] > 0

    # thresholds: recomputed independently from the val split's predictions (never test)
    source = E.load_model_source(tiny.version)
    val = E.gather_predictions(source, tiny.cache, "val")
    t = report["operating_point"]["temperature"]
    expected = M.choose_thresholds(val["y_true"], M.apply_temperature(val["y_prob"], t))
    got = [report["operating_point"]["thresholds"][x] for x in tiny.labels]
    np.testing.assert_allclose(got, expected, atol=1e-6)

    for name in report["plots"]:
        assert_real_png(out / name)
    assert {f"roc_{x}.png" for x in tiny.labels} <= set(report["plots"])
    assert "reliability.png" in report["plots"]
    text = (out / "report.md").read_text()
    assert "macro AUROC" in text and "Not for diagnostic use" in text

    # the export's own card now carries the evaluation, the operating point and limitations
    card = json.loads((tiny.version / "assets.extra" / "model_card.json").read_text())
    assert "synthetic/test" in card["evaluations"] and "synthetic/test" in card["metrics"]
    assert card["operating_point"]["thresholds"]["any"] == pytest.approx(
        report["operating_point"]["thresholds"]["any"])
    assert card["not_for_diagnostic_use"] is True and card["limitations"]
    assert card["paper"]  # registry facts kept
    md = (tiny.version / "assets.extra" / "model_card.md").read_text()
    assert "Not for diagnostic use" in md and "## Limitations" in md and "95% CI" in md


def _fake_gather(splits):
    def gather(source, cache, split, *, batch_size=32):
        y, p = splits[split]
        n = len(y)
        y_full = np.zeros((n, 6))
        y_full[:, 0] = y
        return {"id": np.array([f"{split}{i}" for i in range(n)]),
                "patient_id": np.array([f"{split}-p{i // 2}" for i in range(n)]),
                "study_id": np.array([f"{split}-s{i // 2}" for i in range(n)]),
                "y_true": y_full, "y_prob": np.asarray(p, float)[:, None],
                "labels": ("any", "epidural", "intraparenchymal", "intraventricular",
                           "subarachnoid", "subdural"),
                "dataset": "synthetic", "task": "multi-label", "splits": [split]}
    return gather


def _source(labels=("any",), card=None):
    return E.ModelSource(kind="run", path=Path("fake-run"), model_name="fake",
                         labels=tuple(labels), input_shape=(32, 32, 3), task="multi-label",
                         card=card)


def test_thresholds_are_chosen_on_val_never_on_test(tiny, tmp_path, monkeypatch):
    # val separates positives from negatives at 0.3, test at 0.7: the two optima differ
    val = ([0, 0, 0, 0, 1, 1, 1, 1], [0.10, 0.15, 0.20, 0.25, 0.35, 0.40, 0.80, 0.90])
    test = ([0, 0, 0, 0, 1, 1, 1, 1], [0.10, 0.20, 0.50, 0.60, 0.75, 0.80, 0.85, 0.90])
    val_thr = M.choose_thresholds(np.array(val[0])[:, None], np.array(val[1])[:, None])[0]
    test_thr = M.choose_thresholds(np.array(test[0])[:, None], np.array(test[1])[:, None])[0]
    assert abs(val_thr - test_thr) > 0.2
    monkeypatch.setattr(evaluation_run, "gather_predictions", _fake_gather({"val": val, "test": test}))
    report = E.evaluate(_source(), cache=tiny.cache, split="test", out=tmp_path / "a",
                        n_boot=0, plots=False, update_card=False)
    assert report["operating_point"]["thresholds"]["any"] == pytest.approx(val_thr)
    pc = report["metrics"]["per_class"]["any"]
    # at val's threshold (0.35) test negatives 0.5 and 0.6 are false positives
    assert pc["specificity"] == pytest.approx(0.5) and pc["sensitivity"] == 1.0

    # external data (--split all): the stored operating point, still never the evaluated data
    monkeypatch.setattr(evaluation_run, "gather_predictions", _fake_gather({"all": test}))
    card = {"operating_point": {"thresholds": {"any": 0.42}, "source": "dev val split"}}
    report = E.evaluate(_source(card=card), cache=tiny.cache, split="all", out=tmp_path / "b",
                        n_boot=0, plots=False, update_card=False)
    assert report["operating_point"]["thresholds"]["any"] == pytest.approx(0.42)
    assert report["operating_point"]["source"]["kind"] == "model card"


def test_labels_that_do_not_match_the_dataset_are_one_clear_sentence(tiny, tmp_path):
    with pytest.raises(E.EvaluationError, match="do not match the dataset's labels") as err:
        E.evaluate(_source(labels=("normal", "abnormal")), cache=tiny.cache, out=tmp_path)
    assert "--label-map" in str(err.value) and "\n" not in str(err.value)
    rc = E.main(["--model", str(tiny.version), "--cache", str(tiny.cache), "--out",
                 str(tmp_path / "x"), "--label-map", "any=nonexistent"])
    assert rc == 2


def test_empty_and_missing_splits_are_clear_errors(tiny, tmp_path, capsys):
    source = E.load_model_source(tiny.version)
    with pytest.raises(E.EvaluationError, match="has no 'holdout' split"):
        E.gather_predictions(source, tiny.cache, "holdout")
    # a cache whose test images all went to quarantine: the split exists with 0 examples
    empty = tmp_path / "cache"
    shutil.copytree(tiny.cache, empty)
    info = json.loads((empty / "dataset.json").read_text())
    info["splits"]["test"] = 0
    info["shards"]["test"] = []
    (empty / "dataset.json").write_text(json.dumps(info))
    rc = E.main(["--model", str(tiny.version), "--cache", str(empty), "--split", "test",
                 "--out", str(tmp_path / "out"), "--bootstrap", "0", "--no-card"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "empty" in err and "Traceback" not in err and err.count("\n") == 1


def test_class_without_positives_is_reported_undefined(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random((40, 2)) < 0.5).astype(float)
    y[:, 1] = 0
    p = rng.random((40, 2))
    m = E.compute_metrics(y, p, labels=["a", "b"], groups=np.arange(40) // 2, n_boot=30)
    b = m["per_class"]["b"]
    assert b["auroc"] is None and b["auroc_ci95"] == [None, None] and b["pr_auc"] is None
    assert b["auroc_status"] == "undefined: no positives" and b["sensitivity"] is None
    assert m["per_class"]["a"]["auroc"] is not None
    assert m["macro_auroc"] == pytest.approx(m["per_class"]["a"]["auroc"])
    json.dumps(m, allow_nan=False)  # no NaN sneaks into report.json


def test_scan_level_aggregation_groups_slices_by_study(tiny, tmp_path):
    report = E.evaluate(tiny.version, cache=tiny.cache, split="test", out=tmp_path,
                        aggregate="topk_mean", top_k=2, n_boot=20, plots=False,
                        update_card=False)
    assert report["data"]["level"] == "scan" and report["data"]["aggregate"] == "topk_mean"
    scans = pd.read_csv(tmp_path / "predictions_scan.csv", dtype=str)
    slices = pd.read_csv(tmp_path / "predictions.csv", dtype={"id": str})
    manifest = pd.read_csv(tiny.cache / "manifest.csv", dtype=str).set_index("id")
    studies = manifest.loc[slices["id"], "study_id"]
    assert len(scans) == studies.nunique() == report["metrics"]["n"]
    # a scan is positive when any of its slices is; its probability is the top-2 mean
    sid = scans["scan_id"].iloc[0]
    members = slices[studies.to_numpy() == sid]
    assert int(scans["any"].iloc[0]) == members["any"].max()
    top2 = np.sort(members["prob_any"].to_numpy())[-2:].mean()
    assert float(scans["prob_any"].iloc[0]) == pytest.approx(top2, abs=1e-5)


def _cq500_from_phantom(tiny, root, n_scans=8):
    """A CQ500-layout copy of the phantom: one scan per patient, reads.csv from 3 readers."""
    from pipelines.datasets import get_adapter
    from pipelines.label_maps import RSNA_TO_CQ500

    rsna = get_adapter("rsna")

    df = rsna.read_manifest(tiny.data)
    rows = []
    for number, (_, scan) in enumerate(list(df.groupby("patient_id"))[:n_scans]):
        folder = root / f"CQ500CT{number} CQ500CT{number}" / "Unknown Study" / "CT PLAIN THIN"
        folder.mkdir(parents=True)
        for path in scan["path"]:
            shutil.copy(tiny.data / path, folder / Path(path).name)
        row = {"name": f"CQ500-CT-{number}", "Category": "B1"}
        for reader in ("R1", "R2", "R3"):
            for label, code in RSNA_TO_CQ500.items():
                vote = int(scan[label].max())
                row[f"{reader}:{code}"] = 1 - vote if reader == "R3" else vote  # R3 outvoted
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "reads.csv", index=False)
    return df


def test_external_validation_on_cq500_layout_scores_scans(tiny, tmp_path):
    df = _cq500_from_phantom(tiny, tmp_path / "cq500")
    out = tmp_path / "eval"
    rc = E.main(["--model", str(tiny.version), "--dataset", "cq500", "--data-dir",
                 str(tmp_path / "cq500"), "--split", "all", "--out", str(out),
                 "--bootstrap", "20", "--no-card"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["level"] == "scan" and report["data"]["aggregate"] == "max"
    assert report["metrics"]["n"] == 8 and report["data"]["images"] == 8 * 4
    assert (out / "cache" / "dataset.json").is_file()  # prepared at the model's size and windows
    scans = pd.read_csv(out / "predictions_scan.csv")
    expected = df.groupby("patient_id")["any"].max().iloc[:8].sort_values().to_numpy()
    assert np.array_equal(np.sort(scans["any"].to_numpy()), expected)  # majority of 3 readers
    assert report["operating_point"]["source"]["kind"] in ("model card", "fixed 0.5")
    assert "any <- any (same name)" in report["label_mapping"]
