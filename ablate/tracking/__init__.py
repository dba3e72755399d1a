"""MLflow: the :class:`Tracker` (with :mod:`~ablate.tracking.server`, the UI's server, the only
modules that import mlflow), the runs a command names (a run id or an experiment name), and the
MLflow UI (``ablate ui`` and the ``browse:`` URLs, which open ablate's views of the runs)."""

from __future__ import annotations

from ablate.tracking.guard import EXIT_TRACKING_LOST, StoreBroken, TrackingLost
from ablate.tracking.tracker import Tracker, flatten
from ablate.tracking.ui import (
    browse_line,
    publish_views,
    run_link,
    run_url,
    runs_url,
    serve,
    ui_base,
)

__all__ = [
    "EXIT_TRACKING_LOST",
    "StoreBroken",
    "Tracker",
    "TrackingLost",
    "browse_line",
    "publish_views",
    "flatten",
    "run_link",
    "run_url",
    "runs_url",
    "serve",
    "ui_base",
]
