"""Console output: every layer reports progress through a ``Log``, one line per call
(``print`` by default; tests pass a list's ``append``)."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]


def clock(seconds: float) -> str:
    """A duration as a console shows it: ``4m05s``, ``1h02m``."""
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"
