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
