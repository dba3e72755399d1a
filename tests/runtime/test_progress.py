"""The search/grid heartbeat line: counts, best so far and ETA from Ray's trial list."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from ablate.runtime import Heartbeat
from ablate.runtime.progress import heartbeat_line


def trial(number: int, status: str, epochs: int, w: float | None = None) -> SimpleNamespace:
    result = {"training_iteration": epochs} if epochs else {}
    if w is not None:
        result["val/best_w_acc"] = w
    return SimpleNamespace(trial_id=f"abc_{number:05d}", experiment_tag=f"{number}_lr=0.1",
                           status=status, last_result=result)


def test_counts_best_and_eta() -> None:
    trials = [trial(1, "TERMINATED", 6, 0.61), trial(2, "TERMINATED", 2, 0.70),
              trial(3, "ERROR", 1), trial(4, "RUNNING", 3, 0.65), trial(5, "PENDING", 0)]
    # 8 trials of 6 epochs planned; ended trials have nothing left, trial 4 has 3 left,
    # trial 5 and the 3 not yet created 6 each: 3 + 4 * 6 = 27 trial-epochs at 0.1 per s.
    # Under ASHA 3.5 epochs are expected per trial: 8 * 3.5 - (6 + 2 + 1 + 3) = 16 left.
    line = heartbeat_line(trials, planned=8, epochs=6, elapsed=125, rate=0.1, expected=3.5)
    assert line == ("[2m05s] 1 running, 1 done, 1 stopped early, 1 failed of 8; best val W "
                    "70.0% (trial 2); ETA ~2m40s (at most 4m30s if ASHA stops none)")
    # A grid: every trial runs every epoch, nothing stops early.
    line = heartbeat_line(trials, planned=8, epochs=6, elapsed=125, rate=0.1)
    assert line.endswith("1 running, 1 done, 1 failed of 8; best val W 70.0% (trial 2); "
                         "ETA 4m30s")
    # Trials that outlast the expectation: what is left is the bound.
    assert heartbeat_line(trials, planned=8, epochs=6, elapsed=125, rate=0.1,
                          expected=1.0).endswith("; ETA <= 4m30s")


def test_before_any_epoch_the_eta_is_unknown() -> None:
    line = heartbeat_line([trial(1, "RUNNING", 0)], planned=2, epochs=4, elapsed=3700, rate=None,
                          expected=3.0)
    assert line == "[1h01m] 1 running, 0 done, 0 stopped early, 0 failed of 2; ETA unknown"


def test_heartbeat_prints_every_interval_only_and_restarts_its_clock_when_restored() -> None:
    lines: list[str] = []
    beat = Heartbeat(planned=2, epochs=4, every=3600, log=lines.append)
    beat.on_step_end(0, [trial(1, "RUNNING", 1)])
    beat.on_step_end(1, [trial(1, "RUNNING", 2)])
    assert lines == []  # the first interval has not passed
    beat.every = 1e-9
    beat.on_step_end(2, [trial(1, "RUNNING", 3)])
    assert len(lines) == 1 and "; ETA " in lines[0] and "unknown" not in lines[0]  # a rate
    restored = pickle.loads(pickle.dumps(beat))
    assert restored.start is None and restored.first_epochs is None
    off = Heartbeat(planned=1, epochs=1, every=0, log=lines.append)
    off.on_step_end(0, [trial(1, "RUNNING", 1)])
    assert len(lines) == 1
