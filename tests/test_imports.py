"""The layering of dwn_train (pyproject.toml's [tool.importlinter]): entry points -> commands -> run
lifecycle -> model and deployment -> core ops -> base, every module placed, and no import cycle at
any depth. Checked with import-linter on the code as it is, and shown to catch a cycle."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path, package_parent: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("importlinter")
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    env = {"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", script, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True)


def test_the_layers_hold_and_nothing_imports_in_a_circle():
    result = _lint(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_cycle_or_an_import_upwards_breaks_the_contracts(tmp_path):
    """A copy of the package where the run folder imports the trainer (upwards, and a circle)."""
    shutil.copytree(ROOT / "dwn_train", tmp_path / "dwn_train", ignore=shutil.ignore_patterns("__pycache__"))
    folder = tmp_path / "dwn_train" / "run" / "folder.py"
    folder.write_text(folder.read_text() + "\nfrom ..train import train  # noqa: E402\n")
    result = _lint(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "0 kept, 2 broken" in result.stdout, result.stdout
