"""The heartbeat of a search or grid: a console line every few seconds while trials run.

Trials print a line when they end; between those the terminal would be silent for minutes. The
heartbeat says how many trials run, ended, stopped early or failed out of the planned number,
the best validation W-acc so far, the elapsed time and an ETA: the trial-epochs still
expected (under ASHA, the expectation of successive halving, ``ablate.cost.expected_epochs``;
the bound if ASHA stopped none is shown beside it) at the rate of trial-epochs done in this
invocation.
"""

from __future__ import annotations

import time
from typing import Any

from ray import tune

from ablate import names
from ablate.core.console import Log, clock
from ablate.runtime.trial_logger import trial_number


def heartbeat_line(trials: list[Any], *, planned: int, epochs: int, elapsed: float,
                   rate: float | None, expected: float | None = None, first: int = 1) -> str:
    """One progress line from Ray's trial list. ``rate``: trial-epochs per second so far in
    this invocation (None before the first epoch); ``expected``: epochs a trial is expected
    to train (None: all ``epochs``, as in a grid); ``first``: as in :func:`trial_number`."""
    count = dict.fromkeys(("running", "done", "stopped", "failed"), 0)
    trained_all, bound, best = 0, max(planned - len(trials), 0) * epochs, None
    for t in trials:
        result = t.last_result or {}
        trained = int(result.get("training_iteration", 0))
        trained_all += trained
        bound += 0 if t.status in ("TERMINATED", "ERROR") else epochs - trained
        if t.status == "RUNNING":
            count["running"] += 1
        elif t.status == "ERROR":
            count["failed"] += 1
        elif t.status == "TERMINATED":
            count["stopped" if trained < epochs else "done"] += 1
        w = result.get(names.OBJECTIVE)
        if isinstance(w, int | float) and (best is None or w > best[0]):
            best = (w, t)
    left = None if expected is None else max(planned, len(trials)) * expected - trained_all
    eta = _eta(bound, left, rate)
    stopped = "" if expected is None else f"{count['stopped']} stopped early, "  # not a grid
    line = (f"[{clock(elapsed)}] {count['running']} running, {count['done']} done, "
            f"{stopped}{count['failed']} failed of {planned}")
    if best is not None:
        number = trial_number(best[1], first) or best[1].trial_id
        line += f"; best val W {100 * best[0]:.1f}% (trial {number})"
    return f"{line}; {eta}"


def _eta(bound: int, expected: float | None, rate: float | None) -> str:
    """The time the trial-epochs still expected take (``expected``: under ASHA; None: the
    ``bound``, every trial to its last epoch), with the bound beside it under ASHA. When the
    trials outlast the expectation, the bound is all that is left to say."""
    if not rate:
        return "ETA unknown"
    if bound <= 0:
        return "ETA 0m00s"
    if expected is None:
        return f"ETA {clock(bound / rate)}"
    if expected <= 0:
        return f"ETA <= {clock(bound / rate)}"
    return (f"ETA ~{clock(min(expected, bound) / rate)} (at most {clock(bound / rate)} "
            "if ASHA stops none)")


class Heartbeat(tune.Callback):
    """Logs :func:`heartbeat_line` every ``every`` seconds (0 = never) from the driver."""

    def __init__(self, *, planned: int, epochs: int, every: float = 30.0,
                 expected: float | None = None, first: int = 1, log: Log = print):
        self.planned, self.epochs, self.every, self.log = planned, epochs, every, log
        self.expected, self.first = expected, first
        self.start: float | None = None
        self.last = 0.0
        self.first_epochs: int | None = None  # trial-epochs already done when this run began

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.every <= 0:
            return
        now = time.monotonic()
        epochs_now = sum(int((t.last_result or {}).get("training_iteration", 0))
                         for t in trials)
        if self.start is None:  # a restored Tuner reuses this callback: count from here
            self.start, self.last, self.first_epochs = now, now, epochs_now
        if now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        progressed = epochs_now - (self.first_epochs or 0)
        rate = progressed / elapsed if progressed > 0 and elapsed > 0 else None
        self.log(heartbeat_line(trials, planned=self.planned, epochs=self.epochs,
                                elapsed=elapsed, rate=rate, expected=self.expected,
                                first=self.first))

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into Ray's experiment state: a restored copy starts its clock afresh.
        return {**self.__dict__, "start": None, "last": 0.0, "first_epochs": None}
