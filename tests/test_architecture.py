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


# ------------------------------------------------------------------------------------------
# The house's shape (issue: no cycles, small modules, one atomic-write helper, no private
# names across modules, ARCHITECTURE.md names only what exists)

PACKAGES = ("zoo", "pipelines", "benchmarks")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100
MAX_POSITIONAL = 8
# (module or module.function): reason. Keep it short: two modules, five functions at most.
ALLOWED_LARGE: dict[str, str] = {}


def _module_files(root: Path = None) -> dict[str, Path]:
    """Dotted first-party module name -> file, for every package in PACKAGES."""
    root = root or ROOT
    mods = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _resolve_from(module: str, path: Path, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        return node.module
    base = module.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _first_party_from(module: str, path: Path, node: ast.ImportFrom):
    """(target module, alias, target.name) of each name a first-party ``from`` import takes."""
    target = _resolve_from(module, path, node)
    if target and target.split(".")[0] in PACKAGES:
        for alias in node.names:
            yield target, alias, f"{target}.{alias.name}"


def _import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Edges module -> first-party module it imports, anywhere in the file (function-local
    imports included). ``from a.b import c`` is an edge to ``a.b.c`` when that is a module,
    else to ``a.b``. A package's own ``__init__`` run by importing a submodule is not an edge:
    that would make every package one component."""
    graph = {m: set() for m in mods}
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods:
                        graph[module].add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                for target, _alias, full in _first_party_from(module, path, node):
                    graph[module].add(full if full in mods else target)
    return {m: {t for t in targets if t in mods and t != m} for m, targets in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    """No two first-party modules import each other, directly or round a loop, counting
    imports inside functions (a cycle hidden in a function is still a cycle)."""
    assert _cycles(_import_graph(_module_files())) == []


def test_the_cycle_finder_sees_a_hidden_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "zoo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from zoo.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from zoo import a\n")
    (pkg / "c.py").write_text("from . import a\n")
    assert _cycles(_import_graph(_module_files(tmp_path))) == [["zoo.a", "zoo.b"]]


def _sizes(mods: dict[str, Path]) -> list[str]:
    bad = []
    for module, path in mods.items():
        if module.split(".")[0] not in ("zoo", "pipelines"):
            continue
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES and module not in ALLOWED_LARGE:
            bad.append(f"{module}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            name = f"{module}.{node.name}"
            length = node.end_lineno - node.lineno + 1
            positional = node.args.posonlyargs + node.args.args
            count = len(positional) - (1 if positional and positional[0].arg in ("self", "cls") else 0)
            if (length > MAX_FUNCTION_LINES or count > MAX_POSITIONAL) and name not in ALLOWED_LARGE:
                bad.append(f"{name}: {length} lines, {count} positional parameters")
    return bad


def test_modules_and_functions_fit_a_reader():
    """No module in zoo/ or pipelines/ over 500 lines; no function over 100 lines or with more
    than 8 positional parameters (keyword-only options are fine)."""
    assert len(ALLOWED_LARGE) <= 7 and all(reason.strip() for reason in ALLOWED_LARGE.values())
    assert _sizes(_module_files()) == []


def _source_files() -> list[Path]:
    files = [p for package in PACKAGES + ("scripts",) for p in sorted((ROOT / package).rglob("*.py"))]
    return files + [ROOT / "train.py"]


def test_os_replace_lives_in_one_module():
    """Atomic writes go through pipelines.fs; nothing else renames over a file by hand."""
    users = sorted(str(p.relative_to(ROOT)) for p in _source_files() if "os.replace(" in p.read_text())
    assert users == ["pipelines/fs.py"]


def _private_uses(mods: dict[str, Path], files: list[Path], root: Path) -> list[str]:
    """``from first_party import _name`` and ``first_party_module._name`` outside the module
    that defines the name."""
    bad = []
    for path in files:
        rel = path.relative_to(root)
        parts = list(rel.with_suffix("").parts)
        own = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for target, alias, full in _first_party_from(own, path, node):
                    if full in mods:
                        aliases[alias.asname or alias.name] = full
                    elif alias.name.startswith("_") and not alias.name.startswith("__") and target != own:
                        bad.append(f"{rel}:{node.lineno} imports {target}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] != own
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{rel}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return bad


def test_no_private_names_across_modules():
    """What one module shares with another has a public name."""
    assert _private_uses(_module_files(), _source_files(), ROOT) == []


def test_the_private_scan_sees_both_forms(tmp_path):
    pkg = tmp_path / "zoo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def _hidden():\n    pass\n")
    (pkg / "b.py").write_text("from zoo.a import _hidden\nfrom zoo import a\na._hidden()\n")
    mods = _module_files(tmp_path)
    files = sorted(pkg.glob("*.py"))
    assert _private_uses(mods, files, tmp_path) == ["zoo/b.py:1 imports zoo.a._hidden",
                                                   "zoo/b.py:3 uses zoo.a._hidden"]


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _named_in_architecture(text: str) -> list[str]:
    import re

    missing = []
    mods = _module_files()
    for token in sorted(set(re.findall(r"`([^`\s]+)`", text))):
        token = token.rstrip("/").split("(")[0]
        if re.fullmatch(r"(zoo|pipelines|benchmarks|scripts|tests)(/[\w.]+)+", token):
            path = ROOT / token
            if not (path.exists() or path.with_suffix(".py").exists()):
                missing.append(token)
        elif re.fullmatch(r"(zoo|pipelines|benchmarks)(\.\w+)+", token):
            parts = token.split(".")
            for cut in range(len(parts), 0, -1):
                module = ".".join(parts[:cut])
                if module in mods:
                    rest = parts[cut:]
                    if rest and rest[0] not in _top_level_names(mods[module]) and not (
                            mods[module].name == "__init__.py" and f"{module}.{rest[0]}" in mods):
                        missing.append(token)
                    break
            else:
                missing.append(token)
    return missing


def test_architecture_names_only_what_exists():
    """Every module, folder and dotted name that ARCHITECTURE.md puts in backticks exists."""
    assert _named_in_architecture((ROOT / "ARCHITECTURE.md").read_text()) == []


# the "may import (first party)" column of ARCHITECTURE.md for the rooms that must stay small
ROOM_IMPORTS = {
    "zoo.layers": ("zoo.layers",),
    "zoo.models": ("zoo.layers", "zoo.registry", "zoo.recipes", "zoo.labels", "zoo.models", "pipelines.fs"),
    "zoo.registry": ("zoo.recipes",),
    "zoo.recipes": (),
    "pipelines.fs": (),
}


def _room_violations(mods: dict[str, Path]) -> list[str]:
    bad = []
    graph = _import_graph(mods)
    for module, targets in graph.items():
        room = next((r for r in ROOM_IMPORTS if module == r or module.startswith(r + ".")), None)
        if room is None:
            continue
        for target in sorted(targets):
            if not any(target == ok or target.startswith(ok + ".") for ok in ROOM_IMPORTS[room]):
                bad.append(f"{module} imports {target}")
    return bad


def test_small_rooms_import_only_what_architecture_allows():
    assert _room_violations(_module_files()) == []
