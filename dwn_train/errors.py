"""The one exception type for mistakes a user can make (bad config values, files, data).

Raised with one sentence that names what was wrong and what was expected; the command-line tools
print that sentence without a traceback and exit with status 2. It subclasses ValueError so
library callers can catch it the usual way.
"""


class DWNError(ValueError):
    """A user-caused error: bad argument, config value, file or data."""
