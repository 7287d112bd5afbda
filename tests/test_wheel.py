"""The built wheel ships ``zoo/weights/`` and ``weights="medical"`` loads from an installed
medzoo, away from the repository, offline.

The wheel is built (no network) from a copy of the repository. Until the real ichnet backbone
lands in ``zoo/weights/``, the copy gets a generated one (``tests/medical_files.py``); once it
is there, the real files are what the wheel carries and what this test loads. The wheel is
unzipped into a fresh venv whose only other entry is the current environment's site-packages
as a plain path (a ``.pth`` line: the ``.pth`` files inside it, the editable medzoo's finder
among them, are not run), and a subprocess there, outside the repository and without
PYTHONPATH, imports zoo and builds ichnet with ``weights="medical"``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT
from tests.medical_files import write_shipped

# top-level folders of a checkout that are data, outputs or environments, not the package
NOT_COPIED = {".git", "runs", "data", "corpora", "saved_models", ".ci-venv", ".venv", "cache",
              "build", "dist", ".pytest_cache", ".ruff_cache"}

CHECK = r"""
import json, sys
import numpy as np
import zoo
from zoo.models import medical
from zoo.models.backbone import backbone_layers
from zoo.models.weightfile import open_h5

repo, copy = sys.argv[1], sys.argv[2]
assert "site-packages" in zoo.__file__ and repo not in zoo.__file__ and copy not in zoo.__file__, zoo.__file__
assert medical.weights_dir() == medical.WEIGHTS_DIR and "site-packages" in str(medical.WEIGHTS_DIR)
model = zoo.get_model("ichnet", weights="medical", num_classes=2, input_shape=(128, 128, 1))
path, card = medical.resolve("ichnet", 128, channels=1)
layer = [l for l in backbone_layers(model) if l.get_weights()][-1]  # not the adapted first conv
with open_h5(path) as f:
    stored = [np.asarray(f["layers"][layer.name][str(i)]) for i in range(len(layer.get_weights()))]
for got, want in zip(layer.get_weights(), stored):
    np.testing.assert_allclose(got, want, rtol=1e-6)
print(json.dumps({"zoo": zoo.__file__, "file": path.name, "sha256": card["sha256"],
                  "listed": zoo.model_info("ichnet", count_params=False)["weights"]}))
"""


def _copy_repo(dest: Path) -> Path:
    def ignore(folder, names):
        top = Path(folder).resolve() == ROOT.resolve()
        return [n for n in names if (top and n in NOT_COPIED) or n == "__pycache__"
                or n.endswith(".egg-info")]

    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages")) + sorted(venv.glob("Lib/site-packages"))
    assert found, f"no site-packages in {venv}"
    return found[0]


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def test_the_wheel_ships_the_medical_weights_and_loads_them_outside_the_repo(tmp_path):
    import keras

    src = _copy_repo(tmp_path / "src")
    weights = src / "zoo" / "weights"
    real = sorted(weights.glob("ichnet-medical-*.json"))
    if not real:  # the real ichnet backbone has not landed yet: ship a generated one
        write_shipped(weights, "ichnet", size=64, channels=1)
    expected = sorted(p.name for p in weights.iterdir()
                      if p.name.endswith((".weights.h5", ".json")) or p.name == "README.md")

    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                            "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("medzoo-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = sorted(n.split("/", 2)[2] for n in zf.namelist() if n.startswith("zoo/weights/"))
    assert shipped == expected  # every weights file and card, the README, no __init__.py

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    site = _site_packages(venv)
    # third-party packages of this environment as a plain path: its .pth files are not run,
    # so the editable medzoo's finder there stays off
    (site / "deps.pth").write_text(str(Path(keras.__file__).resolve().parent.parent) + "\n")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)

    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "MEDZOO_WEIGHTS_DIR", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONNOUSERSITE="1")
    proc = subprocess.run([str(_python(venv)), "-c", CHECK, str(ROOT.resolve()), str(src)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert str(site) in result["zoo"]
    assert result["file"].startswith("ichnet-medical-") and result["listed"]
    assert result["sha256"] in [w["sha256"] for w in result["listed"]]
    if real:  # the real card travelled unchanged
        assert any(json.loads(p.read_text())["sha256"] == result["sha256"] for p in real)


def test_the_weights_folder_is_package_data_without_an_init():
    weights = ROOT / "zoo" / "weights"
    assert (weights / "README.md").is_file() and not (weights / "__init__.py").exists()
    assert '"weights/*.weights.h5", "weights/*.json"' in (ROOT / "pyproject.toml").read_text()


def test_every_shipped_backbone_fits_the_budget_and_matches_its_card():
    """Each file in zoo/weights is under 2 MB (the budget per compact model), is the bytes its
    card's sha256 names, and stores the dtype its card says (float16 only where float32 would
    not fit)."""
    import h5py
    import numpy as np

    from benchmarks.weights import MAX_BYTES
    from zoo.models.medical import sha256_of

    cards = sorted((ROOT / "zoo" / "weights").glob("*.json"))
    for path in cards:
        card = json.loads(path.read_text())
        h5 = path.with_name(card["file"])
        assert h5.stat().st_size <= MAX_BYTES, h5.name
        assert sha256_of(h5) == card["sha256"], h5.name
        with h5py.File(h5, "r") as f:
            kinds = {f["layers"][n][i].dtype for n in f["layers"] for i in f["layers"][n]}
        assert kinds == {np.dtype(card.get("stored_dtype", "float32"))}, h5.name
