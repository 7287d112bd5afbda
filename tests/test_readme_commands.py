"""Every shell command the README shows runs as written, at a smoke size.

The commands are read from the README's ```bash blocks, in order, and run one after another in
a scratch copy of the project (links to the code and the configs, and ``../shared/data`` beside
it), so the relative paths the README names (``data/``, ``cache/``, ``runs/``, ``saved_models/``,
``reports/``, ``../shared/data/...``) resolve as they do for a user in a fresh checkout, and a
later command finds what an earlier one wrote (``zoo.evaluate`` reads the main job's export).

What the test changes, and only this:

- ``SMOKE``: flags set to a smoke size for one program, replacing the value the README gives or
  appended when it gives none (fewer epochs and steps, 32 px images, fewer bootstrap rounds).
- The main job's phantom is written small up front (150 patients as by default, one 32 px slice
  each), since ``train.py`` reuses an existing ``data/synthetic-head-ct``. The DICOM that the
  README's ``zoo.explain`` names is patient 0's first slice: its id is the first drawn after the
  150 patient ids, so the default phantom (8 slices each) has the same file.
- ``NOT_RUN``: commands that cannot run here, each with its reason.
- ``SLOW``: commands marked slow, each with the fast test that proves the same capability.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
# program -> {flag: smoke value (None: a bare flag)}
SMOKE = {
    "train.py": {"--image-size": "32", "--epochs": "1", "--steps-per-epoch": "2",
                 "--batch-size": "8", "--bn-calibration-batches": "1", "--quiet": None},
    "zoo.evaluate": {"--bootstrap": "20"},
}
# command prefix -> why it does not run here
NOT_RUN = {
    "pip install": "installs into the environment the tests run in; .ci/run runs it in a fresh venv",
    "python -m pytest": "the test suite itself, of which this test is a part",
    "docker run": "needs Docker and the tensorflow/serving image (tests/export checks the export "
                  "and the server configs it mounts)",
}
# command fragment -> the fast test that proves it
SLOW = {
    "--strategy mirrored": "tests/test_train_cli.py::test_mirrored_two_cpu_devices_trains_and_exports",
}
LINKED = ("train.py", "pyproject.toml", "zoo", "pipelines", "benchmarks", "scripts", "configs")


def readme_commands(text: str) -> list[list[str]]:
    """The commands of the ```bash blocks: continuation lines joined, comments dropped, and
    ``a && b`` split into two commands."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command: list[str] = []
            for word in shlex.split(line, comments=True):
                if word == "&&":
                    commands.append(command)
                    command = []
                else:
                    command.append(word)
            if command:
                commands.append(command)
    return commands


def program(argv: list[str]) -> str:
    """``train.py`` for ``python train.py ...``, the module for ``python -m module ...``."""
    if argv[0] != "python":
        return argv[0]
    return argv[2] if argv[1] == "-m" else argv[1]


def smoke(argv: list[str]) -> list[str]:
    """``argv`` with the flags of ``SMOKE`` set to their smoke values, and this Python."""
    out = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    for flag, value in SMOKE.get(program(argv), {}).items():
        if flag in out:
            if value is not None:
                out[out.index(flag) + 1] = value
        else:
            out += [flag] if value is None else [flag, value]
    return out


def _reason(text: str) -> str | None:
    return next((why for prefix, why in NOT_RUN.items() if text.startswith(prefix)), None)


def _cases():
    cases = []
    for argv in readme_commands(README.read_text()):
        text = shlex.join(argv)
        marks = [pytest.mark.slow for fragment in SLOW if fragment in text]
        cases.append(pytest.param(argv, id=text[:70], marks=marks))
    return cases


def test_the_commands_are_found_and_every_one_is_accounted_for():
    commands = [shlex.join(c) for c in readme_commands(README.read_text())]
    assert 'pip install -e ".[dev]"' in commands[0].replace("'", '"') and commands[1] == "python train.py"
    assert "python -m pytest -q -m 'not slow'" in commands
    skipped = [c for c in commands if _reason(c)]
    assert len(skipped) == len(NOT_RUN), f"each NOT_RUN entry names one README command: {skipped}"
    for fragment in SLOW:
        assert any(fragment in c for c in commands), f"SLOW names {fragment!r}, no README command"
    # the smoke flags replace values the README gives and add the ones it does not
    argv = smoke(["python", "train.py", "--image-size", "96", "--epochs", "15"])
    assert argv[1:5] == ["train.py", "--image-size", "32", "--epochs"] and argv[5] == "1"
    assert argv.count("--image-size") == 1 and "--quiet" in argv


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, shared_data):
    """A scratch copy of the project (links), with ``../shared/data`` beside it and the main
    job's phantom written small."""
    from pipelines.datasets.synthetic import HEAD_CT_DEFAULTS, ensure_head_ct

    base = tmp_path_factory.mktemp("readme")
    (base / "shared").mkdir()
    (base / "shared" / "data").symlink_to(shared_data, target_is_directory=True)
    root = base / "medzoo"
    root.mkdir()
    for name in LINKED:
        (root / name).symlink_to(ROOT / name)
    ensure_head_ct(root / "data" / "synthetic-head-ct",
                   patients=HEAD_CT_DEFAULTS["patients"], slices=1, size=32)
    return root


@pytest.mark.parametrize("argv", _cases())
def test_readme_command_runs(argv, checkout):
    text = shlex.join(argv)
    why = _reason(text)
    if why:
        pytest.skip(f"not runnable here: {why}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("TF_CONFIG", None)
    proc = subprocess.run(smoke(argv), cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (
        f"README command failed: {text}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
