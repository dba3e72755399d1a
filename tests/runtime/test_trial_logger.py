"""The driver's trial logger: error reasons, trial numbering, each epoch logged once across a
resume, orphaned child runs discarded, and which trials count as ended."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from ablate.runtime import TrialLogger, trial_dirname
from ablate.runtime.trial_logger import cell_dirname, error_reason, trial_number
from ablate.tracking import Tracker

TRACE = """Failure # 1 (occurred at 2026-11-22_04-03-58)
ray::ImplicitFunc.train() (pid=1, ip=192.0.2.2, actor_id=ab)
  File "/work/main/trainables/ciard.py", line 59, in train_ciard
    raise FloatingPointError(f"diverged in epoch {epoch + 1}: {exc}") from None
FloatingPointError: diverged in epoch 1: ciard loss is not finite (nan)
"""


def test_error_reason_is_the_last_exception_line() -> None:
    assert error_reason(TRACE) == ("FloatingPointError: diverged in epoch 1: ciard loss is "
                                   "not finite (nan)")
    wrapped = TRACE + "\nThe above exception was the direct cause of:\nray.exceptions." \
        "RayTaskError(FloatingPointError): ray::train() failed: boom\n"
    assert error_reason(wrapped).startswith("ray.exceptions.RayTaskError(FloatingPointError)")
    assert error_reason(None) == "unknown error"
    assert error_reason("worker died\n\n") == "worker died"


def test_trial_numbers_come_from_the_experiment_tag() -> None:
    trial = SimpleNamespace(experiment_tag="12_method.alpha=0.5", trial_id="abc123")
    assert trial_number(trial) == 12 and trial_dirname(trial) == "trial_0012_abc123"
    assert trial_number(SimpleNamespace(experiment_tag="", trial_id="x")) == 0
    # A grid's variants are tagged from 0 by Ray; ablate numbers its cells from 1.
    cell = SimpleNamespace(experiment_tag="0_row=push,seed=0", trial_id="abc_00000")
    assert trial_number(cell, first=0) == 1 and cell_dirname(cell) == "trial_0001_abc_00000"


def test_trial_logger_logs_each_epoch_once_across_a_resume(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}")
    parent = tracker.start("exp", "parent")
    trial = SimpleNamespace(trial_id="t1", experiment_tag="1_x", config={"a": 1})

    def logger() -> TrialLogger:
        return TrialLogger(tracker, "exp", parent, run_params=dict, run_tags=lambda c: {},
                           describe=str, epochs=3, log=lambda _: None)

    first = logger()
    first.on_trial_start(0, [], trial)
    for epoch in (0, 1):
        first.on_trial_result(0, [], trial, {"epoch": float(epoch), "val/w_acc": 0.5})
    first.close_open()
    resumed = logger()  # a new invocation replays epoch 1 from an older checkpoint
    for epoch in (1, 2):
        resumed.on_trial_result(0, [], trial, {"epoch": float(epoch), "val/w_acc": 0.6})
    run = tracker.find_run("exp", {"trial_id": "t1"})
    assert run is not None
    history = tracker.client.get_metric_history(run, "val/w_acc")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.5), (2, 0.6)]


def test_only_runs_of_trials_ray_lost_are_discarded(tmp_path: Path) -> None:
    """After a restore, a child run whose trial Ray no longer knows is deleted; the runs of
    restored trials and of trials started since the last step (Ctrl-C can land before the
    next step) are kept."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}")
    parent = tracker.start("exp", "parent")
    logger = TrialLogger(tracker, "exp", parent, run_params=dict, run_tags=lambda c: {},
                         describe=str, epochs=3, log=lambda _: None)
    trials = {tid: SimpleNamespace(trial_id=tid, experiment_tag=f"{i}_x", config={},
                                   status="RUNNING")
              for i, tid in enumerate(["restored", "lost", "started"], 1)}
    for trial in trials.values():
        logger.on_trial_start(0, [], trial)
    fresh = TrialLogger(tracker, "exp", parent, run_params=dict, run_tags=lambda c: {},
                        describe=str, epochs=3, log=lambda _: None)
    fresh.on_step_begin(0, [trials["restored"]])  # what Ray restored: "lost" is gone
    fresh.on_trial_start(0, [], trials["started"])  # started within that step
    assert fresh.discard_orphans() == ["lost"]
    kept = {r["tags"]["trial_id"] for r in tracker.children(parent)}
    assert kept == {"restored", "started"}
    fresh.close_open()  # ends the open runs without touching the deleted one


def test_trial_logger_counts_only_trials_it_saw_end() -> None:
    """Ray marks the trials it stops on Ctrl-C TERMINATED; they must not count as ended."""
    logger = TrialLogger.__new__(TrialLogger)
    logger.known, logger.done, logger.stepped = set(), set(), False
    restored = [SimpleNamespace(trial_id="a", status="TERMINATED"),
                SimpleNamespace(trial_id="b", status="PAUSED")]
    logger.on_step_begin(0, restored)
    assert logger.done == {"a"} and logger.known == {"a", "b"}
    stopped = SimpleNamespace(num_terminated=3, num_errors=0)  # b and c stopped by Ctrl-C
    assert logger.unfinished(stopped, expected=3) == 2
    fresh = TrialLogger.__new__(TrialLogger)
    fresh.known, fresh.done, fresh.stepped = set(), set(), False
    assert fresh.unfinished(stopped, expected=3) == 0  # nothing ran: all had ended before
