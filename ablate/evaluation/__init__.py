"""``ablate eval``: the final evaluation protocol (docs/evaluation.md) on a trained student,
named by a checkpoint or an MLflow run id, and RobustBench's leaderboard entry for it."""

from __future__ import annotations

from ablate.evaluation.evaluate import run_eval
from ablate.evaluation.robustbench import check_protocol, entry, entry_folder
from ablate.evaluation.targets import Target, resolve_target

__all__ = [
    "Target",
    "check_protocol",
    "entry",
    "entry_folder",
    "resolve_target",
    "run_eval",
]
