"""The wheel carries conf/ and kernels/, and the installed package finds them from anywhere."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dwn_train import resources

ROOT = Path(__file__).resolve().parent.parent


def _files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_resources_resolve_in_the_checkout():
    assert resources.conf_dir() == ROOT / "conf" and resources.kernels_dir() == ROOT / "kernels"
    assert _files(ROOT / "conf") and _files(ROOT / "kernels")


@pytest.mark.slow
def test_wheel_ships_conf_and_kernels_and_resolves_them(tmp_path):
    pytest.importorskip("hatchling")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True)
    wheel = next(tmp_path.glob("dwn_train-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    for folder in ("conf", "kernels"):
        shipped = {n[len(f"dwn_train/{folder}/"):] for n in names if n.startswith(f"dwn_train/{folder}/")}
        assert shipped == _files(ROOT / folder), folder
    # import the unpacked wheel from an unrelated directory: resources must point inside it
    code = "from dwn_train import resources as r; print(r.conf_dir()); print(r.kernels_dir())"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(tmp_path / "site" / "dwn_train" / "conf"), str(tmp_path / "site" / "dwn_train" / "kernels")]
