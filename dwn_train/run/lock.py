"""One live run per run folder, one live sweep per sweep folder.

`own(folder)` is entered before anything is written there (dwn-train takes it before Hydra writes
its files when the folder is named on the command line, run/precheck.py) and before any data is
loaded: it creates the folder, proves it writable, takes an exclusive lock (`.lock`, fcntl.flock:
the OS releases it when the process dies, so a SIGKILL never leaves a stale lock), refuses a second
live run in the same folder, and removes the temporary files a killed checkpoint write left behind.
A run that ends removes its `.lock` (the file only names the live holder's pid).
`begin(folder)` marks the moment the run starts rewriting the folder's own records (metrics;
checkpoints follow): from then on the folder is this run's, and `begun(folder)` says so to
dwn-train, which otherwise puts back the earlier run's .hydra files when this command is refused.
`holder(folder)` names the pid of a live process holding a folder, without taking it (a sweep
checks its job folders before it starts: run/sweep.py); `hold(path, refusal)` is the same lock on
any file, held until `release` (a sweep holds its folder's .lock while it runs).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import DWNError, RunError, os_reason
from .folder import RunFolder

_HELD: set = set()  # the run folders this process holds: owning one again is a no-op
_BEGUN: set = set()  # the held run folders whose records this hold has started to rewrite


def begin(folder: RunFolder) -> None:
    """Called by the trainer, inside own(folder), before its first write of the run's records."""
    _BEGUN.add(folder.path.resolve())


def begun(folder: RunFolder) -> bool:
    """Whether the latest hold of `folder` in this process began rewriting its records."""
    return folder.path.resolve() in _BEGUN


def forget(folder: RunFolder) -> None:
    """A new command in this process starts: what an earlier one began is not its doing."""
    _BEGUN.discard(folder.path.resolve())


@contextmanager
def own(folder: RunFolder):
    """Hold `folder` for this process for the duration of the block (re-entrant: dwn-train takes
    it before Hydra writes into it, and the trainer again)."""
    key = folder.path.resolve()
    if key in _HELD:
        yield folder
        return
    _BEGUN.discard(key)  # a new hold has not begun; after it ends, begun() still says what it did
    try:
        folder.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"the run folder {folder.path} cannot be written ({os_reason(exc)}); choose another with "
                       "hydra.run.dir=DIR.") from None
    refusal = (f"the run folder {folder.path} is in use by another running dwn-train (pid {{pid}}); wait for it to "
               "finish or choose another folder with hydra.run.dir=DIR.")
    handle = hold(folder.lock, refusal, f"the run folder {folder.path}")
    try:
        from ..checkpoint import remove_stale_temporaries  # (imports torch: only once a run starts)

        remove_stale_temporaries(folder.checkpoints)
        _HELD.add(key)
        try:
            yield folder
        finally:
            _HELD.discard(key)
    finally:
        release(handle)


def hold(path: Path, refusal: str, what: str):
    """Take the exclusive lock on the file `path` (created if need be) and write this process's
    pid into it; returns the open handle, which `release` gives up. Held by a live process: a
    DWNError, `refusal` with {pid} filled in. Not writable: a RunError naming `what`."""
    for _ in range(5):  # the file was removed by its last holder between our open and our lock: again
        try:
            handle = open(path, "a+")
        except OSError as exc:
            raise RunError(f"{what} cannot be written ({os_reason(exc)}); choose another with hydra.run.dir=DIR "
                           "(hydra.sweep.dir=DIR for -m).") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            handle.close()
            raise DWNError(refusal.format(pid=pid)) from None
        if _same_file(handle, path):
            break
        handle.close()
    else:  # removed under us five times over: something else keeps removing the file
        raise RunError(f"{what} keeps losing its lock file {path.name} to another process; make sure nothing else "
                       "cleans the folder while dwn-train runs.")
    try:  # the pid, for the message a second run gets
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    except OSError as exc:  # a full disk: say so before anything else is written
        release(handle)
        raise RunError(f"{what} cannot be written ({os_reason(exc)}); free space or choose another with "
                       "hydra.run.dir=DIR (hydra.sweep.dir=DIR for -m).") from None
    return handle


def release(handle) -> None:
    """Give up a lock taken by `hold`: the file goes (while still held, so no one can be holding
    the removed file), then the lock."""
    try:
        if _same_file(handle, Path(handle.name)):
            os.unlink(handle.name)
    except OSError:
        pass  # a read-only folder: the file stays, naming a pid that no longer holds it
    try:
        handle.close()  # closing releases the lock
    except OSError:
        pass  # the pid line could not be flushed (a full disk); the lock is released all the same


def holder(folder: RunFolder) -> str | None:
    """The pid (as written, or "unknown") of a live process holding `folder`, or None; takes nothing."""
    try:
        handle = open(folder.lock)
    except OSError:
        return None  # no lock file: no holder (a live holder keeps its file)
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        except OSError:
            return None
        return None


def _same_file(handle, path: Path) -> bool:
    try:
        mine, found = os.fstat(handle.fileno()), os.stat(path)
        return (mine.st_dev, mine.st_ino) == (found.st_dev, found.st_ino)
    except OSError:
        return False
