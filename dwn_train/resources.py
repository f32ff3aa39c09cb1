"""Where the shipped data files live: `conf/` (Hydra configs) and `kernels/` (CUDA sources).

In a checkout (and an editable install) they sit next to the package directory; in a wheel the
build copies them inside the package (see pyproject.toml). This module is the only place that
knows both layouts, so every other module asks here; it also tells the installed `version()`. It
knows the machine's memory too: `check_memory` refuses, in one sentence, a size that could never
fit (before torch tries to allocate it and fails with a traceback, or the system starts swapping).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DWNError

_PACKAGE_DIR = Path(__file__).resolve().parent


def _resource_dir(name: str) -> Path:
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"dwn-train's '{name}' directory is missing: looked in {_PACKAGE_DIR / name} and "
        f"{_PACKAGE_DIR.parent / name}; reinstall the package."
    )


def version() -> str:
    """dwn-train's version as installed, or what a checkout that was never installed is."""
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("dwn-train")
    except PackageNotFoundError:
        return "(not installed; running from a checkout)"


def conf_dir() -> Path:
    """The directory that holds `train.yaml`, `eval.yaml` and the config groups."""
    return _resource_dir("conf")


def kernels_dir() -> Path:
    """The directory that holds the CUDA kernel sources (`*.cu`, `*.cuh`)."""
    return _resource_dir("kernels")


def physical_memory() -> int | None:
    """The machine's RAM in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """A DWNError when `what` needs more than the machine's whole memory (`fix`: the settings to lower)."""
    total = physical_memory()
    if total is not None and nbytes > total:
        raise DWNError(f"{what} needs about {nbytes / 2**30:,.1f} GiB, more than this machine's "
                       f"{total / 2**30:,.1f} GiB of memory; lower {fix}.")
