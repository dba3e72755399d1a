"""Ray plumbing that needs no Ray: error reasons, trial numbering, storage paths."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from ablate.runner import error_reason, storage_path, trial_dirname, trial_number

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
