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


class StoreBroken(ConfigError):
    """The tracking store cannot be written (disk full) or read (a damaged database)."""


class TrackingLost(RuntimeError):
    """The tracking server did not answer for the whole wait (``$ABLATE_TRACKING_WAIT``)."""


EXIT_TRACKING_LOST = 75  # sysexits' EX_TEMPFAIL: try again later (with --resume)

# What the CLI reports as one line with exit code 2.
BAD_INPUT = (ConfigError, DatasetError, CheckpointError)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, cut to ``limit`` characters; its type when empty
    (for the one-line errors above, built from a library's exception)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


MAX_LINE = 400  # characters of an `ablate: error:` line: a terminal line or two, still readable
MAX_WORD = 300  # characters of one echoed value (a name, a key, a path) inside it: a real
# path (a Ray trial's checkpoint under a deep directory) stays whole, a 100 KB name does not


def shorten(text: str, limit: int = MAX_WORD) -> str:
    """``text`` cut in the middle to about ``limit`` characters, saying how much was cut: the
    start and the end of a long path or name are the parts that tell it apart."""
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 4
    return f"{text[:head]}…({len(text) - head - tail} more characters)…{text[-tail:]}"


def readable_line(message: str, limit: int = MAX_LINE) -> str:
    """An error message as one readable line: whitespace collapsed (a newline in an echoed
    value must not start a second line), every very long word (a 100 KB name) shortened, and
    the whole cut to ``limit`` characters with a count of what was left out."""
    line = " ".join(shorten(word) for word in message.split())
    if len(line) > limit + 30:  # a cut must save more than its note costs
        line = f"{line[:limit].rstrip()}… ({len(line) - limit} more characters)"
    return line
