"""A run folder and every path in it, written once.

    .hydra/                  Hydra's record of the config (config.yaml, overrides.yaml, hydra.yaml)
    <job>.log                the job's log (train.log, eval.log, export.log)
    metrics.jsonl/.csv       one row per epoch (dwn_train/metrics.py)
    curves.png               loss and accuracy per epoch (trainer.plot)
    tensorboard/             TensorBoard events (logger=tensorboard)
    checkpoints/last.pt      the end of the latest epoch (what trainer.resume=auto continues)
    checkpoints/best.pt      the best epoch by trainer.checkpoint.monitor
    .lock                    held by the live run (run/lock.py), holding its pid; removed when it ends
    failed.json              a sweep job that failed: its exit code and error (dwn_train/report.py reads it)
    .sweep_id                the id of the sweep the job belongs to (run/sweep.py)

A folder *holds a run* when it has a checkpoint (last.pt or best.pt: the names dwn-train writes and
`clear` removes) or a metrics row: that is what a fresh run would replace, and what a sweep into
the folder would meet (`holds_run`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import is_int


@dataclass(frozen=True)
class Kept:
    """RunFolder.keep(): files by path in the folder, and the length of each log."""
    files: dict
    logs: dict

    def to_json(self) -> str:
        return json.dumps({"files": {k: v.decode("latin-1") for k, v in self.files.items()}, "logs": self.logs})

    @classmethod
    def from_json(cls, text: str) -> "Kept":
        found = json.loads(text)
        return cls({k: v.encode("latin-1") for k, v in found["files"].items()}, dict(found["logs"]))


# how a refusal says to choose another folder
ANOTHER_FOLDER = "hydra.run.dir=DIR; hydra.sweep.dir=DIR for a sweep"


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.checkpoints / "last.pt")
    best = property(lambda self: self.checkpoints / "best.pt")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    metrics_csv = property(lambda self: self.path / "metrics.csv")
    curves = property(lambda self: self.path / "curves.png")
    tensorboard = property(lambda self: self.path / "tensorboard")
    lock = property(lambda self: self.path / ".lock")
    hydra = property(lambda self: self.path / ".hydra")
    failed = property(lambda self: self.path / "failed.json")
    sweep_id = property(lambda self: self.path / ".sweep_id")

    def log(self, job: str) -> Path:
        """The job's log file (Hydra's file handler writes it; job: hydra.job.name)."""
        return self.path / f"{job}.log"

    def overrides(self) -> list[str]:
        """Hydra's record of the command-line overrides the folder's job ran with (.hydra/overrides.yaml,
        a YAML list of strings); none when there is no such file or it is not such a list."""
        import yaml

        path = self.hydra / "overrides.yaml"
        try:
            found = yaml.safe_load(path.read_bytes()) if path.is_file() else []
        except (OSError, yaml.YAMLError):
            return []
        return [str(o) for o in found] if isinstance(found, list) else []

    def keep(self) -> "Kept":
        """What a command writes into the folder before it can refuse to touch the run there (or
        find it finished), as it is now: Hydra's record (.hydra/*.yaml), the sweep id, failed.json,
        the length of each log. `put_back` restores it."""
        files = {f".hydra/{p.name}": p.read_bytes() for p in self.hydra.glob("*.yaml")} if self.hydra.is_dir() else {}
        for path in (self.sweep_id, self.failed):
            if path.is_file():
                files[path.name] = path.read_bytes()
        return Kept(files, {p.name: p.stat().st_size for p in self.path.glob("*.log")})

    def put_back(self, kept: "Kept", whole: bool = False) -> None:
        """Hydra's record as `kept` says (the run met was left as it was); whole: also the sweep id,
        failed.json and the logs (lines written after `keep` removed), and no record Hydra made
        where there was none, so the folder is as it was (a sweep's job refused in a folder it
        never touched: the sweep folder records why)."""
        for name, content in kept.files.items():
            if name.startswith(".hydra/"):
                (self.path / name).write_bytes(content)
        if not whole:
            return
        for path in (self.sweep_id, self.failed):
            if path.name in kept.files:
                path.write_bytes(kept.files[path.name])
            else:
                path.unlink(missing_ok=True)
        for path in self.hydra.glob("*.yaml"):  # a record Hydra made where there was none
            if f".hydra/{path.name}" not in kept.files:
                path.unlink()
        if self.hydra.is_dir() and not any(self.hydra.iterdir()):
            self.hydra.rmdir()
        for log in self.path.glob("*.log"):
            if log.name not in kept.logs:
                log.unlink()
            elif log.stat().st_size > kept.logs[log.name]:
                os.truncate(log, kept.logs[log.name])

    def checkpoint_files(self) -> list[Path]:
        """The checkpoints dwn-train wrote here (by name: another file in checkpoints/ is the user's)."""
        return [path for path in (self.best, self.last) if path.is_file()]

    def records(self, checkpoints_only: bool = False) -> list[str]:
        """What of a run the folder holds, as names relative to it: metrics.jsonl when it has
        anything in it, then each checkpoint (only those with checkpoints_only)."""
        found = [f"checkpoints/{path.name}" for path in self.checkpoint_files()]
        if not checkpoints_only and self.metrics.is_file() and self.metrics.stat().st_size:
            found.insert(0, self.metrics.name)
        return found

    def holds_run(self) -> bool:
        """Whether a run was recorded here (a checkpoint or a metrics row): the one rule a fresh
        run and a sweep into this folder are refused by."""
        return bool(self.records())

    def is_job(self) -> bool:
        """Whether a command ran here (Hydra's record, metrics or a failure record)."""
        return self.path.is_dir() and any(p.exists() for p in (self.hydra, self.metrics, self.failed))

    def append_log(self, job: str, text: str) -> None:
        """Add `text` to the job's log; an unwritable folder fails the job itself, which says why."""
        try:
            with self.log(job).open("a") as handle:
                handle.write(text)
        except OSError:
            pass

    def record_failure(self, exit_code: int, error: str) -> None:
        """failed.json: a sweep job that failed, with its exit status and the sentence it said."""
        self.failed.write_text(json.dumps({"exit_code": exit_code, "error": error}) + "\n")

    def failure(self) -> tuple[int, str] | None:
        """(exit status, error) from failed.json, or None without one; a damaged record is read as
        a failure with status 1."""
        if not self.failed.is_file():
            return None
        try:
            record = json.loads(self.failed.read_text())
        except (OSError, ValueError):
            record = None
        if not isinstance(record, dict):
            record = {"error": "unreadable failed.json"}
        code = record.get("exit_code", 1)
        return (code if is_int(code) and 0 < code < 256 else 1), str(record.get("error", "failed"))

    def clear(self) -> None:
        """Remove what an earlier run recorded (trainer.resume=overwrite: a fresh run in a folder
        that held one): its checkpoints, metrics, curves and TensorBoard events, so nothing of it
        can be resumed or read as the new run's. Only the files dwn-train writes, by name: a file of
        the user's in checkpoints/ stays. Hydra's record and the logs are the new run's."""
        for path in (self.last, self.best, self.metrics, self.metrics_csv, self.curves):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.tensorboard, ignore_errors=True)
