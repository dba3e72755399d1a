"""``ablate grid``: rows x seeds of one base experiment through Ray Tune (:class:`GridJob`), each
cell trained to the end and tested, and the table over seeds against the baseline row."""

from __future__ import annotations

from ablate.grid.job import GridJob, plan, run_grid
from ablate.grid.summary import report_grid

__all__ = [
    "GridJob",
    "plan",
    "run_grid",
    "report_grid",
]
