"""The run folder a training run owns.

`own(run_dir)` is entered before any data is loaded: it creates the folder, proves it writable,
takes an exclusive lock (`.lock`, fcntl.flock: the OS releases it when the process dies, so a
SIGKILL never leaves a stale lock), refuses a second live run in the same folder, and removes the
temporary files a killed checkpoint write left behind.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from .checkpoint import remove_stale_temporaries
from .errors import DWNError, RunError, os_reason


@contextmanager
def own(run_dir: Path):
    """Hold `run_dir` for this process for the duration of the block."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / ".lock", "a+")
    except OSError as exc:
        raise RunError(f"the run folder {run_dir} cannot be written ({os_reason(exc)}); choose another with "
                       "hydra.run.dir=DIR.") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise DWNError(f"the run folder {run_dir} is in use by another running dwn-train (pid {holder}); wait "
                           "for it to finish or choose another folder with hydra.run.dir=DIR.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        remove_stale_temporaries(run_dir / "checkpoints")
        yield run_dir
    finally:
        handle.close()  # closing releases the lock
