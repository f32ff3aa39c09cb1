"""The exceptions the command-line tools turn into one sentence on stderr and an exit status.

DWNError: a mistake a user can make (bad config values, files, data), exit 2; it subclasses
ValueError so library callers can catch it the usual way. RunError: the environment stopped a run
(disk full, unwritable folder, a verification mismatch), exit 1. Interrupted: Ctrl-C or a stop signal,
exit 128 + the signal's number.
Each is raised with one sentence that names what was wrong and what to do. `is_int` and
`is_number` are the type tests those checks share (a bool is neither, though Python's bool is an int);
`first_line` and `os_reason` put another library's error into such a sentence.
"""


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class DWNError(ValueError):
    """A user-caused error: bad argument, config value, file or data."""

    exit_code = 2


class InvalidArgument(DWNError):
    """A bad constructor argument, named so that a caller can say where it came from: the config
    builder re-raises it under the config key (`model.layers[0].n must be ...`).

    owner: who took it ('LUTLayer'); name: the argument; problem: 'must be ...'; value: what came.
    """

    def __init__(self, owner: str, name: str, problem: str, value):
        self.owner, self.name, self.problem, self.value = owner, name, problem, value
        super().__init__(f"{owner} {name} {problem}; got {value!r}.")

    def under(self, key: str) -> DWNError:
        """The same complaint about config key `key`."""
        return DWNError(f"{key} {self.problem}; got {self.value!r}.")


class RunError(RuntimeError):
    """Something outside the user's input stopped a run: a full disk, an unwritable folder, a
    verification that found a mismatch. One sentence naming the path or sample and the reason;
    the command-line tools exit with status 1."""

    exit_code = 1


class Interrupted(Exception):
    """A run stopped by Ctrl-C (exit 130), SIGTERM (143) or SIGUSR1 (138), with a sentence saying
    where it stopped and how to resume (dwn_train/run/interrupt.py)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code



def first_line(exc: BaseException) -> str:
    """'Type: the first line of its message' (the type alone for an empty message)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def os_reason(exc: BaseException) -> str:
    """The OS's reason in a few words ("No space left on device"), or the first line of the message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
