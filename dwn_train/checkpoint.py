"""Checkpoints: plain dicts of tensors and containers, written atomically, read with weights_only.

Payload keys (built by `make_payload`): format, version, model (state_dict), encoder (state_dict:
the thresholds), optimizer, scheduler, rng (torch CPU and CUDA states), epoch, step, best_metric,
monitor, config (the resolved config as plain data), data (num_classes, feature_shape,
in_features, class_names, and the fingerprint of the data: dwn_train/prepare.py `fingerprint`).

`restore(path)` is the one way back from a file to (config, encoder, model): dwn-eval, dwn-export
and the benchmarks use it. Resuming a run (dwn_train/run/resume.py) reads the same way
(load_checkpoint, restore_encoder, load_state) into the objects the trainer built.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .data import IMAGE_KINDS, LOADERS
from .errors import DWNError, RunError, is_int, os_reason

FORMAT = "dwn-train-checkpoint"
VERSION = 1


def make_payload(*, model, encoder, optimizer, scheduler, epoch: int, step: int, best_metric, monitor: str,
                 config: dict, data: dict, resumable: bool = True) -> dict:
    """The checkpoint of a training run at the end of `epoch` (the keys in the module docstring).
    Not `resumable`: without the optimizer, scheduler and rng state, which only a resume reads
    (best.pt beside a last.pt: about a third of the size with Adam)."""
    payload = {"model": model.state_dict(), "encoder": encoder.state_dict(), "epoch": epoch, "step": step,
               "best_metric": best_metric, "monitor": monitor, "config": config, "data": data}
    if resumable:
        payload.update(optimizer=optimizer.state_dict(), rng=rng_state(),
                       scheduler=scheduler.state_dict() if scheduler is not None else None)
    return payload


def save_checkpoint(payload: dict, path: Path) -> None:
    """Write `payload` to `path` via a temporary file in the same folder, fsync'd and renamed,
    so a crash mid-write leaves the previous file intact. A write the system refuses (disk full,
    no permission) raises a RunError naming the path and the reason."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a full disk as a RuntimeError
        kept = f"the previous {path.name} is kept" if path.is_file() else "no earlier checkpoint existed"
        reason = os_reason(exc)
        if isinstance(exc, RuntimeError) and "unexpected pos" in reason:  # what torch's zip writer says then
            reason += "; the disk is most likely full"
        raise RunError(f"could not write the checkpoint {path} ({reason}); {kept}.") from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


_TEMP_SUFFIX = ".tmp"


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a killed process left in `folder`
    (only safe while no other process writes there: the run folder's lock ensures it)."""
    stale = sorted(Path(folder).glob(f".*.pt.*{_TEMP_SUFFIX}")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a dwn-train checkpoint safely (no arbitrary unpickling); DWNError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DWNError(f"checkpoint {str(path)!r} does not exist or is not a file.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):  # a real pickle that names classes or functions
            raise DWNError(f"checkpoint {str(path)!r} holds objects that would need unpickling arbitrary code; "
                           "refusing to load it (dwn-train checkpoints hold only tensors and plain data).") from exc
        raise DWNError(f"checkpoint {str(path)!r} is not a torch checkpoint file (its bytes are not a file that "
                       "torch.save wrote).") from exc
    except MemoryError:
        raise
    except Exception as exc:  # any other bytes: torch's unpickler fails in many ways (KeyError on a text file)
        raise DWNError(f"checkpoint {str(path)!r} is truncated or not a torch file ({type(exc).__name__}).") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DWNError(f"checkpoint {str(path)!r} is not a dwn-train checkpoint.")
    version = payload.get("version", 0)
    if not is_int(version):
        raise DWNError(f"checkpoint {str(path)!r} has an unreadable format version {version!r}; it is damaged.")
    if version > VERSION:
        raise DWNError(f"checkpoint {str(path)!r} has format version {version}; this dwn-train reads "
                       f"up to {VERSION}: upgrade dwn-train.")
    damage = _damage(payload)
    if damage:
        raise DWNError(f"checkpoint {str(path)!r} is damaged or incomplete: {damage}.")
    kind = payload["config"]["dataset"].get("kind")
    if kind is not None and (not isinstance(kind, str) or kind not in LOADERS):  # every reader looks its loader up
        raise DWNError(f"checkpoint {str(path)!r} was trained on dataset.kind={kind!r}, which this dwn-train does not "
                       f"know (it knows {', '.join(sorted(LOADERS))}): the checkpoint is damaged or from a newer "
                       "dwn-train.")
    return payload


# what every reader of a payload relies on: key -> (what it must be, its test)
_SHAPE = {
    "model": ("a state dict", lambda v: isinstance(v, dict)),
    "encoder": ("a state dict", lambda v: isinstance(v, dict)),
    "config": ("the training config", lambda v: isinstance(v, dict) and all(
        isinstance(v.get(group), dict) for group in ("dataset", "encoding", "model", "trainer"))),
    "data": ("the data description", lambda v: isinstance(v, dict) and is_int(v.get("in_features"))
             and is_int(v.get("num_classes")) and isinstance(v.get("feature_shape"), (list, tuple))),
    "epoch": ("an epoch count", lambda v: is_int(v) and v >= 0),
    "step": ("a step count", lambda v: is_int(v) and v >= 0),
}


def _damage(payload: dict) -> str | None:
    """What is missing or malformed in a payload (the first such key), or None."""
    for key, (what, ok) in _SHAPE.items():
        if key not in payload:
            return f"no {key!r} entry ({what})"
        if not ok(payload[key]):
            return f"its {key!r} entry is not {what}"
    return None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Restored:
    """A trained network rebuilt from a checkpoint: `config` is the stored training config (over
    today's defaults, see config.stored_config), `encoder` the fitted thermometer, `model` the
    network in eval mode on the CPU, `data` the checkpoint's description of its data."""
    path: Path
    payload: dict
    config: object
    encoder: nn.Module
    model: nn.Module
    data: dict


def restore(path, dataset: dict | None = None) -> Restored:
    """Read a checkpoint and rebuild its encoder and model from its own stored config; `dataset`
    ({key: value}, e.g. from data_overrides) replaces stored dataset keys (the data moved)."""
    from .config import stored_config
    from .model import build_model, check_encoding, check_model

    payload = load_checkpoint(path)
    where = f"checkpoint {str(path)!r}"
    data = payload["data"]
    try:  # the stored config is today's schema over what was saved; a value no build accepts is damage
        config = stored_config(payload["config"])
    except MemoryError:
        raise
    except Exception as exc:  # OmegaConf's validation of what was stored
        raise _damaged(where, exc) from None
    _check_data_overrides(dataset or {}, config.dataset.kind, where)
    try:
        for key, value in (dataset or {}).items():
            config.dataset[key] = value
        check_encoding(config.encoding)
        check_model(config.model)
        model = build_model(config.model, int(data["in_features"]), int(data["num_classes"]))
    except DWNError as exc:
        raise DWNError(f"{where}'s stored config does not build a model: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:  # a missing or mistyped entry
        raise _damaged(where, exc) from None
    encoder = restore_encoder(config.encoding, payload, f"{where}'s encoder")  # (check_encoding passed: it builds)
    load_state(model, payload["model"], where)
    return Restored(Path(path), payload, config, encoder, model.eval(), data)


def restore_encoder(encoding_cfg, payload: dict, what: str):
    """The fitted thermometer of a payload, built as `encoding_cfg` says (a resume: today's encoding
    group, checked equal to the trained one); `what` names it in a mismatch."""
    from .model import build_encoder

    encoder = build_encoder(encoding_cfg)
    load_state(encoder, payload["encoder"], what)
    return encoder


def _damaged(where: str, exc: Exception) -> DWNError:
    return DWNError(f"{where}'s stored config is damaged ({type(exc).__name__}: {os_reason(exc)}).")


# which data sets each dwn-eval/dwn-export `dataset.*` key moves (config.DataOverrides)
_OVERRIDE_KINDS = {"root": IMAGE_KINDS, "path": ("csv",), "test_path": ("csv",),
                   "data_home": ("jsc", "openml")}


def _check_data_overrides(overrides: dict, kind: str, where: str) -> None:
    """A `dataset.*` key that does not apply to the checkpoint's data set is a mistake, not a no-op."""
    for key, value in overrides.items():
        kinds = _OVERRIDE_KINDS.get(key)
        if kinds is not None and kind not in kinds:
            raise DWNError(f"dataset.{key}={value} does not apply: {where} was trained on dataset={kind} "
                           f"(dataset.{key} moves {', '.join(kinds)} data); drop it. A checkpoint is scored on "
                           "the data set it was trained on.")


def data_overrides(cfg) -> dict:
    """The dataset keys that dwn-eval's or dwn-export's `dataset.*` (and the older `data_root`)
    override."""
    overrides = {key: value for key, value in cfg.dataset.items() if value is not None}
    if cfg.data_root and "root" not in overrides:
        overrides["root"] = cfg.data_root
    return overrides


def load_state(module: nn.Module, state, what: str) -> None:
    """module.load_state_dict(state), with a mismatch reported as one sentence."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
        first = lines[0] if not lines[0].endswith(":") or len(lines) == 1 else f"{lines[0]} {lines[1]}"  # the detail
        raise DWNError(f"{what} does not fit the model its config describes (different layers or sizes?): "
                       f"{first}") from exc
