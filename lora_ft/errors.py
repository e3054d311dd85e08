"""The package's own error: its message names the problem and the fix."""


class LoraFtError(Exception):
    """A problem the user can fix; the message says what and how."""


class ConfigError(LoraFtError, ValueError):
    """A setting has a value the pipeline cannot use."""


class DataError(LoraFtError, ValueError):
    """The input data cannot be used as given."""
