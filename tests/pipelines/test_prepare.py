"""``python -m pipelines.prepare`` on real data: PneumoniaMNIST and RSNA-format DICOM."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines.cache import make_dataset, read_info
from pipelines.prepare import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_help_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.prepare", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for flag in (
        "--dataset",
        "--data-dir",
        "--out",
        "--image-size",
        "--windows",
        "--workers",
        "--strict",
        "--val-fraction",
        "--test-fraction",
        "--seed",
    ):
        assert flag in result.stdout


def test_medmnist_cache_keeps_the_official_split_and_the_pixels(shared_data, tmp_path, capsys):
    data = shared_data / "medmnist"
    out = tmp_path / "pneumonia"
    code = main(
        ["--dataset", "medmnist", "--data-dir", str(data), "--out", str(out), "--image-size", "28"]
    )
    assert code == 0
    summary = capsys.readouterr().err
    assert "images/s" in summary and "train" in summary and "quarantined: 0" in summary
    info = read_info(out)
    assert info["splits"] == {"train": 4708, "val": 524, "test": 624}
    assert info["labels"] == ["normal", "pneumonia"] and info["channels"] == 1
    assert info["windows"] is None  # 8-bit images: no CT windows

    npz = np.load(data / "pneumoniamnist.npz")
    x, y, extra = next(iter(make_dataset(out, "test", batch_size=32, with_ids=True)))
    assert x.shape == (32, 28, 28, 1)
    for image, label, example_id in zip(x.numpy(), y.numpy(), extra["id"].numpy()):
        split, index = example_id.decode().split("_")
        assert split == "test"
        np.testing.assert_allclose(image[..., 0], npz["test_images"][int(index)] / 255.0, atol=1e-6)
        assert label.tolist() == np.eye(2)[npz["test_labels"][int(index), 0]].tolist()

    manifest = pd.read_csv(out / "manifest.csv")
    assert (manifest["split"] == "train").sum() == 4708
    assert manifest.loc[manifest["split"] == "train", "pneumonia"].sum() == 3494

    # class balance: 26% normal in train -> about half with balanced sampling
    ds = make_dataset(out, "train", batch_size=64, training=True, balanced=True, seed=1)
    labels = np.concatenate([b.numpy() for _, b in ds.take(20)])
    assert abs(labels[:, 0].mean() - 0.5) < 0.05

    assert (
        main(
            [
                "--dataset",
                "medmnist",
                "--data-dir",
                str(data),
                "--out",
                str(out),
                "--image-size",
                "28",
            ]
        )
        == 0
    )
    assert "nothing to do" in capsys.readouterr().err


def test_cli_errors_are_one_sentence(tmp_path, capsys):
    assert (
        main(
            [
                "--dataset",
                "medmnist",
                "--data-dir",
                str(tmp_path / "missing"),
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not exist" in err and len(err.splitlines()) == 1
    assert (
        main(["--dataset", "rsnaa", "--data-dir", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    )
    err = capsys.readouterr().err
    assert "Unknown dataset 'rsnaa'" in err and "rsna" in err
    with pytest.raises(SystemExit):
        main(["--dataset", "medmnist", "--data-dir", ".", "--out", "c", "--image-size", "big"])


def test_a_data_file_is_taken_where_the_adapter_reads_a_file(shared_data, tmp_path, capsys):
    """--data-dir breastmnist.npz (the README's CPMID fine-tune) prepares like its folder does;
    an adapter that reads folders only still refuses a file in one sentence."""
    from pipelines.datasets import get_adapter

    assert get_adapter("medmnist").accepts_file and get_adapter("mednist").accepts_file
    assert not get_adapter("rsna").accepts_file
    npz = shared_data / "medmnist-extra" / "breastmnist.npz"
    out = tmp_path / "breast"
    assert main(["--dataset", "medmnist", "--data-dir", str(npz), "--out", str(out),
                 "--image-size", "28"]) == 0
    counts = read_info(out)["splits"]
    with np.load(npz) as arrays:
        assert counts == {s: len(arrays[f"{s}_labels"]) for s in ("train", "val", "test")}
    capsys.readouterr()
    assert main(["--dataset", "rsna", "--data-dir", str(npz), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and "root folder." in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def head_ct(tmp_path_factory):
    """A tiny synthetic head CT in the RSNA layout, with one slice truncated mid-pixel-data."""
    from pipelines.datasets.synthetic import write_head_ct

    root = write_head_ct(tmp_path_factory.mktemp("head") / "rsna", patients=4, slices=3, size=48)
    files = sorted((root / "stage_2_train").glob("*.dcm"))
    broken = files[len(files) // 2]
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) - 48 * 48])  # header intact, pixels cut short
    return root, broken


def test_rsna_format_dicom_with_two_workers_as_a_module(head_ct, tmp_path):
    """The real CLI in a fresh interpreter, 2 spawned workers, a truncated DICOM quarantined."""
    import pydicom

    from pipelines import transforms
    from pipelines.datasets import get_adapter

    synthetic = get_adapter("synthetic")
    root, broken = head_ct
    out = tmp_path / "cache"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.prepare",
            "--dataset",
            "synthetic",
            "--data-dir",
            str(root),
            "--out",
            str(out),
            "--image-size",
            "32",
            "--workers",
            "2",
            "--seed",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr
    assert "2 workers" in result.stderr and "quarantined: 1" in result.stderr
    info = read_info(out)
    assert info["windows"] == "brain,subdural,bone" and info["channels"] == 3
    assert info["labels"][0] == "any" and info["task"] == "multi-label"
    assert sum(info["splits"].values()) == 4 * 3 - 1
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert quarantine["path"].tolist() == [f"stage_2_train/{broken.name}"]

    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert "mask_path" in manifest.columns
    assert manifest.groupby("patient_id")["split"].nunique().max() == 1  # patient-disjoint
    source = synthetic.read_manifest(root).set_index("id")
    for split in info["splits"]:
        for x, y, extra in make_dataset(out, split, batch_size=4, with_ids=True):
            for image, label, example_id in zip(x.numpy(), y.numpy(), extra["id"].numpy()):
                row = source.loc[example_id.decode()]
                expected = synthetic.load({**row, "id": row.name}, root, None)
                expected = transforms.to_uint8(transforms.resize(expected, 32)) / 255.0
                np.testing.assert_allclose(image, expected, atol=1e-6)
                assert label.tolist() == [float(row[k]) for k in info["labels"]]

    # nothing that identifies a person (or a study) from the headers reaches the cache
    header = pydicom.dcmread(next((root / "stage_2_train").glob("*.dcm")), stop_before_pixels=True)
    secrets = [str(header.PatientID), str(header.StudyInstanceUID), str(header.SeriesInstanceUID)]
    if header.get("PatientName"):
        secrets.append(str(header.PatientName))
    for path in out.iterdir():
        text = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in text, (path.name, secret)


def test_strict_stops_at_the_truncated_dicom(head_ct, tmp_path, capsys):
    root, broken = head_ct
    code = main(
        [
            "--dataset",
            "synthetic",
            "--data-dir",
            str(root),
            "--out",
            str(tmp_path / "c"),
            "--image-size",
            "32",
            "--strict",
            "--quiet",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert broken.name in err and "without --strict" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c" / ".progress").exists()  # the salt does not outlive the run
    assert not list((tmp_path / "c").glob("*.tfrecord"))
