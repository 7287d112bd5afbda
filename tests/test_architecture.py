"""The rooms' import rules (ARCHITECTURE.md): pipelines never imports zoo; the paper blocks and
models never import TensorFlow; the decode side of the pipelines runs without TensorFlow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in _imports(path):
            if module.split(".")[0] in forbidden:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize(
    "folder, forbidden",
    [
        ("pipelines", ("zoo",)),
        ("zoo/layers", ("tensorflow",)),
        ("zoo/models", ("tensorflow",)),
    ],
)
def test_import_direction(folder, forbidden):
    assert _violations(folder, forbidden) == []


def test_the_rule_checker_sees_an_import(tmp_path, monkeypatch):
    """The checker itself is not vacuous: a planted import is reported."""
    room = tmp_path / "pipelines"
    room.mkdir()
    (room / "bad.py").write_text("def f():\n    from zoo import registry\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _violations("pipelines", ("zoo",)) == ["pipelines/bad.py:2 imports zoo"]


def test_decoding_needs_no_tensorflow():
    """prepare's worker processes decode with pydicom / Pillow / NumPy only (fast spawn)."""
    code = (
        "import sys\n"
        "import pipelines.preprocessing, pipelines.dicom, pipelines.transforms\n"
        "import pipelines.datasets, pipelines.cache.decode\n"
        "assert 'tensorflow' not in sys.modules, sorted(m for m in sys.modules if 'tensorflow' in m)[:3]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
