"""Which job folders belong to a sweep, and a training sweep into a folder that holds runs.

The STARTED marker written into the sweep folder when a sweep begins holds a random id, which
every job copies into its own folder (RunFolder.sweep_id) as it starts; a job folder belongs to
this sweep when the two match. No clocks are compared, so a cluster file system's skew or coarse
timestamps cannot misjudge. (A sweep folder reused by another sweep keeps that one's jobs too.)
"""

from __future__ import annotations

import uuid
from pathlib import Path

from ..errors import DWNError
from .command import sets
from .folder import ANOTHER_FOLDER, RunFolder

STARTED = ".sweep_started"


def job_order(path: Path):
    """Sweep job folders in job order (0, 1, ..., 10), then any other folder by name."""
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def begin(sweep_dir: Path) -> None:
    """Mark the start of a sweep in `sweep_dir` with a new id (called once, before any job)."""
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / STARTED).write_text(uuid.uuid4().hex + "\n")
    except OSError:
        pass  # the launcher will say why the folder cannot be made


def join(sweep_dir: Path, job: RunFolder, cwd: Path) -> None:
    """Mark `job` as a job of the sweep now running in `sweep_dir` (called as each job starts; a
    relative sweep_dir is as the launching process named it, from its working directory `cwd`)."""
    sweep_id = _read(cwd / sweep_dir / STARTED)
    if sweep_id:
        try:
            job.sweep_id.write_text(sweep_id + "\n")
        except OSError:
            pass  # an unwritable job folder fails the job itself, which says why


def members(sweep_dir: Path) -> list[Path]:
    """The job folders of the sweep that last started in `sweep_dir`, in job order; without a
    sweep id (the marker could not be written or read) every job folder."""
    if not sweep_dir.is_dir():
        return []
    sweep_id = _read(sweep_dir / STARTED)
    jobs = (RunFolder(p) for p in sorted(sweep_dir.iterdir(), key=job_order))
    return [job.path for job in jobs if job.is_job() and (not sweep_id or _read(job.sweep_id) == sweep_id)]


def check_not_held(sweep_dir: Path, overrides: list) -> None:
    """A training sweep into a folder whose job folders hold runs would have each job refused one
    by one (run/resume.py), after Hydra had rewritten its .hydra record: refuse the sweep at once,
    unless it says what to do with them (trainer.resume=auto or overwrite)."""
    if any(sets(o, "trainer.resume") for o in overrides) or not sweep_dir.is_dir():
        return
    held = [p.name for p in sorted(sweep_dir.iterdir(), key=job_order) if p.is_dir() and RunFolder(p).holds_run()]
    if held:
        raise DWNError(f"the sweep folder {sweep_dir} already holds runs (job folders {', '.join(held[:5])}"
                       f"{' ...' if len(held) > 5 else ''}); continue them with trainer.resume=auto, start afresh "
                       f"with trainer.resume=overwrite, or choose another folder ({ANOTHER_FOLDER}).")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
