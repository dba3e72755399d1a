"""Ray plumbing that needs no Ray: error reasons, trial numbering, storage paths."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ablate.config import ConfigError
from ablate.runner import (
    TrialLogger,
    error_reason,
    experiment_dir,
    storage_path,
    trial_dirname,
    trial_number,
)
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


def test_storage_path_keeps_uris_and_makes_directories_absolute() -> None:
    assert storage_path("s3://bucket/ablate") == "s3://bucket/ablate"
    assert Path(storage_path("runs/x")).is_absolute()
    assert storage_path(None).endswith("runs/ray")


def test_experiment_dir_refuses_reuse_and_numbers_fresh_runs(tmp_path: Path) -> None:
    root = str(tmp_path)

    def ran(name: str) -> None:  # what Tuner.can_restore looks for
        (tmp_path / name).mkdir()
        (tmp_path / name / "tuner.pkl").write_bytes(b"")

    with pytest.raises(ConfigError, match="no search to resume"):
        experiment_dir(root, "s", resume=True, fresh=False)
    assert experiment_dir(root, "s", resume=False, fresh=False) == f"{root}/s"
    ran("s")
    with pytest.raises(ConfigError, match="pass --resume to continue it, or --fresh"):
        experiment_dir(root, "s", resume=False, fresh=False)
    assert experiment_dir(root, "s", resume=True, fresh=False) == f"{root}/s"
    assert experiment_dir(root, "s", resume=False, fresh=True) == f"{root}/s-2"
    ran("s-2")
    assert experiment_dir(root, "s", resume=True, fresh=False) == f"{root}/s-2"
    assert experiment_dir(root, "s", resume=False, fresh=True) == f"{root}/s-3"


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
