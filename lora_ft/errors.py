"""The package's own error: its message names the problem and the fix."""


class LoraFtError(Exception):
    """A problem the user can fix; the message says what and how, on one line (line breaks become spaces)."""

    def __init__(self, message: str = ""):
        super().__init__(" ".join(str(message).split()))


class ConfigError(LoraFtError, ValueError):
    """A setting has a value the pipeline cannot use."""


class DataError(LoraFtError, ValueError):
    """The input data cannot be used as given."""


def listed(values, limit: int = 5) -> str:
    """values (a list or a dict) for a message, capped at the first `limit` and how many more: one line stays short."""
    items = [f"{k!r}: {v!r}" for k, v in values.items()] if isinstance(values, dict) else [repr(v) for v in values]
    more = f", ... {len(items) - limit} more" if len(items) > limit else ""
    brackets = "{}" if isinstance(values, dict) else "[]"
    return brackets[0] + ", ".join(items[:limit]) + more + brackets[1]
