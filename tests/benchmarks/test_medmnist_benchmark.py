"""benchmarks.medmnist --quick: the real BreastMNIST file, one pocket run, the result file and
its table (the full study is hours; this proves the path from the shared file to the table)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import medmnist


def test_medmnist_quick_writes_scored_runs_and_a_table(tmp_path, shared_data, capsys):
    out = tmp_path / "medmnist.json"
    argv = ["--quick", "--data-dir", str(shared_data), "--work-dir", str(tmp_path / "work"), "--json", str(out)]
    assert medmnist.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["quick"] is True
    (run,) = result["runs"]
    assert (run["set"], run["model"], run["size"], run["seed"]) == ("breastmnist", "ichnet_small", 32, 0)
    for key in ("accuracy", "auroc", "balanced_accuracy"):
        assert 0.0 <= run[key] <= 1.0 and run[f"{key}_lo"] <= run[key] <= run[f"{key}_hi"]
    assert run["parameters"] > 0 and run["seconds"] > 0 and run["epochs_run"] >= 1
    (row,) = result["rows"]
    assert row["seeds"] == 1 and isinstance(row["marks"], list)
    assert result["published"]["breastmnist"]["ResNet-18 (28)"] == [0.863, 0.901]
    text = medmnist.table(result)
    assert "| breastmnist | `ichnet_small` | 32 |" in text and "ResNet-18 (28) (published)" in text
    assert not math.isnan(result["verdicts"]["breastmnist"].get("accuracy") or 0.0)

    # result files of other sets or sizes merge into one (rows and verdicts recomputed); a run
    # in two files counts once (the last file's) and a command is listed once
    other = dict(result, runs=[dict(run, seed=1)], command=result["command"] + " --seeds 1")
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    merged = tmp_path / "merged.json"
    assert medmnist.main(["--merge", str(out), str(other_path), str(out), "--json", str(merged)]) == 0
    both = json.loads(merged.read_text())
    assert sorted(r["seed"] for r in both["runs"]) == [0, 1] and both["rows"][0]["seeds"] == 2
    assert both["command"] == result["command"] + " && " + other["command"]
    assert any("breastmnist" in line for line in medmnist.verdict_lines(both))

    # a rerun over the same work dir reuses the finished run instead of training again
    capsys.readouterr()
    assert medmnist.main(argv) == 0
    again = json.loads(out.read_text())
    assert again["runs"][0]["seconds"] == run["seconds"]


def test_unknown_set_is_one_sentence(tmp_path, shared_data):

    with pytest.raises(SystemExit, match="unknown set 'octmnist'; choose from"):
        medmnist.main(["--sets", "octmnist", "--data-dir", str(shared_data), "--json", str(tmp_path / "x.json")])


def _run(seed, acc, bacc, still=False, name="breastmnist"):
    scores = {}
    for key, value in (("accuracy", acc), ("balanced_accuracy", bacc), ("auroc", 0.95)):
        scores |= {key: value, f"{key}_lo": value - 0.05, f"{key}_hi": value + 0.05}
    return {"set": name, "model": "m", "size": 64, "seed": seed, "parameters": 1000,
            "seconds": 10.0, "train_images_per_s": 100.0, "best_epoch": 5, "still_improving": still, **scores}


def test_rows_at_the_majority_class_or_still_rising_are_marked():
    (fine,) = medmnist.summarise([_run(s, 0.90, 0.85) for s in range(3)])
    assert fine["marks"] == [] and fine["beats_bar"] and abs(fine["accuracy"] - 0.90) < 1e-9
    (majority,) = medmnist.summarise([_run(s, 0.73, 0.50) for s in range(3)])
    assert majority["marks"] == ["did not learn: balanced accuracy at the majority-class level"]
    assert not majority["beats_bar"]
    (rising,) = medmnist.summarise([_run(0, 0.90, 0.85, still=True), _run(1, 0.90, 0.85)])
    assert rising["marks"] == ["not converged: the ceiling was hit while validation AUROC still rose"]
    verdict = medmnist.verdicts([fine])["breastmnist"]
    assert verdict["beats_bar"] and verdict["short_by"]["accuracy"] < 0


def test_the_majority_class_level_follows_the_number_of_classes():
    # five RetinaMNIST grades: chance is 0.20 balanced accuracy, so 0.35 learned something
    (retina,) = medmnist.summarise([_run(s, 0.53, 0.35, name="retinamnist") for s in range(3)])
    assert retina["marks"] == []
    (flat,) = medmnist.summarise([_run(s, 0.43, 0.22, name="retinamnist") for s in range(3)])
    assert flat["marks"] == ["did not learn: balanced accuracy at the majority-class level"]


def test_a_linear_probe_freezes_the_shipped_backbone_and_is_its_own_row(tmp_path, shared_data):

    import zoo

    out = tmp_path / "probe.json"
    argv = ["--quick", "--weights", "medical", "--probe", "--data-dir", str(shared_data),
            "--work-dir", str(tmp_path / "work"), "--json", str(out)]
    assert medmnist.main(argv) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["start"] == "medical linear probe"
    (run_dir,) = (tmp_path / "work").iterdir()
    assert run_dir.name.endswith("-medical-probe")
    # only the head trained: the backbone's weights are the shipped ones
    trained = zoo.get_model("ichnet_small", input_shape=(32, 32, 1), num_classes=2, activation="softmax")
    trained.load_weights(run_dir / "best.weights.h5")
    shipped = zoo.get_model("ichnet_small", input_shape=(32, 32, 1), num_classes=2, activation="softmax",
                            weights="medical")
    for name in ("head_conv", "head_bn"):  # the last backbone layers, batch-norm statistics too
        for got, want in zip(trained.get_layer(name).weights, shipped.get_layer(name).weights):
            assert (got.numpy() == want.numpy()).all(), got.path
    assert not (trained.get_layer("head_logits").kernel.numpy()
                == shipped.get_layer("head_logits").kernel.numpy()).all()
    assert "medical linear probe" in medmnist.table(result)
    with pytest.raises(SystemExit, match="--probe freezes a pretrained backbone"):
        medmnist.main(["--quick", "--probe", "--json", str(tmp_path / "x.json")])


def test_a_row_trained_with_overrides_is_its_own_row_and_no_verdict():
    plain = [_run(s, 0.80, 0.75) for s in range(3)]
    study = [{**_run(s, 0.95, 0.90), "overrides": "ema=5"} for s in range(3)]
    rows = medmnist.summarise(plain + study)
    assert sorted((r["overrides"], r["seeds"]) for r in rows) == [("", 3), ("ema=5", 3)]
    # the better study row does not stand for the recipe
    assert medmnist.verdicts(rows)["breastmnist"]["accuracy"] == pytest.approx(0.80)
    text = medmnist.table({"rows": rows, "settings": {"seeds": [0, 1, 2]}, "command": "c"})
    assert "| breastmnist | `m`, ema=5 | 64 |" in text


def test_runs_of_two_architectures_are_two_rows_and_merge_apart(tmp_path):
    """A recipe that changes the architecture (ichnet: output stride 8 from scratch at <= 64 px)
    gives new runs of the same (set, model, size, seed): they are their own row, named by their
    model_kwargs, and --merge keeps both, comparing a fine-tune with scratch of its own form."""
    def run(seed, acc, **extra):
        return {**_run(seed, acc, 0.75), "model": "ichnet", "parameters": 143_498, **extra}

    older = [run(s, 0.87) for s in range(3)]  # recorded before the field: the defaults
    stride8 = [run(s, 0.86, model_kwargs={"output_stride": 8}) for s in range(3)]
    tuned = [run(s, 0.83, start="medical", model_kwargs={}) for s in range(3)]
    rows = medmnist.summarise(older + stride8 + tuned)
    assert sorted((r["start"], medmnist.arch(r), r["seeds"]) for r in rows) == [
        ("medical", "", 3), ("scratch", "", 3), ("scratch", "output_stride=8", 3)]
    assert not medmnist.is_recipe_row(rows[2])  # a stride-16 fine-tune is history at 64 px too
    text = medmnist.table({"rows": rows, "settings": {"seeds": [0, 1, 2]}, "command": "c"})
    assert "| breastmnist | `ichnet`, output_stride=8 | 64 |" in text  # today's recipe at 64 px
    assert ("| breastmnist | `ichnet`, the model defaults (an earlier recipe; today: output_stride=8) | 64 |"
            in text)
    # the better stride-16 row is history: the verdict is the recipe's row
    assert medmnist.verdicts(rows)["breastmnist"]["accuracy"] == pytest.approx(0.86)
    (line,) = medmnist.transfer_lines({"rows": rows})
    assert "against scratch 0.870" in line  # the stride-16 scratch row, not the stride-8 one
    for name, runs in (("a", older + tuned), ("b", stride8)):
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "command": name, "runs": runs, "settings": {"quick": False, "overrides": []}}))
    merged = medmnist.merge([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "m.json")
    assert len(merged["runs"]) == 9 and len(merged["rows"]) == 3
    # a study recorded before the field names its architecture in its override
    old_study = {**_run(0, 0.8, 0.7), "overrides": 'model_kwargs={"output_stride": 8, "stages": [[8, 1]]}'}
    assert medmnist.arch(old_study) == 'output_stride=8, stages=[[8, 1]]'


def test_the_verdict_prefers_a_row_that_clears_both_bars():
    both = [{**_run(s, 0.53, 0.40, name="retinamnist"), "model": "a", "auroc": 0.73} for s in range(3)]
    acc_only = [{**_run(s, 0.54, 0.40, name="retinamnist"), "model": "b", "auroc": 0.70} for s in range(3)]
    verdict = medmnist.verdicts(medmnist.summarise(both + acc_only))["retinamnist"]
    assert verdict["best"] == "a @ 64 px" and verdict["beats_bar"] is True


def test_a_model_kwargs_override_reaches_the_builder(tmp_path, shared_data):
    """--override model_kwargs={...} builds the model it names (it once reached only the config)."""
    import zoo

    out = tmp_path / "kw.json"
    argv = ["--quick", "--override", 'model_kwargs={"head": 24}', "--data-dir", str(shared_data),
            "--work-dir", str(tmp_path / "work"), "--json", str(out)]
    assert medmnist.main(argv) == 0
    (run,) = json.loads(out.read_text())["runs"]
    narrow = zoo.get_model("ichnet_small", input_shape=(32, 32, 1), num_classes=2, head=24)
    assert run["parameters"] == narrow.count_params()
    assert run["parameters"] != zoo.get_model("ichnet_small", input_shape=(32, 32, 1), num_classes=2).count_params()
    assert run["overrides"] == 'model_kwargs={"head": 24}'
