"""What a search or grid will cost before it starts (``--dry-run``): FLOPs counted on a real
step of the config's models, the ASHA expectation, and the time on this machine or a GPU."""

from __future__ import annotations

from ablate.cost.estimate import confirm_runs, grid_estimate, search_estimate
from ablate.cost.model import (
    MFU_DEFAULT,
    Timing,
    expected_epochs,
    mfu_arg,
    tflops_arg,
    timing_options,
)

__all__ = [
    "MFU_DEFAULT",
    "Timing",
    "confirm_runs",
    "expected_epochs",
    "grid_estimate",
    "mfu_arg",
    "search_estimate",
    "tflops_arg",
    "timing_options",
]
