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


WIDTH = 120  # the widest line ablate prints by default: a terminal's, with room to spare


def fit(text: str, width: int = WIDTH) -> str:
    """``text`` with every line wider than ``width`` folded: at ``; `` between clauses where
    one fits, else between words; continuation lines are indented 4 more than the line's own
    indent, so a folded line still reads as one item."""
    out: list[str] = []
    for line in text.splitlines():
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        while len(line) > width:
            cut = _cut(line, width)
            if cut <= len(line) - len(line.lstrip()):
                break  # one word wider than the terminal: left whole, not broken mid-word
            out.append(line[:cut].rstrip())
            line = indent + line[cut:].lstrip()
        out.append(line)
    return "\n".join(out)


def _cut(line: str, width: int) -> int:
    """Where to fold ``line``: after the last ``; `` in its first ``width`` characters (if
    that keeps at least half of them), else at the last space there."""
    clause = line.rfind("; ", 0, width - 1)
    if clause >= width // 2:
        return clause + 2
    space = line.rfind(" ", 0, width + 1)
    return max(space, 0)
