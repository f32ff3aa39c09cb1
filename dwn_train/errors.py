"""The exception types for mistakes a user can make (bad config values, files, data).

Raised with one sentence that names what was wrong and what was expected; the command-line tools
print that sentence without a traceback and exit with status 2. DWNError subclasses ValueError so
library callers can catch it the usual way.
"""


class DWNError(ValueError):
    """A user-caused error: bad argument, config value, file or data."""


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
