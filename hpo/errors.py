"""One exception root. The CLI turns any HpoError into one line and exit status 2.

Anything else that escapes is a bug of ours and keeps its traceback.
"""


class HpoError(Exception):
    """Root of every error that is the user's input or environment, not a bug."""


class ConfigError(HpoError):
    """A study or search-space file is malformed; the message names the file and the key."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key = str(source), key
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        super().__init__(where + message)


class DataError(HpoError):
    """A data set is missing, malformed, or not the data set its name says."""


class StudyError(HpoError):
    """A study cannot be found, resumed or summarised as asked."""
