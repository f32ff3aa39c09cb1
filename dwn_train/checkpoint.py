"""Checkpoints: plain dicts of tensors and containers, written atomically, read with weights_only.

Payload keys: format, version, model (state_dict), encoder (state_dict: the thresholds),
optimizer, scheduler, rng (torch CPU and CUDA states), epoch, step, best_metric, monitor,
config (the resolved config as plain data), data (num_classes, feature_shape, in_features).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import DWNError

FORMAT = "dwn-train-checkpoint"
VERSION = 1


def save_checkpoint(payload: dict, path: Path) -> None:
    """Write `payload` to `path` via a temporary file in the same folder, fsync'd and renamed,
    so a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a dwn-train checkpoint safely (no arbitrary unpickling); DWNError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DWNError(f"checkpoint {str(path)!r} does not exist or is not a file.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DWNError(f"checkpoint {str(path)!r} holds objects that would need unpickling arbitrary code; "
                       "refusing to load it (dwn-train checkpoints hold only tensors and plain data).") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DWNError(f"checkpoint {str(path)!r} is truncated or not a torch file ({type(exc).__name__}).") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DWNError(f"checkpoint {str(path)!r} is not a dwn-train checkpoint.")
    if payload.get("version", 0) > VERSION:
        raise DWNError(f"checkpoint {str(path)!r} has format version {payload['version']}; this dwn-train reads "
                       f"up to {VERSION}: upgrade dwn-train.")
    return payload


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
