"""Stopping a run from outside: Ctrl-C (SIGINT), SIGTERM (what `kill`, SLURM at a time limit or a
preemption, and most schedulers send) and SIGUSR1 (the early warning a scheduler can be asked
for, e.g. SLURM's --signal=USR1@120) all stop at the next step boundary, then say where the run
stopped and the command that resumes it (and, in a sweep, the command that resumes the sweep).

A KeyboardInterrupt raised at an arbitrary point can land in a finaliser, where Python prints and
ignores it, and the run would go on; so inside the training loop the first signal only sets
`Progress.stop`, and the loop's safe points (after a step, after the last epoch) call
`Progress.stop_if_asked()`, which raises `Stopped` there. A second Ctrl-C stops at once; a
second SIGTERM or SIGUSR1 (schedulers repeat them) lets the stop under way finish. Outside
the loop (`stop_anywhere`: loading data, building the model) SIGTERM and SIGUSR1 raise `Stopped`
where they land, as Ctrl-C raises KeyboardInterrupt. The exit status is 128 + the signal's number
(130 for Ctrl-C, 143 for SIGTERM, 138 for SIGUSR1), as a shell reports a process the signal ended.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .command import Command, override_value
from .folder import RunFolder

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class Stopped(KeyboardInterrupt):
    """A stop asked for by a signal (signum), raised at a safe point or where it landed."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the number of the signal that stopped the run (Ctrl-C: 130)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def by(exc: KeyboardInterrupt) -> str:
    """' by SIGTERM' for a stop other than Ctrl-C, for the message."""
    signum = getattr(exc, "signum", signal.SIGINT)
    return "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"


@dataclass
class Progress:
    """Where the loop is (epoch, global step) and the checkpoint on disk that a resume would start
    from (saved: (its epoch, its path), None before the first); stop: the signal that asked the
    loop to stop (0: none)."""
    epoch: int
    step: int
    saved: tuple | None = None
    stop: int = 0

    def stop_if_asked(self) -> None:
        if self.stop:
            raise Stopped(self.stop)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def stop_anywhere() -> None:
    """From now on SIGTERM and SIGUSR1 raise Stopped where they land, as Ctrl-C raises
    KeyboardInterrupt (called once by the console scripts, before a job starts)."""
    if _main_thread():
        for signum in SIGNALS[1:]:
            signal.signal(signum, _raise_stopped)


@contextmanager
def stop_anywhere_in_job():
    """stop_anywhere for one job, in a process the console script did not start (a launcher's
    worker: submitit, joblib): only for the signals no one handles there yet (submitit keeps its
    own SIGTERM and SIGUSR2 handlers), and only while the job runs (a pooled worker gets its own
    handlers back)."""
    if not _main_thread():
        yield
        return
    free = [signum for signum in SIGNALS[1:] if signal.getsignal(signum) == signal.SIG_DFL]
    for signum in free:
        signal.signal(signum, _raise_stopped)
    try:
        yield
    finally:
        for signum in free:
            signal.signal(signum, signal.SIG_DFL)


@contextmanager
def stop_between_steps(progress: Progress):
    """For the block, the first of SIGNALS sets progress.stop; then a second Ctrl-C stops at once
    (KeyboardInterrupt: the user means it), while SIGTERM and SIGUSR1 are ignored (a scheduler
    sends SIGTERM to every process of a job, often twice, after its warning signal: the stop
    already asked for goes on, and SIGKILL is the scheduler's way to end it at once); the previous
    handlers come back after."""
    if not _main_thread():
        yield
        return

    def first(signum, frame):
        progress.stop = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for other in SIGNALS[1:]:
            signal.signal(other, signal.SIG_IGN)

    previous = {signum: signal.signal(signum, first) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # a stop under way: repeated scheduler signals stay ignored
            signal.signal(signum, signal.SIG_IGN if progress.stop and signum != signal.SIGINT else handler)


def interrupted(progress: Progress, folder: RunFolder, command: Command = Command(), how: str = "") -> str:
    """The message of a stopped run (how: ' by SIGTERM', '' for Ctrl-C): where it stopped and the
    command that resumes it."""
    whole = command.sweep_clause()
    if progress.saved is None:
        return (f"interrupted{how} at epoch {progress.epoch}, step {progress.step}, before any checkpoint was "
                f"written; start the run again{whole}.")
    saved_epoch, path = progress.saved
    resume = "trainer.resume=auto" if Path(path) == folder.last else f"trainer.resume={override_value(path)}"
    where = f" on each of the {command.nodes} nodes, with the rendezvous flags it was started with" \
        if command.nodes > 1 else ""
    job = " this job" if whole else ""
    return (f"interrupted{how} at epoch {progress.epoch}, step {progress.step}; the last checkpoint is epoch "
            f"{saved_epoch} ({path}); resume{job} with `{command.resume(resume, folder.path)}`{where}{whole}.")
