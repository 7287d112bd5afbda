"""Colour through the folder and CSV adapters: ``channels=1|3|auto``.

The default stays grey (1 channel), and a grey cache is byte for byte the cache the code wrote
before the option existed: the golden digests below were computed at commit 2cb8cc3 (before
``channels=``) with :func:`tests.colour_files.cache_digest` and a pinned salt."""

from __future__ import annotations

import pytest

from tests import colour_files as cf

# cache_digest of folder caches prepared at commit 2cb8cc3 (no channels option), salt pinned
GOLDEN_MODES_8PX = "1cc90f8abb0d33f0b564c2d0e67eec57a2a3b891d811747a7e8f682589fb2fff"
GOLDEN_PBC_32PX = "3bf49ef74a98107c81925a45d84d62b2635af47e88ec3b07dce34298be1bd732"


@pytest.fixture(scope="module")
def pbc_folder(shared_data, tmp_path_factory):
    """8 real blood-cell JPEGs (96x96 RGB) of each of the 8 PBC classes."""
    return cf.extract_pbc(shared_data, tmp_path_factory.mktemp("pbc"), per_class=8)


@pytest.fixture(scope="module")
def mode_folder(tmp_path_factory):
    return cf.write_mode_folder(tmp_path_factory.mktemp("modes"))


def test_default_grey_cache_is_byte_identical_to_before(mode_folder, tmp_path, monkeypatch):
    from pipelines.records import prepare

    cf.fixed_salt(monkeypatch)
    cache = prepare("folder", mode_folder, tmp_path / "cache", image_size=8, progress=False)
    assert cf.cache_digest(cache) == GOLDEN_MODES_8PX


def test_default_grey_pbc_cache_is_byte_identical_to_before(pbc_folder, tmp_path, monkeypatch):
    from pipelines.records import prepare

    cf.fixed_salt(monkeypatch)
    cache = prepare("folder", pbc_folder, tmp_path / "cache", image_size=32, progress=False)
    assert cf.cache_digest(cache) == GOLDEN_PBC_32PX


def _planes(cache, split="train"):
    """Every cached image of ``split`` as uint8 (N, H, W, C)."""
    import numpy as np

    from pipelines.records import make_dataset

    batches = [images.numpy() for images, _ in make_dataset(cache, split, batch_size=64)]
    return np.round(np.concatenate(batches) * 255).astype(np.uint8)


def test_explicit_channels_1_is_the_default_cache_with_the_default_key(mode_folder, tmp_path,
                                                                        monkeypatch):
    from pipelines.records import prepare, read_info

    cf.fixed_salt(monkeypatch)
    cache = prepare("folder", mode_folder, tmp_path / "cache", image_size=8, progress=False,
                    options={"channels": "1"})
    assert cf.cache_digest(cache) == GOLDEN_MODES_8PX
    assert read_info(cache)["settings"]["options"] == {}
    # the same folder prepared by default is "already prepared": the key is the same
    assert prepare("folder", mode_folder, cache, image_size=8, progress=False) == cache


def test_pbc_colour_cache_has_three_distinct_planes(pbc_folder, tmp_path):
    import numpy as np

    from pipelines.preprocessing import Preprocessing
    from pipelines.records import prepare, read_info

    cache = prepare("folder", pbc_folder, tmp_path / "cache", image_size=32, progress=False,
                    options={"channels": "3"})
    info = read_info(cache)
    assert info["channels"] == 3 and info["settings"]["options"] == {"channels": "3"}
    assert Preprocessing.load(cache) == Preprocessing(kind="image", size=(32, 32), channels=3)
    images = _planes(cache)
    assert images.shape[1:] == (32, 32, 3)
    r, g, b = (images[..., k].astype(int) for k in range(3))
    # stained smears: the planes differ everywhere, not by a rounding step
    assert np.abs(r - g).mean() > 5 and np.abs(g - b).mean() > 5 and np.abs(r - b).mean() > 5
    # and channels=1 of the same folder is the BT.601 luma of the same pixels (in the same
    # order), up to the rounding of the two caches
    grey = _planes(prepare("folder", pbc_folder, tmp_path / "grey", image_size=32, progress=False))
    assert grey.shape == images.shape[:3] + (1,)
    luma = images.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(luma - grey[..., 0]).max() <= 1.5


EXPECTED_COLOUR = {"grey.png": False, "deep16.png": False, "grey_alpha.png": False,
                   "grey_palette.png": False, "rgb.png": True, "rgba.png": True,
                   "palette.png": True, "cmyk.jpg": True}


@pytest.mark.parametrize("name", sorted(EXPECTED_COLOUR))
def test_colour_is_decided_by_mode_and_palette_from_the_header(name, tmp_path, monkeypatch):
    from PIL import Image, ImageFile

    from pipelines import colour

    path = cf.save_image(cf.mode_images()[name], tmp_path / name)
    with Image.open(path) as image:
        expected_mode = image.mode
    assert expected_mode == {"grey.png": "L", "deep16.png": "I;16", "grey_alpha.png": "LA",
                             "grey_palette.png": "P", "palette.png": "P", "rgb.png": "RGB",
                             "rgba.png": "RGBA", "cmyk.jpg": "CMYK"}[name]

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("auto must read headers only")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    assert colour.file_is_colour(path) is EXPECTED_COLOUR[name]


def _folder(root, names):
    """Two classes each holding the pictures ``names`` of :func:`tests.colour_files.mode_images`."""
    for k, cls in enumerate(("a", "b")):
        images = cf.mode_images(seed=k)
        for name in names:
            cf.save_image(images[name], root / cls / name)
    return root


@pytest.mark.parametrize("names, expected", [
    (["grey.png", "deep16.png", "grey_alpha.png", "grey_palette.png"], 1),
    (["rgb.png", "cmyk.jpg"], 3),
    (["palette.png"], 3),
    (["grey.png", "rgba.png"], 3),  # mixed: any colour picture makes the folder colour
])
def test_auto_on_grey_colour_and_mixed_folders(names, expected, tmp_path):
    from pipelines.datasets import get_adapter

    folder = _folder(tmp_path / "data", names)
    df = get_adapter("folder").read_manifest(folder, channels="auto")
    assert get_adapter("folder").manifest_channels(df) == expected
    assert ("image_channels" in df.columns) == (expected == 3)


def test_a_mixed_folder_repeats_grey_to_three_planes_and_keeps_colour(tmp_path):
    import numpy as np

    from pipelines.preprocessing import read_pixels, to_channels
    from pipelines.records import prepare

    folder = _folder(tmp_path / "data", ["grey.png", "deep16.png", "rgb.png", "rgba.png",
                                         "palette.png", "cmyk.jpg"])
    cache = prepare("folder", folder, tmp_path / "cache", image_size=(21, 17), progress=False,
                    options={"channels": "auto"}, keep_path_ids=True, val_fraction=0,
                    test_fraction=0)
    from pipelines.records import make_dataset

    seen = {}
    for images, _, meta in make_dataset(cache, "train", batch_size=64, with_ids=True):
        for image, ident in zip(images.numpy(), meta["id"].numpy()):
            seen[ident.decode()] = np.round(image * 255).astype(np.uint8)
    assert len(seen) == 12
    for ident, image in seen.items():
        assert image.shape == (21, 17, 3)
        if ident.endswith(("grey", "deep16")):
            assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
        else:
            assert (image[..., 0] != image[..., 2]).any(), ident
        # at its own size, the cached pixels are the decoded file's: RGBA drops alpha, the
        # palette and CMYK become RGB, grey is repeated
        suffix = ".jpg" if ident.endswith("cmyk") else ".png"
        source = to_channels(read_pixels(folder / f"{ident}{suffix}"), 3)
        assert np.array_equal(image, np.floor(source * 255 + 0.5).astype(np.uint8)), ident


def test_rgba_drops_alpha_rather_than_compositing(tmp_path):
    import numpy as np
    from PIL import Image

    from pipelines.datasets.base import read_image

    rgb = np.full((4, 4, 3), (200, 100, 50), np.uint8)
    alpha = np.zeros((4, 4, 1), np.uint8)  # fully transparent
    Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA").save(tmp_path / "clear.png")
    image = read_image(tmp_path / "clear.png", 3)
    assert np.allclose(image[0, 0], np.array([200, 100, 50]) / 255)  # not black


def test_csv_of_fundus_patches_prepares_in_colour(shared_data, tmp_path):
    """RetinaMNIST fundus patches (28x28 RGB) written as PNG files and listed in a CSV."""
    import numpy as np
    from PIL import Image

    from pipelines.datasets import get_adapter
    from pipelines.records import prepare, read_info

    arrays = np.load(shared_data / "medmnist-extra" / "retinamnist.npz")
    lines = ["path,grade"]
    for i in range(16):
        Image.fromarray(arrays["train_images"][i]).save(tmp_path / f"f{i}.png")
        lines.append(f"f{i}.png,{'referable' if arrays['train_labels'][i, 0] >= 2 else 'none'}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    adapter = get_adapter("csv")
    assert adapter.manifest_channels(adapter.read_manifest(tmp_path, label_column="grade")) == 1
    df = adapter.read_manifest(tmp_path, label_column="grade", channels="auto")
    assert adapter.manifest_channels(df) == 3
    cache = prepare("csv", tmp_path, tmp_path / "cache", image_size=28, progress=False,
                    options={"label_column": "grade", "channels": "3"}, val_fraction=0,
                    test_fraction=0)
    assert read_info(cache)["channels"] == 3
    images = _planes(cache)
    assert np.abs(images[..., 0].astype(int) - images[..., 2]).mean() > 10  # red fundus


def test_channels_is_for_pictures_and_takes_1_3_or_auto(tmp_path):
    from pydicom.data import get_testdata_file

    from pipelines.datasets import get_adapter

    (tmp_path / "ct.dcm").write_bytes(open(get_testdata_file("CT_small.dcm"), "rb").read())
    (tmp_path / "labels.csv").write_text("path,label\nct.dcm,a\n")
    with pytest.raises(ValueError, match="channels=3 is for pictures; CT files get one channel per window"):
        get_adapter("csv").read_manifest(tmp_path, label_column="label", channels=3)
    with pytest.raises(ValueError, match="channels='2' is not one of 1, 3 or auto"):
        get_adapter("folder").read_manifest(tmp_path, channels="2")


def _adapters():
    from pipelines.datasets import list_adapters

    return list_adapters()


@pytest.mark.parametrize("name", _adapters())
def test_an_unknown_option_is_one_sentence_listing_the_options(name, tmp_path):
    from pipelines.datasets import get_adapter
    from pipelines.records import prepare

    adapter = get_adapter(name)
    known = adapter.option_names()
    assert known, f"{name}: read_manifest takes keyword options"
    with pytest.raises(ValueError) as err:
        prepare(name, tmp_path, tmp_path / "out", progress=False, options={"bogus": "3"})
    message = str(err.value)
    assert message == f"The {name} dataset has no option 'bogus'; its options are {', '.join(known)}."
    assert not (tmp_path / "out").exists()
    if "channels" not in known:  # the picture option is refused where it means nothing
        with pytest.raises(ValueError, match=f"The {name} dataset has no option 'channels'"):
            adapter.check_options({"channels": "3"})


def test_the_prepare_cli_refuses_an_unknown_option_without_a_traceback(mode_folder, tmp_path,
                                                                        capsys):
    from pipelines.prepare import main

    code = main(["--dataset", "folder", "--data-dir", str(mode_folder), "--out",
                 str(tmp_path / "out"), "--option", "chanels=3", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: The folder dataset has no option 'chanels' (did you mean 'channels'?); "
                   "its options are labels, classes, patient_pattern, channels."]


def test_a_corpus_source_takes_channels_and_refuses_unknown_options(mode_folder, tmp_path):
    import yaml

    from pipelines.corpus import CorpusError, build_corpus
    from pipelines.records import read_info

    def spec(**source):
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump({"sources": [
            {"name": "modes", "dataset": "folder", "data_dir": str(mode_folder), **source}]}))
        return path

    out = build_corpus(spec(channels=3), tmp_path / "c3", image_size=8, progress=False)
    assert read_info(out)["channels"] == 3
    out = build_corpus(spec(options={"channels": "auto"}), tmp_path / "auto", image_size=8,
                       progress=False)
    assert read_info(out)["channels"] == 3
    assert read_info(build_corpus(spec(), tmp_path / "c1", image_size=8, progress=False))["channels"] == 1
    with pytest.raises(CorpusError, match="Source 'modes' in .*: The folder dataset has no option 'bogus'"):
        build_corpus(spec(options={"bogus": 1}), tmp_path / "x", image_size=8, progress=False)
    with pytest.raises(CorpusError, match="channels is given twice"):
        build_corpus(spec(channels=3, options={"channels": 1}), tmp_path / "y", image_size=8,
                     progress=False)
