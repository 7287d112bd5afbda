"""The MedNIST adapter: the published layout, from a folder or straight from the tarball."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
from PIL import Image

from pipelines.datasets import get_adapter
from pipelines.manifest import DataError


def write_mednist(root, classes=("CXR", "Hand"), per_class=3, tar=False):
    """A tiny MedNIST: MedNIST/<class>/<NNNNNN>.jpeg (optionally packed as MedNIST.tar.gz)."""
    rng = np.random.default_rng(0)
    folder = root / "MedNIST"
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (64, 64), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / c / f"{i:06d}.jpeg")
    if not tar:
        return root
    tarball = root / "MedNIST.tar.gz"
    with tarfile.open(tarball, "w:gz") as t:
        t.add(folder, arcname="MedNIST")
    return tarball


@pytest.mark.parametrize("tar", [False, True])
def test_reads_the_folder_and_the_tarball_alike(tmp_path, tar):
    data = write_mednist(tmp_path / "d", tar=tar)
    adapter = get_adapter("mednist")
    df = adapter.read_manifest(data)
    assert len(df) == 6 and adapter.manifest_labels(df) == ("CXR", "Hand")
    assert adapter.manifest_task(df) == "binary" and df.attrs["channels"] == 1
    assert df["path"].iloc[0] == "MedNIST/CXR/000000.jpeg"
    image = adapter.load(df.iloc[0], data)
    assert image.shape == (64, 64, 1) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1


def test_a_missing_folder_and_an_unknown_class_are_one_sentence(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        get_adapter("mednist").read_manifest(tmp_path / "nowhere")
    data = write_mednist(tmp_path / "d")
    with pytest.raises(DataError, match="has no class 'Knee'"):
        get_adapter("mednist").read_manifest(data, classes="CXR,Knee")


def test_the_real_tarball_read_in_place(shared_data):
    tarball = shared_data / "mednist" / "MedNIST.tar.gz"
    if not tarball.is_file():
        pytest.fail(f"{tarball} is missing (see ../shared/data/README.md)")
    adapter = get_adapter("mednist")
    df = adapter.read_manifest(tarball)
    assert len(df) == 58954
    assert adapter.manifest_labels(df) == ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT")
    assert int(df["BreastMRI"].sum()) == 8954
    assert adapter.load(df.iloc[0], tarball).shape == (64, 64, 1)


def test_medmnist_reads_retinamnist_rgb_five_grades(shared_data):
    npz = shared_data / "medmnist-extra" / "retinamnist.npz"
    if not npz.is_file():
        pytest.fail(f"{npz} is missing (see ../shared/data/README.md)")
    adapter = get_adapter("medmnist")
    df = adapter.read_manifest(npz)
    assert adapter.manifest_labels(df) == ("grade_0", "grade_1", "grade_2", "grade_3", "grade_4")
    assert adapter.manifest_channels(df) == 3 and adapter.manifest_task(df) == "multi-class"
    assert df["split"].value_counts().to_dict() == {"train": 1080, "test": 400, "val": 120}
    assert adapter.load(df.iloc[0], npz).shape == (28, 28, 3)
