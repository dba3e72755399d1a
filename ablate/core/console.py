"""Console output: every layer reports progress through a ``Log``, one line per call
(``print`` by default; tests pass a list's ``append``)."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]
