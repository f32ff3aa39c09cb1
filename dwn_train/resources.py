"""Where the shipped data files live: `conf/` (Hydra configs) and `kernels/` (CUDA sources).

In a checkout (and an editable install) they sit next to the package directory; in a wheel the
build copies them inside the package (see pyproject.toml). This module is the only place that
knows both layouts, so every other module asks here.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _resource_dir(name: str) -> Path:
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"dwn-train's '{name}' directory is missing: looked in {_PACKAGE_DIR / name} and "
        f"{_PACKAGE_DIR.parent / name}; reinstall the package."
    )


def conf_dir() -> Path:
    """The directory that holds `train.yaml`, `eval.yaml` and the config groups."""
    return _resource_dir("conf")


def kernels_dir() -> Path:
    """The directory that holds the CUDA kernel sources (`*.cu`, `*.cuh`)."""
    return _resource_dir("kernels")
