"""One live run per run folder.

`own(folder)` is entered before anything is written there (dwn-train takes it before Hydra writes
its files when the folder is named on the command line, run/precheck.py) and before any data is
loaded: it creates the folder, proves it writable, takes an exclusive lock (`.lock`, fcntl.flock:
the OS releases it when the process dies, so a SIGKILL never leaves a stale lock), refuses a second
live run in the same folder, and removes the temporary files a killed checkpoint write left behind.
`begin(folder)` marks the moment the run starts rewriting the folder's own records (metrics;
checkpoints follow): from then on the folder is this run's, and `begun(folder)` says so to
dwn-train, which otherwise puts back the earlier run's .hydra files when this command is refused.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager

from ..errors import DWNError, RunError, os_reason
from .folder import RunFolder

_HELD: set = set()  # the run folders this process holds: owning one again is a no-op
_BEGUN: set = set()  # the held run folders whose records this hold has started to rewrite


def begin(folder: RunFolder) -> None:
    """Called by the trainer, inside own(folder), before its first write of the run's records."""
    _BEGUN.add(folder.path.resolve())


def begun(folder: RunFolder) -> bool:
    return folder.path.resolve() in _BEGUN


@contextmanager
def own(folder: RunFolder):
    """Hold `folder` for this process for the duration of the block (re-entrant: dwn-train takes
    it before Hydra writes into it, and the trainer again)."""
    key = folder.path.resolve()
    if key in _HELD:
        yield folder
        return
    try:
        folder.path.mkdir(parents=True, exist_ok=True)
        handle = open(folder.lock, "a+")
    except OSError as exc:
        raise RunError(f"the run folder {folder.path} cannot be written ({os_reason(exc)}); choose another with "
                       "hydra.run.dir=DIR.") from None
    try:
        _lock(handle, folder)
        from ..checkpoint import remove_stale_temporaries  # (imports torch: only once a run starts)

        remove_stale_temporaries(folder.checkpoints)
        _HELD.add(key)
        try:
            yield folder
        finally:
            _HELD.discard(key)
            _BEGUN.discard(key)
    finally:
        try:
            handle.close()  # closing releases the lock
        except OSError:
            pass  # the pid line could not be flushed (a full disk); the lock is released all the same


def _lock(handle, folder: RunFolder) -> None:
    """Take the lock on the open lock file and write this process's pid into it."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        raise DWNError(f"the run folder {folder.path} is in use by another running dwn-train (pid {holder}); wait "
                       "for it to finish or choose another folder with hydra.run.dir=DIR.") from None
    try:  # the pid, for the message a second run gets
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    except OSError as exc:  # a full disk: say so before anything else is written
        raise RunError(f"the run folder {folder.path} cannot be written ({os_reason(exc)}); free space or choose "
                       "another with hydra.run.dir=DIR.") from None
