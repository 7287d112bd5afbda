"""A smoke run of python -m benchmarks.ablations on tiny data (the --quick configuration)."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import ablation_data, ablations


def _breastmnist():
    """The shared BreastMNIST file; a failure under CI when it is missing, else a skip."""
    breast = ablation_data.SHARED / ablation_data.REAL["breastmnist"][0]
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


def test_early_stopping_restores_the_best_epoch():
    """Validation labels flipped against training: the validation AUROC peaks early and falls,
    so the run stops ``patience`` epochs after its best and keeps that epoch's weights."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 24)
    x = (rng.normal(0.3, 0.05, (48, 32, 32, 1)) + 0.4 * y[:, None, None, None]).astype("float32")
    model, _, info = ablations.train_model("myositisnet", {}, (x, y), (x, 1 - y), seed=0, epochs=30,
                                           patience=2, batch=16, lr=1e-2)
    assert info["epochs_run"] == info["best_epoch"] + 2 < 30 and not info["rising"]
    assert ablations.auroc(1 - y, ablations.predict(model, x)) == pytest.approx(info["best_val_auroc"])
    _, _, late = ablations.train_model("myositisnet", {}, (x, y), (x, 1 - y), seed=0, epochs=30,
                                       patience=2, batch=16, lr=1e-2, min_epochs=7)
    assert late["epochs_run"] == max(7, late["best_epoch"] + 2)  # no stop before min_epochs
    _, _, ceiling = ablations.train_model("myositisnet", {}, (x, y), (x, y), seed=0, epochs=2,
                                          patience=5, batch=16, lr=1e-2)
    assert ceiling["epochs_run"] == 2 and ceiling["rising"]  # stopped by the ceiling, not converged


def test_kidney_stone_patches_run_the_lesion_claims_with_the_pointing_game(tmp_path, shared_data):
    if not (shared_data / ablation_data.KIDNEY).is_file():
        pytest.fail(f"{shared_data / ablation_data.KIDNEY} is missing from the shared data.")
    ablations.main(["--quick", "--claims", "edge_conservative", "--drop", "downsample=max",
                    "downsample=strided", "--lesion", "kidney", "--ratio", "1/8",
                    "--kidney-pairs", "16", "--kidney-test-pairs", "12", "--real", "none",
                    "--data-root", str(shared_data), "--out-dir", str(tmp_path)])
    record = json.loads((tmp_path / "ablations.json").read_text())
    rows = record["rows"]
    assert {(r["data"], r["form"]) for r in rows} == {
        ("kidney-stone patches (4 px stones)", f) for f in ("downsample=edge", "downsample=avg")}
    paper = next(r for r in rows if r["is_paper"])
    assert 0.0 <= paper["pg_gradcam"] <= 1.0 and 0.0 <= paper["pg_layercam_2px"] <= 1.0
    assert all(len(r["best_epoch"]) == 2 and "converged" in r for r in rows)
    # two epochs is below convergence: the table says so rather than reporting a verdict as is
    assert "(not converged)" in (tmp_path / "ablations.md").read_text()


def test_kidney_rows_at_several_ratios_give_the_stone_size_curve(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"claim": "edge_conservative", "form": form, "is_paper": form.endswith("edge"),
             "data": f"kidney-stone patches ({px:g} px stones)", "auroc_mean": a, "auroc_sd": 0.01}
            for px, a in ((4, 0.7), (8, 0.8), (16, 0.9)) for form in ("downsample=edge", "downsample=avg")]
    png = ablations.stone_size_plot(rows, tmp_path, plt)
    assert png == tmp_path / "ablations-kidney-stone-size.png" and png.stat().st_size > 1000
    one_ratio = [r for r in rows if r["data"].startswith("kidney-stone patches (4 ")]
    assert ablations.stone_size_plot(one_ratio, tmp_path / "none", plt) is None


def test_a_row_at_chance_is_marked_did_not_learn():
    import numpy as np

    from zoo.ablations import claim

    y = np.tile([0, 1], 20)
    fig = {"auroc": 0.52, "p": np.full(40, 0.5), "y": y, "rising": False, "params": 1, "img_s": 1.0,
           "best_epoch": 2, "epochs_run": 10}
    row = ablations.make_row(claim("edge_conservative"), "downsample=edge", "downsample=edge",
                         [fig, fig], [fig, fig], "kidney", "rensenet_small", 10)
    assert row["learned"] is False and row["mark"].startswith("did not learn")
    assert "(did not learn)" in ablations.markdown([row])
