"""A smoke run of python -m benchmarks.ablations on tiny data (the --quick configuration)."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import ablations


def _breastmnist():
    """The shared BreastMNIST file; a failure under CI when it is missing, else a skip."""
    breast = ablations.SHARED / ablations.REAL["breastmnist"][0]
    if not breast.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{breast} is missing; the shared data folder must be present in CI.")
        pytest.skip(f"{breast} is not here")
    return breast


def test_quick_ablation_writes_table_plots_and_result(tmp_path):
    _breastmnist()  # the quick run reads it
    ablations.main(["--quick", "--claims", "multi_receptive_field", "--no-explain",
                    "--out-dir", str(tmp_path)])
    names = {p.name for p in tmp_path.iterdir()}
    assert {"ablations.csv", "ablations.md", "ablations.json",
            "ablations-lesion-multi_receptive_field.png"} <= names
    record = json.loads((tmp_path / "ablations.json").read_text())
    for key in ("benchmark", "model", "seed", "command", "date", "software", "source"):
        assert key in record
    rows = record["rows"]
    assert {(r["data"], r["form"]) for r in rows} == {
        (d, f) for d in ("small-lesion phantom", "breastmnist")
        for f in ("receptive_field=multi", "receptive_field=single")}
    twin = next(r for r in rows if not r["is_paper"])
    assert twin["diff_lo"] <= twin["diff"] <= twin["diff_hi"]
    assert 0.0 <= twin["auroc_mean"] <= 1.0 and twin["params"] > 0
    assert "twin − paper" in (tmp_path / "ablations.md").read_text()
    # runs of separate claims combine into one set of outputs
    ablations.main(["--merge", str(tmp_path / "ablations.json"), "--out-dir",
                    str(tmp_path / "merged")])
    merged = json.loads((tmp_path / "merged" / "ablations.json").read_text())
    assert merged["rows"] == rows and merged["command"] == record["command"]
    assert (tmp_path / "merged" / "ablations-lesion-multi_receptive_field.png").is_file()


def test_paired_ci_brackets_a_clear_difference():
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(50), np.ones(50)]
    good = np.stack([y + rng.normal(0, 0.3, 100) for _ in range(3)])
    bad = np.stack([y + rng.normal(0, 2.0, 100) for _ in range(3)])
    diff, lo, hi = ablations.paired_ci(y, bad, good, n_boot=200)
    assert 0 < lo <= diff <= hi


def test_bad_flags_are_one_sentence(capsys):
    with pytest.raises(SystemExit):
        ablations.main(["--dataset", "folder"])
    assert "--dataset needs --data-dir" in capsys.readouterr().err


def test_ablation_on_a_users_folder_dataset(tmp_path):
    """--dataset/--data-dir: the same ablation on the user's own images, as train.py reads them."""
    import numpy as np
    from PIL import Image

    breast = _breastmnist()
    data = np.load(breast)
    images, labels = data["train_images"], data["train_labels"].reshape(-1)
    folder = tmp_path / "my_images"
    for name, label in (("malignant", 0), ("benign", 1)):  # BreastMNIST: 0 malignant, 1 normal/benign
        (folder / name).mkdir(parents=True)
        for i, idx in enumerate(np.flatnonzero(labels == label)[:20]):
            Image.fromarray(images[idx]).save(folder / name / f"{i:03d}.png")
    out = tmp_path / "out"
    ablations.main(["--quick", "--claims", "multi_receptive_field", "--no-explain",
                    "--dataset", "folder", "--data-dir", str(folder), "--positive", "malignant",
                    "--work-dir", str(tmp_path / "work"), "--out-dir", str(out)])
    record = json.loads((out / "ablations.json").read_text())
    real = [r for r in record["rows"] if r["data"] != "small-lesion phantom"]
    assert {r["data"] for r in real} == {"folder"}
    assert {r["form"] for r in real} == {"receptive_field=multi", "receptive_field=single"}
    assert all(0.0 <= r["auroc_mean"] <= 1.0 for r in real)
    assert "--dataset folder" in record["command"]
