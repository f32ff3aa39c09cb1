"""The command line, checked before Hydra runs: what Hydra would otherwise report with a traceback,
or do before a job could refuse it.

    check(name, argv, world)    one DWNError (exit 2) or RunError (exit 1) for: torchrun without
                                hydra.run.dir, dataset= for dwn-eval/dwn-export, an empty run folder,
                                a run folder that cannot be made
    rank_words(rank, world)     what ranks other than 0 add to their argv (one run folder, rank 0's)
    early_lock(argv, world)     dwn-train's run folder held before Hydra writes its files there
    mark_started(), started()   whether a job or sweep has started: an exit status 1 after that is
                                ours, before it Hydra's composition error (dwn_train/cli.py)
    note_made(path), made(path) whether this command made the run folder (a command refused before
                                it starts removes a folder it made: nothing of it is left behind)

The entry point passes argv and torchrun's WORLD_SIZE/RANK; nothing here reads them itself.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import DWNError, RunError, os_reason
from .command import sets
from .folder import RunFolder

_started = False
_made: dict = {}  # run folder this command made -> the outermost folder it made for it (resolved paths)
# Hydra's flags that print instead of running: no run folder is made
_SHOWING = ("--help", "-h", "--hydra-help", "--cfg", "-c")


def mark_started() -> None:
    global _started
    _started = True


def started() -> bool:
    return _started


def note_made(path: Path) -> None:
    """Remember that `path`, if it does not exist yet, is the run folder this command is about to
    make (with the folders above it that do not exist either)."""
    try:  # (called in a Hydra callback, where an exception would be a warning, and the run goes on)
        path = path.absolute()
        top = path
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        if not path.exists():
            _made.setdefault(path.resolve(), top)
    except OSError:
        pass  # a folder that cannot be looked at cannot be made either: Hydra says why


def made(path: Path) -> Path | None:
    """The outermost folder this command made for the run folder `path`, or None."""
    return _made.get(path.resolve())


def forget_made() -> None:
    """A new command starts (the console scripts, once each; the tests run several in one process)."""
    _made.clear()


def multirun(argv: list[str]) -> bool:
    return any(arg in ("-m", "--multirun") for arg in argv)


def named_dir(argv: list[str], key: str) -> str | None:
    """The folder the last `key=VALUE` of `argv` names, as Hydra reads it (quotes removed; a number
    or bool as Hydra's string field stores it; "" when empty), or None when there is none or it holds an
    interpolation (${now:...}: only Hydra can resolve it)."""
    given = [arg for arg in argv if arg.startswith(key + "=")]
    if not given:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_override(given[-1]).value()
    except Exception:  # Hydra says what is wrong with the override when it parses it itself
        return None
    if value is None:  # key= (Hydra reads an empty value as null)
        return ""
    if isinstance(value, (int, float)):  # as Hydra's string field stores it: 123 -> "123", 1e3 -> "1000.0"
        return str(value)
    return value if isinstance(value, str) and "${" not in value else None


def check(name: str, argv: list[str], world: int = 1) -> None:
    """Raise the first problem of `argv` that must be said before Hydra runs (see the module doc)."""
    if world > 1 and not any(arg.startswith("hydra.run.dir=") for arg in argv):
        raise DWNError("under torchrun pass hydra.run.dir=DIR so that all ranks share one run folder.")
    if name != "dwn-train" and any(sets(arg, "dataset") for arg in argv):
        raise DWNError("dataset= cannot choose a data set here: a checkpoint is scored on the data set it was trained "
                       "on (dataset.root, dataset.path, dataset.test_path or dataset.data_home point at it where it "
                       "moved).")
    empty = [key for key in ("hydra.run.dir", "hydra.sweep.dir") if named_dir(argv, key) == ""]
    if empty:
        raise DWNError(f"{empty[0]} is empty; name a folder, e.g. {empty[0]}=outputs/my_run.")
    problem = None if any(a in _SHOWING for a in argv) else _run_dir_problem(argv)
    if problem:
        raise RunError(f"{problem}; choose another with hydra.run.dir=DIR (hydra.sweep.dir=DIR for -m).")


def _run_dir_problem(argv: list[str]) -> str | None:
    """Why the run folder cannot be made, checked before Hydra tries (whose failure is a
    traceback): the nearest existing folder on its path must be a writable directory."""
    given = named_dir(argv, "hydra.sweep.dir" if multirun(argv) else "hydra.run.dir")
    path = Path(given or "outputs").absolute()
    existing = path
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as exc:  # a name longer than the file system allows, a path too deep
        return f"the run folder {path} cannot be made ({os_reason(exc)})"
    if not existing.is_dir():
        return f"the run folder {path} cannot be made: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"the run folder {path} cannot be made: {existing} is not writable"
    return None


# the lines of Hydra's report of a config it could not compose that name no problem
_HYDRA_DETAIL = ("full_key:", "reference_type=", "object_type=", "Set the environment variable HYDRA_FULL_ERROR")


def composition_sentence(text: str) -> str | None:
    """Hydra's report of a config it could not compose (several lines: 'Error merging override
    K=V', the reason, the key, its types) as one sentence naming the override and the reason;
    None for a report that is a traceback (a fault, shown as it is)."""
    if "Traceback (most recent call last)" in text:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), "")
    lines = [line for line in lines if not line.startswith(_HYDRA_DETAIL)]
    if not lines:
        return None
    merging = "Error merging override "
    if lines[0].startswith(merging) and len(lines) > 1:
        lines = [f"{lines[0][len(merging):]}: {lines[1]}", *lines[2:]]
    lines = lines[:next((i for i, line in enumerate(lines) if line.startswith("Config search path")), len(lines))]
    listed = next((i for i, line in enumerate(lines) if line.endswith(":")), None)
    if listed is not None and listed + 1 < len(lines):  # 'Available options in X:' then one option a line
        lines = [*lines[:listed], f"{lines[listed]} {', '.join(lines[listed + 1:])}"]
    sentence = "; ".join(line.rstrip(".") for line in lines)
    if key and key not in sentence:
        sentence += f" (key {key})"
    return sentence + "."


def rank_words(rank: int, world: int) -> list[str]:
    """Under torchrun every rank runs the program: only rank 0 may write Hydra's files and logs."""
    if world > 1 and rank > 0:
        return ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    return []


@contextmanager
def early_lock(argv: list[str], world: int = 1):
    """dwn-train with hydra.run.dir=DIR (the one way two runs can meet in one folder): hold DIR
    before Hydra writes its files there, so a refused second run changes nothing of the first,
    and put back the first run's .hydra files when Hydra's rewrite of them belonged to a command
    that was then refused (exit 2: a resume with other settings, a bad value) or that found the
    run finished (trainer.resume=auto) before it began rewriting the folder's records
    (lock.begin), so the folder still says how its run was trained (its log says why the command
    was refused).
    Under torchrun the trainer takes it (only it knows the strategy)."""
    given = named_dir(argv, "hydra.run.dir")
    if not given or multirun(argv) or world > 1:
        yield
        return
    from .lock import begun, own

    note_made(Path(given))
    with own(RunFolder(given)) as folder:
        kept = folder.keep()
        try:
            yield
        except SystemExit as exc:
            if exc.code == 2 and not begun(folder):
                folder.put_back(kept)
            raise
        if not begun(folder):  # a finished run that trainer.resume=auto kept as it was
            folder.put_back(kept)
