"""Command lines a run tells its user: the one Hydra override quoter, and the command that resumes
a run (what Ctrl-C prints, run/interrupt.py).

`override_value(value)` writes a plain value as Hydra's override grammar reads it back (bare where
the grammar takes the text as that same string, else in Hydra's quotes); `override(key, value)`
makes it a whole override, quoted for the shell. `Command` is how this run was launched (the
launcher, its configuration flags and settings), built by the entry point from what it read
(`Command.launched`), so nothing here reads sys.argv, the environment or Hydra's globals.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..config import ABSENT  # a key one of two configs does not have: its override removes it (~key)

# Hydra's flags that choose the configuration itself: a resume must repeat them
CONFIG_FLAGS = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd")
# text Hydra reads bare as this same string: no quotes, spaces, interpolations, escapes; not a
# number (a leading digit, sign or dot) nor one of the words Hydra reads as another type
_BARE = re.compile(r"[A-Za-z_/][\w/.+-]*", re.ASCII)
_WORDS = ("true", "false", "null", "inf", "nan")


def override_value(value) -> str:
    """A plain value (None, bool, number, str, list, dict) as a Hydra override writes it, before
    shell quoting."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (str, Path)):
        text = str(value)
        if _BARE.fullmatch(text) and text.lower() not in _WORDS:
            return text
        # in Hydra's quotes a backslash escapes the backslashes before a quote (or the end), and a
        # quote; \${ is a literal ${ rather than an interpolation
        body = re.sub(r"(\\*)(?='|$)", lambda m: m.group(1) * 2, text).replace("'", "\\'").replace("${", "\\${")
        return f"'{body}'"
    return str(value)


def override(key: str, value) -> str:
    """The command-line override that sets `key` to `value` (ABSENT: removes the key), shell-quoted."""
    return shlex.quote(f"~{key}" if value is ABSENT else f"{key}={override_value(value)}")


def override_key(override: str) -> str:
    """The key a command-line override (key=v, +key=v, ++key=v, ~key=v or ~key) is about."""
    return override.lstrip("+~").split("=", 1)[0]


def sets(override: str, key: str) -> bool:
    """Whether a command-line override is about `key`."""
    return override_key(override) == key


def value_of(overrides: list[str], key: str) -> str | None:
    """The value the last of `overrides` about `key` gives it, as written; None where none is."""
    found = [o.split("=", 1)[1] if "=" in o else None for o in overrides if sets(o, key)]
    return found[-1] if found else None


def config_flags(argv: list[str]) -> list[str]:
    """Hydra's flags in `argv` that choose the configuration itself (--config-name x, -cd=dir, ...)."""
    flags = []
    for i, word in enumerate(argv):
        if word.split("=", 1)[0] in CONFIG_FLAGS:
            flags += [word] if "=" in word else argv[i:i + 2]
    return flags


@dataclass(frozen=True)
class Command:
    """How a run was launched, for the command that resumes it.

    words: its configuration flags and settings, less trainer.resume (a resume sets its own);
    ranks: processes per node under torchrun (1: a plain dwn-train); nodes: how many nodes;
    sweep: for a job of a sweep, (the sweep's words, its folder), for the command resuming it.
    """

    words: tuple = ()
    ranks: int = 1
    nodes: int = 1
    sweep: tuple | None = None

    @classmethod
    def launched(cls, argv: list[str], overrides: list[str], world: int = 1, local_world: int = 0,
                 sweep: tuple | None = None) -> "Command":
        """From what the entry point read: its argv (for the configuration flags), Hydra's task
        overrides, torchrun's WORLD_SIZE and LOCAL_WORLD_SIZE (0: not set), and for a job of a
        sweep (the words the sweep was started with, the sweep folder)."""
        kept = [o for o in overrides if not sets(o, "trainer.resume")]
        local = local_world or world
        nodes = world // local if world > local else 1
        return cls(tuple(config_flags(argv) + kept), local, nodes, sweep)

    def resume(self, how: str, run_dir: Path) -> str:
        """The shell command that continues the run in `run_dir` (how: trainer.resume=...)."""
        if self.ranks * self.nodes <= 1:
            launcher = ["dwn-train"]
        else:
            launcher = ["torchrun", *([f"--nnodes={self.nodes}"] if self.nodes > 1 else []),
                        f"--nproc_per_node={self.ranks}", "-m", "dwn_train.cli"]
        words = (*self.words, how, f"hydra.run.dir={override_value(run_dir)}")
        return " ".join(launcher + [shlex.quote(w) for w in words])

    def resume_sweep(self) -> str | None:
        """The shell command that resumes the whole sweep this job belongs to (its finished jobs
        are kept, the others continue or start), or None outside a sweep."""
        if self.sweep is None:
            return None
        words, sweep_dir = self.sweep
        words = ("-m", *words, "trainer.resume=auto", f"hydra.sweep.dir={override_value(sweep_dir)}")
        return " ".join(["dwn-train"] + [shlex.quote(w) for w in words])

    def sweep_clause(self) -> str:
        """'; resume the whole sweep ... with `...`', to end the message of a stopped job ('' outside a sweep)."""
        command = self.resume_sweep()
        return f"; resume the whole sweep (its finished jobs are kept) with `{command}`" if command else ""
