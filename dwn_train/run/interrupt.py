"""Ctrl-C during training: stop at the next step boundary, then say where the run stopped and the
command that resumes it.

A KeyboardInterrupt raised at an arbitrary point can land in a finaliser, where Python prints and
ignores it, and the run would go on; so the first Ctrl-C only sets `Progress.stop`, and the loop's
safe points (after a step, after the last epoch) call `Progress.stop_if_asked()`, which raises it
there. A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .command import Command, override_value
from .folder import RunFolder


@dataclass
class Progress:
    """Where the loop is (epoch, global step) and the checkpoint on disk that a resume would start
    from (saved: (its epoch, its path), None before the first)."""
    epoch: int
    step: int
    saved: tuple | None = None
    stop: bool = False

    def stop_if_asked(self) -> None:
        if self.stop:
            raise KeyboardInterrupt


@contextmanager
def stop_between_steps(progress: Progress):
    """For the block, the first Ctrl-C sets progress.stop; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(signum, frame):
        progress.stop = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupted(progress: Progress, folder: RunFolder, command: Command = Command()) -> str:
    """The Ctrl-C message: where the run stopped and the command that resumes it."""
    if progress.saved is None:
        return (f"interrupted at epoch {progress.epoch}, step {progress.step}, before any checkpoint was written; "
                "start the run again.")
    saved_epoch, path = progress.saved
    how = "trainer.resume=auto" if Path(path) == folder.last else f"trainer.resume={override_value(path)}"
    where = f" on each of the {command.nodes} nodes, with the rendezvous flags it was started with" \
        if command.nodes > 1 else ""
    return (f"interrupted at epoch {progress.epoch}, step {progress.step}; the last checkpoint is epoch {saved_epoch} "
            f"({path}); resume with `{command.resume(how, folder.path)}`{where}.")
