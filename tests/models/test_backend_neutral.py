"""zoo.layers and zoo.models run on any Keras backend: no module there imports TensorFlow."""

from __future__ import annotations

import pytest

from tests.helpers import (
    neutral_modules,
    static_tensorflow_imports,
    subprocess_tensorflow_imports,
)


@pytest.mark.parametrize("module", neutral_modules())
def test_no_tensorflow_import_in_source(module):
    assert static_tensorflow_imports(module) == ()


def test_no_tensorflow_import_on_another_backend():
    """One fresh interpreter imports every zoo.layers / zoo.models module on jax, numpy or torch."""
    report = subprocess_tensorflow_imports()
    if report is None:
        pytest.skip("no Keras backend other than TensorFlow is installed; the source check ran")
    assert report["culprits"] == {}, report


def test_static_check_finds_an_indirect_import(tmp_path):
    """A block importing a helper that imports tensorflow (even inside a function) is caught."""
    layers = tmp_path / "zoo" / "layers"
    layers.mkdir(parents=True)
    (tmp_path / "zoo" / "__init__.py").write_text("import tensorflow  # not followed\n")
    (layers / "__init__.py").write_text("")
    (layers / "block.py").write_text("import keras\nfrom . import helper\n")
    (layers / "helper.py").write_text("def f():\n    import tensorflow as tf\n    return tf\n")
    (layers / "clean.py").write_text("import keras\nfrom keras import ops\n")
    found = static_tensorflow_imports("zoo.layers.block", tmp_path)
    assert found == (
        "zoo/layers/helper.py:2 imports tensorflow (via zoo.layers.block -> zoo.layers.helper)",
    )
    assert static_tensorflow_imports("zoo.layers.clean", tmp_path) == ()
