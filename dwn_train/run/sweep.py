"""A sweep (`dwn-train -m ...`) as a whole: the checks before its first job, the folder it holds
while it runs, which job folders belong to it, and the command that resumes it.

    start(sweep_dir, ...)   before any job: hold the sweep folder (one live sweep per folder),
                            refuse a job folder another live process owns, and refuse a sweep that
                            would meet runs it cannot continue (without trainer.resume: any run;
                            with trainer.resume=auto: a job folder holding another configuration's
                            run); then mark the sweep's start
    end(), end_all()        give the sweep folder up (the sweep's summary is written, or it was stopped)
    Job.starts(...)         a job starts: it joins the sweep; .failed() records its failure where the
                            summary reads it, .ends() puts back what it wrote into a run it left alone
    members(...)            which job folders are this sweep's
    marker(sweep_dir)       the words of the command that started the sweep (for its resume command)

The STARTED marker written into the sweep folder when a sweep begins holds a random id and the
sweep's command words; every job copies the id into its own folder (RunFolder.sweep_id) as it
starts, and a job folder belongs to the sweep when the two match. No clocks are compared, so a
cluster file system's skew or coarse timestamps cannot misjudge. A sweep resumed with
trainer.resume=auto is a new start: its jobs, finished ones included (run/resume.py keeps them),
join it again, so its summary has them all.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import DWNError
from ..config import may_change
from .command import Command, override_key, value_of
from .folder import ANOTHER_FOLDER, Kept, RunFolder
from .lock import begun, hold, holder, release

STARTED = ".sweep_started"
REFUSED = ".sweep_refused.jsonl"  # jobs refused in a folder holding a run (refuse)
KEPT = ".sweep_kept"  # what jobs may write into the job folders holding runs, as it was (Job.ends)
_held: dict = {}  # sweep folder -> the open handle of its .lock (the launching process holds it)


def job_order(path: Path):
    """Sweep job folders in job order (0, 1, ..., 10), then any other folder by name."""
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def start(sweep_dir: Path, overrides: list[str], words: list[str], planned: list[list[str]] | None,
          trains: bool = True) -> None:
    """Everything a sweep checks and marks before its first job (see the module doc). overrides:
    the sweep's task overrides; words: what its resume command repeats (configuration flags,
    Hydra's overrides and the task's, less trainer.resume and the sweep folder); planned: each
    job's overrides by job folder number ([] where folders are not named by number: a custom
    hydra.sweep.subdir; None where the sweeper draws its jobs as it goes: Optuna); trains: a
    training sweep (dwn-eval's and dwn-export's jobs meet no runs). Raises a DWNError, leaving the
    folder as it was."""
    made = not sweep_dir.exists()
    end(sweep_dir)  # this process's earlier sweep into the folder, if one ended without its summary
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # the launcher says why the folder cannot be made
    try:
        _held[sweep_dir.resolve()] = hold(sweep_dir / ".lock", (
            f"the sweep folder {sweep_dir} is in use by another running sweep (pid {{pid}}); wait for it to finish "
            f"or choose another folder ({ANOTHER_FOLDER})."), f"the sweep folder {sweep_dir}")
        check_jobs(sweep_dir, overrides, planned, trains)
    except DWNError:
        end(sweep_dir)
        if made:
            _remove_if_empty(sweep_dir)
        raise
    # a sweeper that draws its jobs cannot be resumed as a whole (check_jobs): no command to resume it
    resumable = {"words": list(words)} if planned is not None else {}
    _write(sweep_dir / STARTED, json.dumps({"id": uuid.uuid4().hex, **resumable}) + "\n")
    _keep(sweep_dir, trains)


def end(sweep_dir: Path) -> None:
    handle = _held.pop(sweep_dir.resolve(), None)
    if handle is not None:
        release(handle)
        shutil.rmtree(sweep_dir / KEPT, ignore_errors=True)


def end_all() -> None:
    """Give up every sweep folder this process holds (a sweep stopped before its end: Ctrl-C)."""
    for sweep_dir in list(_held):
        end(sweep_dir)


def _keep(sweep_dir: Path, trains: bool) -> None:
    """Hydra rewrites a job folder's .hydra record before the job can look at it: keep what a job
    may write into each job folder that holds a run (RunFolder.keep), in the sweep folder, for
    Job.ends to put back."""
    shutil.rmtree(sweep_dir / KEPT, ignore_errors=True)
    if not trains:
        return
    for job in (RunFolder(p) for p in sweep_dir.iterdir() if p.is_dir() and p.name != KEPT):
        if job.holds_run():
            try:
                (sweep_dir / KEPT).mkdir(exist_ok=True)
                (sweep_dir / KEPT / f"{job.path.name}.json").write_text(job.keep().to_json())
            except OSError:
                pass  # an unreadable record, or a full disk: nothing to put back


@dataclass
class Job:
    """One job of the sweep running in `sweep_dir`, from its start (`Job.starts`) to its end
    (`ends`); held: its folder held a run when it started, which a job refused before it began
    (run/lock.begin) must leave as it was; again: that run is this same sweep's, this job's own
    (a scheduler requeued it: submitit after a preemption or a time-out), so it continues it."""
    sweep_dir: Path
    folder: RunFolder
    held: bool
    again: bool = False
    refused: bool = False

    @classmethod
    def starts(cls, sweep_dir: Path, folder: RunFolder, cwd: Path) -> "Job":
        """The job in `folder` starts (a relative sweep_dir is as the launching process named it,
        from its working directory `cwd`): it joins the sweep."""
        sweep_dir, held = cwd / sweep_dir, folder.holds_run()
        sweep_id = _marker(sweep_dir).get("id")
        job = cls(sweep_dir, folder, held, again=held and bool(sweep_id) and _read(folder.sweep_id) == sweep_id)
        join(job.sweep_dir, folder)
        return job

    def resume(self, cfg) -> str | None:
        """A requeued training job without trainer.resume continues its own run (trainer.resume=auto
        in `cfg`): the sentence saying so, for its log; None for any other job."""
        trainer = cfg.get("trainer")
        if not self.again or trainer is None or trainer.get("resume") not in (None, ""):
            return None
        trainer.resume = "auto"
        return (f"job {self.folder.path.name} runs again in {self.folder.path}, which holds its own run of this sweep "
                "(a scheduler requeued it): it continues that run (trainer.resume=auto).")

    def failed(self, exit_code: int, error: str, stopped: bool = False) -> bool:
        """Record the job's failure where the sweep's summary reads it: failed.json in its folder,
        or, where it was refused in a folder holding a run it never touched, the sweep folder
        (`refuse`: failed.json there would hide that run from every summary). False when it
        cannot be written (the unwritable folder was the error), and for a job stopped by a
        signal in the process that launched the sweep (the sweep stops with it). A job stopped in
        a launcher's worker (submitit, joblib) is recorded like a failure, so the launcher gets
        its result and the sweep ends with its summary and a line naming it."""
        if stopped and self.sweep_dir.resolve() in _held:
            return False
        if self.held and not begun(self.folder):
            self.refused = not stopped
            refuse(self.sweep_dir, self.folder, exit_code, error)
            return True
        try:
            self.folder.record_failure(exit_code, error)
        except OSError:
            return False
        return True

    def ends(self) -> None:
        """A job that met a run in its folder and left it as it was: Hydra's record of it is put
        back; for a job refused there, also its sweep id and log lines (the sweep folder says why
        it was refused). A finished run kept keeps this sweep's id and the line saying so."""
        kept = self.sweep_dir / KEPT / f"{self.folder.path.name}.json"
        if not (self.held and not begun(self.folder) and kept.is_file()):
            return
        try:
            record = Kept.from_json(kept.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return  # a record cut short (a full disk when the sweep started): nothing to put back
        self.folder.put_back(record, whole=self.refused)


def check_jobs(sweep_dir: Path, overrides: list[str], planned: list[list[str]] | None, trains: bool = True) -> None:
    """Refuse the sweep as a whole when a job folder is owned by a live process, or holds a run
    the sweep would be refused at (none may be met without trainer.resume; with
    trainer.resume=auto a job folder must hold the run of the job that meets it)."""
    jobs = [RunFolder(p) for p in sorted(sweep_dir.iterdir(), key=job_order) if p.is_dir()]
    for job in jobs:
        pid = holder(job)
        if pid is not None:
            raise DWNError(f"the sweep folder's job folder {job.path} is in use by a running dwn-train (pid {pid}); "
                           f"wait for it to finish, then start the sweep again, or choose another folder "
                           f"({ANOTHER_FOLDER}).")
    resume = value_of(overrides, "trainer.resume")
    resume = None if resume is None or resume.strip().lower() in ("", "null", "none") else resume
    held = [job for job in jobs if trains and job.holds_run()]
    if not held or resume == "overwrite":
        return
    names = lambda found: ", ".join(job.path.name for job in found[:5]) + (" ..." if len(found) > 5 else "")
    if resume is None:
        raise DWNError(f"the sweep folder {sweep_dir} already holds runs (job folders {names(held)}); continue them "
                       "with trainer.resume=auto, start afresh with trainer.resume=overwrite, or choose another "
                       f"folder ({ANOTHER_FOLDER}).")
    if resume != "auto":
        return  # trainer.resume=PATH: one checkpoint for every job
    if planned is None:
        raise DWNError(f"the sweep folder {sweep_dir} holds runs (job folders {names(held)}) that this sweeper's jobs "
                       "cannot be matched to (it draws each job as it goes, so a resumed sweep is a new search): "
                       f"start the search in another folder ({ANOTHER_FOLDER}), or afresh here with "
                       "trainer.resume=overwrite.")
    other = [job for job in held if job.path.name.isdigit() and int(job.path.name) < len(planned)
             and _settings(job.overrides()) != _settings(planned[int(job.path.name)])]
    if other:
        first = other[0]
        raise DWNError(f"the sweep folder {sweep_dir} holds other runs than this sweep's (job folders {names(other)}: "
                       f"job {first.path.name} ran `{' '.join(_settings(first.overrides()))}`, this sweep's job "
                       f"{first.path.name} is `{' '.join(_settings(planned[int(first.path.name)]))}`); resume a sweep "
                       f"with the overrides it was started with, start afresh with trainer.resume=overwrite, or "
                       f"choose another folder ({ANOTHER_FOLDER}).")


def join(sweep_dir: Path, job: RunFolder) -> None:
    """Mark `job` as a job of the sweep now running in `sweep_dir`."""
    sweep_id = _marker(sweep_dir).get("id")
    if sweep_id:
        _write(job.sweep_id, sweep_id + "\n")  # an unwritable job folder fails the job itself, which says why


def refuse(sweep_dir: Path, job: RunFolder, exit_code: int, error: str) -> None:
    """Record in the sweep folder the failure of a job refused in a folder holding a run."""
    record = {"id": _marker(sweep_dir).get("id"), "job": job.path.name, "exit_code": exit_code, "error": error}
    try:
        with (sweep_dir / REFUSED).open("a") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError:
        pass  # an unwritable sweep folder: the job's sentence is on stderr and in its log


def refusals(sweep_dir: Path) -> list[tuple[str, int, str]]:
    """(job folder name, exit status, error) of the jobs of the sweep that last started in
    `sweep_dir` that were refused in a folder holding a run (see refuse)."""
    sweep_id, found = _marker(sweep_dir).get("id"), []
    for line in _read(sweep_dir / REFUSED).splitlines():
        try:
            record = json.loads(line)
            if record["id"] == sweep_id:
                found.append((str(record["job"]), int(record["exit_code"]), str(record["error"])))
        except (ValueError, KeyError, TypeError):
            continue
    return found


def members(sweep_dir: Path) -> list[Path]:
    """The job folders of the sweep that last started in `sweep_dir`, in job order; without a
    sweep id (the marker could not be written or read) every job folder."""
    if not sweep_dir.is_dir():
        return []
    sweep_id = _marker(sweep_dir).get("id")
    jobs = (RunFolder(p) for p in sorted(sweep_dir.iterdir(), key=job_order))
    return [job.path for job in jobs if job.is_job() and (not sweep_id or _read(job.sweep_id) == sweep_id)]


def resumable(sweep_dir: Path) -> tuple | None:
    """(the words the sweep started in `sweep_dir` was launched with, the folder): Command.sweep,
    for the command that resumes it; None where it cannot be resumed as a whole (its sweeper draws
    its jobs, or the marker does not say)."""
    words = marker(sweep_dir)
    return (tuple(words), sweep_dir.absolute()) if words is not None else None


def sweep_clause(sweep_dir: Path) -> str:
    """'; resume the whole sweep ... with `...`' for the sweep started in `sweep_dir` ('' where it
    cannot be resumed as a whole)."""
    return Command(sweep=resumable(sweep_dir)).sweep_clause()


def held_sweep_clause() -> str:
    """sweep_clause of the sweep this process launched and still holds ('' for none)."""
    return next((sweep_clause(Path(sweep_dir)) for sweep_dir in _held), "")


def marker(sweep_dir: Path) -> list[str] | None:
    """The words the sweep started in `sweep_dir` was launched with (for the command that resumes
    it), or None when the marker does not say."""
    words = _marker(sweep_dir).get("words")
    return [str(w) for w in words] if isinstance(words, list) else None


def _settings(overrides: list[str]) -> list[str]:
    """The overrides that shape a run: those a resume may change (trainer.epochs, ...) left out."""
    return sorted(o for o in overrides if not may_change(override_key(o)))


def _marker(sweep_dir: Path) -> dict:
    """The sweep marker: JSON {id, words}; a marker of an older version holds the id alone."""
    text = _read(sweep_dir / STARTED)
    try:
        found = json.loads(text)
    except ValueError:
        return {"id": text} if text else {}
    return found if isinstance(found, dict) else {"id": text}


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError:
        pass  # the folder cannot be written: the launcher or the job says why


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
