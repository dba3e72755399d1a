"""MLflow: the :class:`Tracker` (the only module that imports mlflow), the runs a command names
(a run id or an experiment name), and the MLflow UI (``ablate ui`` and the ``browse:`` URLs)."""

from __future__ import annotations

from ablate.tracking.tracker import Tracker, flatten
from ablate.tracking.ui import browse_line, run_url, runs_url, serve, ui_base

__all__ = [
    "Tracker",
    "browse_line",
    "flatten",
    "run_url",
    "runs_url",
    "serve",
    "ui_base",
]
