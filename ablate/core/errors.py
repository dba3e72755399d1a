"""Errors for bad inputs a user can fix; the CLI prints each as one line and exits 2.

Defined without torch so the CLI can catch them before torch is imported.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration, override or flag (one-line message naming the file and field)."""


class DatasetError(Exception):
    """A dataset cannot be used: missing, unsafe or malformed files (one-line message)."""


class DatasetMissingError(DatasetError, FileNotFoundError):
    """A dataset is not in the data directory (and was not, or could not be, downloaded)."""


class CheckpointError(ValueError):
    """A checkpoint is missing, unsafe or does not fit the architecture (one-line message)."""

    def __init__(self, message: str) -> None:
        # Collapse whitespace so the message stays on one line in logs and trial error tables.
        super().__init__(" ".join(str(message).split()))


# What the CLI reports as one line with exit code 2.
BAD_INPUT = (ConfigError, DatasetError, CheckpointError)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, cut to ``limit`` characters; its type when empty
    (for the one-line errors above, built from a library's exception)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__
