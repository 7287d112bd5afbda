"""Formula injection: a label named like a spreadsheet formula is written as text everywhere
(manifest.csv, quarantine.csv, history.csv, labels.txt, predictions.csv, report.md) and the
project's own readers get the name back exactly; numbers are never touched."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from pipelines import cells

EVIL = "=cmd|' -C calc'!A0"  # no "/": it is also a folder name
NAMES = [EVIL, "+A1", "-x", "@SUM(A1)", "\tTab", "\rcr", "'=already", "''+two", "plain", "'quoted",
         "", "a=b"]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _formula_cells(path, *, numbers: bool = False) -> list[str]:
    """The cells of a CSV a spreadsheet would run as a formula (numbers only when asked)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [c for row in csv.reader(handle) for c in row
                if c[:1] in cells.TRIGGERS and (numbers or not _is_number(c))]


@pytest.mark.parametrize("name", NAMES)
def test_escape_round_trips_and_never_starts_with_a_trigger(name):
    escaped = cells.escape_cell(name)
    assert escaped[:1] not in cells.TRIGGERS
    assert cells.unescape_cell(escaped) == name
    assert cells.md_cell(name).count("|") == cells.md_cell(name).count("\\|")


def test_numbers_are_not_escaped():
    assert cells.escape_cell(-0.5) == -0.5 and cells.escape_cell(-3) == -3
    for number in ("-0.5", "+3", "-1e-4", "-.5"):  # a number read back as text stays a number
        assert cells.escape_cell(number) == number == cells.unescape_cell(number)
    for formula in ("-1+2", "-inf", "-0.5)", "+A1", "-"):
        assert cells.escape_cell(formula) == "'" + formula


def test_csv_and_frames_and_lines_round_trip(tmp_path):
    rows = [{"epoch": 1, "loss": -0.5, EVIL: "-x"}, {"epoch": 2, "loss": 0.25, EVIL: "@y"}]
    cells.write_csv(tmp_path / "h.csv", rows, ["epoch", "loss", EVIL])
    assert _formula_cells(tmp_path / "h.csv", numbers=True) == ["-0.5"]  # a number stays one
    back = cells.read_rows(tmp_path / "h.csv")
    assert back == [{"epoch": "1", "loss": "-0.5", EVIL: "-x"}, {"epoch": "2", "loss": "0.25", EVIL: "@y"}]

    frame = pd.DataFrame({"id": ["-a", "b"], EVIL: [1, 0], "prob": [-0.5, 0.75]})
    cells.write_frame(frame, tmp_path / "m.csv")
    assert _formula_cells(tmp_path / "m.csv", numbers=True) == ["-0.5"]
    pd.testing.assert_frame_equal(cells.read_csv(tmp_path / "m.csv"), frame)

    lines = NAMES[:5] + ["plain"]  # one a line: no line breaks in a label
    cells.write_lines(tmp_path / "labels.txt", lines)
    text = (tmp_path / "labels.txt").read_text()
    assert all(line[:1] == "'" for line in text.splitlines()[:5])
    assert cells.read_lines(tmp_path / "labels.txt") == lines


def test_prepare_writes_a_formula_folder_name_as_text_and_reads_it_back(tmp_path):
    """A folder named like a formula: manifest.csv holds it escaped; the cache reader, the
    training labels and the evaluation reader see the real name."""
    from PIL import Image

    from pipelines.cache import prepare, read_info

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for cls in (EVIL, "-neg"):
        (data / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)).save(data / cls / f"{i}.png")
    out = prepare("folder", data, tmp_path / "cache", image_size=8, workers=1, progress=False)
    assert _formula_cells(out / "manifest.csv") == []
    header = (out / "manifest.csv").read_text().splitlines()[0]
    assert f"'{EVIL}" in header and "'-neg" in header
    labels = read_info(out)["labels"]
    assert labels == ["-neg", EVIL]  # sorted folder names
    table = cells.read_csv(out / "manifest.csv")
    assert set(labels) <= set(table.columns) and table[labels].to_numpy().sum() == 8
    from pipelines.cache import make_dataset

    batch = next(iter(make_dataset(out, "train", batch_size=2)))
    assert batch[1].shape[-1] == 2


def test_history_labels_predictions_and_report_escape_a_formula_label(tmp_path):
    from zoo.evaluation.report import render_report, write_predictions
    from zoo.training.recorder import history_fields, read_history, write_history

    fields = history_fields([EVIL])
    row = {f: "" for f in fields} | {"epoch": 1, "train_loss": -0.5, f"val_auroc_{EVIL}": 0.5}
    write_history(tmp_path / "history.csv", fields, [row])
    assert _formula_cells(tmp_path / "history.csv", numbers=True) == ["-0.5"]
    rows = read_history(tmp_path / "history.csv")
    assert rows[0][f"val_auroc_{EVIL}"] == "0.5"
    write_history(tmp_path / "history.csv", fields, rows + [row | {"epoch": 2}])  # as a resume does
    assert _formula_cells(tmp_path / "history.csv", numbers=True) == ["-0.5", "-0.5"]
    assert [r["train_loss"] for r in read_history(tmp_path / "history.csv")] == ["-0.5", "-0.5"]

    class Pair:
        model = EVIL

    gathered = {"id": ["-1", "b"], "patient_id": ["@p", "q"], "y_prob": np.array([[0.2], [0.9]])}
    write_predictions(tmp_path / "predictions.csv", gathered, [Pair()], [EVIL],
                      np.array([[0], [1]]), np.array([[0.2], [0.9]]))
    assert _formula_cells(tmp_path / "predictions.csv") == []
    back = cells.read_csv(tmp_path / "predictions.csv", dtype={"id": str})
    assert list(back.columns) == ["id", "patient_id", EVIL, f"prob_{EVIL}"]
    assert list(back["id"]) == ["-1", "b"]

    pc = {"auroc": 0.5, "auroc_status": "", "positives": 1, "negatives": 1, "auroc_ci95": [0.1, 0.9],
          "pr_auc": 0.5, "threshold": 0.5, "sensitivity": 1.0, "specificity": 1.0, "f1": 1.0,
          "accuracy": 1.0}
    report = {
        "model": {"name": "m", "kind": "export", "path": "p", "task": "binary", "input_shape": [8, 8, 1]},
        "data": {"dataset": "d", "split": "test", "images": 2, "patients": 2, "splits_used": ["test"],
                 "cache": "c", "level": "image", "aggregate": None},
        "metrics": {"n": 2, "n_groups": 2, "bootstrap": {"resamples": 1, "unit": "patient"},
                    "macro_auroc": 0.5, "macro_auroc_ci95": [0.1, 0.9], "micro_auroc": 0.5,
                    "micro_auroc_ci95": [0.1, 0.9], "mean_pr_auc": 0.5, "ece": 0.1, "brier": 0.1,
                    "per_class": {EVIL: pc},
                    "confusion_matrix": {"classes": [f"not {EVIL}", EVIL], "matrix": [[1, 0], [0, 1]]}},
        "operating_point": {"source": {"kind": "fixed"}, "temperature": None},
        "label_mapping": ["x"],
    }
    text = render_report(report)
    row = next(line for line in text.splitlines() if line.startswith("| '=cmd"))
    assert row.startswith("| '=cmd\\|' -C calc'!A0 | 1 | 1 |")
    assert f"| {EVIL}" not in text


def test_the_corpus_card_escapes_source_and_class_names():
    from pipelines.corpus_card import card_markdown

    source = {"in_corpus": True, "images": 2, "per_split": {"train": 2}, "test_rows_left_out": 0,
              "duplicates_dropped": {}, "licence": "CC-BY", "per_class": {"-x|y": 2}, "citation": "c"}
    card = {"images": 2, "labels": ["a"], "spec": "s", "spec_sha256": "0" * 64, "image_size": [8, 8],
            "channels": 1, "excluded": [], "channel_rule": "r", "dedup": "d", "duplicates_dropped": 0,
            "objective": "o", "sources": {EVIL: source}, "per_modality": {"@ct": 2}}
    text = card_markdown(card)
    assert "| '=cmd\\|' -C calc'!A0 | yes |" in text and "| '-x\\|y | 2 |" in text
    assert "| '@ct | 2 |" in text
