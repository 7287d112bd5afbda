"""The adapter interface: registration, lookup, the facts each adapter carries, docs/DATA.md."""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import pandas as pd
import pytest

import pipelines.datasets as datasets
from pipelines.datasets import Adapter, base, get_adapter, list_adapters, register_adapter

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_in_the_package_registers_an_adapter():
    modules = {m.name for m in pkgutil.iter_modules(datasets.__path__)} - {"base"}
    owners = {type(get_adapter(n)).__module__.rsplit(".", 1)[-1] for n in list_adapters()}
    assert owners == modules
    for name in list_adapters():
        adapter = get_adapter(name)
        assert isinstance(adapter, Adapter) and adapter.name == name
        assert adapter.scan_labelled in (None, "max", "topk_mean")
        assert set(adapter.label_map or {}) <= set(adapter.labels)
        assert adapter.channels("brain,bone") == (2 if adapter.ct else 1)


def test_the_facts_that_used_to_live_elsewhere():
    assert [n for n in list_adapters() if get_adapter(n).ct] == ["cq500", "physionet", "rsna", "synthetic"]
    assert {n: get_adapter(n).scan_labelled for n in list_adapters() if get_adapter(n).scan_labelled} == {
        "cq500": "max"
    }
    assert [n for n in list_adapters() if get_adapter(n).default_data_dir] == ["synthetic"]
    assert get_adapter("synthetic").default_data_dir == str(Path("data") / "synthetic-head-ct")
    assert list_adapters("c*") == ["cq500", "csv", "cxr14"]


def test_register_adapter_refuses_a_duplicate_and_a_bad_name():
    with pytest.raises(ValueError, match="'rsna' is already registered .*Rsna.*another name"):

        @register_adapter
        class Again(Adapter):
            name = "rsna"

    with pytest.raises(ValueError, match="needs a lower-case name"):

        @register_adapter
        class Nameless(Adapter):
            pass

    assert type(get_adapter("rsna")).__name__ == "Rsna"


def test_a_new_adapter_needs_only_read_manifest(tmp_path):
    @register_adapter
    class Tiny(Adapter):
        name = "tiny-test"
        labels = ("normal", "stone")
        task = "binary"

        def read_manifest(self, data_dir, **options):
            return pd.DataFrame({"id": ["a"], "path": ["a.png"]})

    try:
        adapter = get_adapter("Tiny-Test")
        assert "tiny-test" in list_adapters()
        df = adapter.read_manifest(tmp_path)
        assert adapter.manifest_labels(df) == ("normal", "stone")
        assert adapter.manifest_task(df) == "binary" and adapter.manifest_channels(df) == 1
        df.attrs.update(labels=["x"], task="multi-label", channels=3)
        assert adapter.manifest_labels(df) == ("x",) and adapter.manifest_channels(df) == 3
        df.attrs["ct"] = True
        assert adapter.manifest_ct(df) and adapter.manifest_channels(df, "brain") == 1
    finally:
        base._ADAPTERS.pop("tiny-test", None)
    with pytest.raises(NotImplementedError, match="must define read_manifest"):
        Adapter().read_manifest(tmp_path)
    with pytest.raises(ValueError, match="needs a data directory"):
        get_adapter("rsna").ensure_data(None)


def _readme_adapters() -> list[str]:
    text = (ROOT / "docs" / "DATA.md").read_text()
    section = text.split("## Data pipelines", 1)[1].split("\n## ", 1)[0]
    table = section.split("| adapter | reads |", 1)[1].split("\n\n", 1)[0]
    names = []
    for line in table.strip().splitlines()[1:]:  # skip the |---| line
        first = line.strip().strip("|").split("|")[0]
        names += re.findall(r"`([^`]+)`", first)
    return names


def test_readme_adapter_table_lists_exactly_the_registered_adapters():
    listed = _readme_adapters()
    assert len(listed) == len(set(listed)), f"docs/DATA.md lists an adapter twice: {listed}"
    missing = sorted(set(list_adapters()) - set(listed))
    extra = sorted(set(listed) - set(list_adapters()))
    assert not missing and not extra, (
        f"docs/DATA.md's adapter table (## Data pipelines) is out of date: add {missing}, "
        f"remove {extra}."
    )
