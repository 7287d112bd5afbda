"""Shared test helpers: the one check every paper block goes through."""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# packages whose modules must run on any Keras backend: keras.ops / keras.layers only
BACKEND_NEUTRAL = ("zoo.layers", "zoo.models")
FORBIDDEN = ("tensorflow", "tf_keras")


def check_layer(layer_cls, kwargs: dict, input_shape: tuple, tmp_path, expected_output_shape=None):
    """Config round trip, symbolic call, eager call (finite), one fit step, .keras save/load,
    mixed precision (:func:`check_mixed_precision`) and no TensorFlow import in the layer's module
    (:func:`check_backend_neutral`).

    ``input_shape`` excludes the batch. Returns the built model for further checks.
    """
    layer = layer_cls(**kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        got = config[key]
        if isinstance(value, (list, tuple)):
            assert tuple(got) == tuple(value), (key, got, value)
        else:
            assert got == value, (key, got, value)
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config

    # symbolic call
    inp = keras.Input(shape=input_shape, name="image")
    out = layer(inp)
    if expected_output_shape is not None:
        assert tuple(out.shape[1:]) == tuple(expected_output_shape), out.shape

    # eager call, finite outputs
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *input_shape)).astype("float32")
    eager = keras.ops.convert_to_numpy(layer_cls.from_config(config)(x))
    assert np.all(np.isfinite(eager))
    assert eager.shape[1:] == tuple(out.shape[1:])

    # one fit step inside a model
    pool = {3: keras.layers.GlobalAveragePooling1D, 4: keras.layers.GlobalAveragePooling2D}
    y = pool[len(out.shape)]()(out) if len(out.shape) in pool else out
    y = keras.layers.Dense(1)(y)
    model = keras.Model(inp, y)
    model.compile(optimizer="adam", loss="mse")
    before = [w.copy() for w in model.get_weights()]
    hist = model.fit(x, np.ones((2, 1), "float32"), epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    after = model.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after)), "fit changed no weight"

    # .keras save and load with equal outputs
    path = os.path.join(str(tmp_path), f"{layer_cls.__name__}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), reloaded.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )

    check_mixed_precision(layer_cls, kwargs, x)
    check_backend_neutral(layer_cls.__module__)
    return model


def check_mixed_precision(layer_cls, kwargs: dict, x, policy: str = "mixed_bfloat16"):
    """Built with ``dtype=policy`` (the global policy untouched), the layer computes and returns
    the policy's compute dtype, every sublayer carries the same policy, and every variable is
    kept in the policy's variable dtype (keras-hub's precision test)."""
    assert keras.config.dtype_policy().name == "float32", "the global policy must stay float32"
    layer = layer_cls(**kwargs, dtype=policy)
    expected = keras.dtype_policies.get(policy)
    out = layer(x)
    got = keras.backend.standardize_dtype(out.dtype)
    assert got == expected.compute_dtype, f"{layer_cls.__name__} returned {got} under {policy}"
    for sub in layer._flatten_layers(include_self=False):
        assert sub.dtype_policy.name == policy, (
            f"{layer_cls.__name__}: sublayer {sub.name!r} has policy {sub.dtype_policy.name!r}, "
            f"not {policy!r}; pass dtype=self.dtype_policy when creating it"
        )
    for variable in layer.weights:
        vdtype = keras.backend.standardize_dtype(variable.dtype)
        assert vdtype == expected.variable_dtype, (
            f"{layer_cls.__name__}: variable {variable.path} is {vdtype} under {policy}"
        )


def _module_file(name: str, root: Path) -> Path | None:
    """The source file of a first-party module ``name`` (``zoo.x.y``) under ``root``, or None."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``path``, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


@functools.cache
def static_tensorflow_imports(module: str, root: Path = ROOT) -> tuple[str, ...]:
    """Imports of TensorFlow reachable from ``module`` through first-party modules, as
    ``"zoo/x.py:12 imports tensorflow (via zoo.a -> zoo.x)"``. Reads source only (fast).

    ``zoo/__init__.py`` is not followed (importing ``zoo`` may pull in training code): the
    check is about the modules the layer or model code itself imports."""
    seen, found, queue = set(), [], [(module, (module,))]
    while queue:
        name, chain = queue.pop()
        if name in seen or name == "zoo":
            continue
        seen.add(name)
        path = _module_file(name, root)
        if path is None:
            continue
        for imported, line in _imports(path, name):
            top = imported.split(".")[0]
            if top in FORBIDDEN:
                where = f"{path.relative_to(root)}:{line}"
                found.append(f"{where} imports {imported} (via {' -> '.join(chain)})")
            elif top in ("zoo", "pipelines"):
                queue.append((imported, (*chain, imported)))
    return tuple(sorted(set(found)))


def neutral_modules() -> list[str]:
    """Every module of the ``BACKEND_NEUTRAL`` packages, packages first."""
    names = []
    for package in BACKEND_NEUTRAL:
        folder = ROOT.joinpath(*package.split("."))
        names.append(package)
        names += [
            f"{package}.{p.stem}" for p in sorted(folder.glob("*.py")) if p.stem != "__init__"
        ]
    return names


_PROBE = """
import importlib, json, sys, types
root, names = sys.argv[1], sys.argv[2:]
zoo = types.ModuleType("zoo")  # a bare package: zoo/__init__.py (registry of everything) not run
zoo.__path__ = [root + "/zoo"]
sys.modules["zoo"] = zoo
sys.path.insert(0, root)
import keras
report = {"backend": keras.backend.backend(), "culprits": {}}
report["keras_imports_tensorflow"] = "tensorflow" in sys.modules
if not report["keras_imports_tensorflow"]:
    for name in names:
        importlib.import_module(name)
        if "tensorflow" in sys.modules:
            report["culprits"][name] = "imports tensorflow"
            break
print(json.dumps(report))
"""


def _other_backend() -> str | None:
    """A Keras backend other than TensorFlow that can start here, or None."""
    # keras' numpy backend imports jax.numpy for a few ops, so it needs jax installed too
    needs = {"numpy": "jax", "jax": "jax", "torch": "torch"}
    for backend, package in needs.items():
        if importlib.util.find_spec(package) is not None:
            return backend
    return None


@functools.cache
def subprocess_tensorflow_imports() -> dict | None:
    """One fresh interpreter on a non-TensorFlow backend imports every module of
    ``BACKEND_NEUTRAL``; returns ``{"backend": ..., "culprits": {module: why}}``, or None when
    no other backend is installed or Keras itself imports TensorFlow there (then only the static
    check can tell)."""
    backend = _other_backend()
    if backend is None:
        return None
    env = {**os.environ, "KERAS_BACKEND": backend}
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, str(ROOT), *neutral_modules()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, (
        f"importing zoo.layers / zoo.models on {backend}: {run.stderr[-2000:]}"
    )
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend, report
    return None if report["keras_imports_tensorflow"] else report


def check_backend_neutral(module: str):
    """``module`` (and the first-party modules it imports) never imports TensorFlow: a static
    check always, and one shared subprocess on another Keras backend when one is installed."""
    static = static_tensorflow_imports(module)
    assert not static, f"{module} must run on any Keras backend, but: {'; '.join(static)}"
    report = subprocess_tensorflow_imports()
    if report is not None:
        assert not report["culprits"], (
            f"on KERAS_BACKEND={report['backend']}, importing {sorted(report['culprits'])} "
            "imported tensorflow"
        )


def tiny_two_label_source(seed: int = 0, labels=("left", "top")):
    """A multi-label ArraySource of random 8x8 images: 16 training, 8 validation examples
    (for tests of the loop itself, with the scores scripted or ignored)."""
    from zoo.training.data import ArraySource

    rng = np.random.default_rng(seed)

    def split(n):
        return (rng.uniform(0, 1, size=(n, 8, 8, 1)).astype("float32"),
                rng.integers(0, 2, size=(n, 2)).astype("float32"))

    return ArraySource({"train": split(16), "val": split(8)}, labels=labels, task="multi-label")
