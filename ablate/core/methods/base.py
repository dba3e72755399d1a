"""What a distillation method is: a frozen registry entry (params model, which names the
inner-max objective, and loss function). The method families build entries from this module
only; the registry and its lookups live in the package ``__init__``, so nothing here imports
back into it.

A loss function has the signature ``loss(passes, y, params, state) -> dict`` and returns at least
``"loss"`` (the student loss); ``"teacher_loss"`` when the robust teacher is trained (ITT).
``state`` holds per-run mutable values (e.g. adaptive temperatures) and is checkpointed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ablate.core.catalog import MethodParams

if TYPE_CHECKING:
    from ablate.core.passes import Passes

Out = dict[str, torch.Tensor]
# ``out[key + WEIGHT]``: the weight (0 or 1, a tensor) of the batch's ``out[key]`` in the epoch's
# mean of ``key``, for a term that only some batches have (the push loss of a batch with J ≠ ∅).
# A key without one has weight 1. Weights stay on the device: the step reads nothing back.
WEIGHT = "@weight"
LossFn = Callable[["Passes", torch.Tensor, dict[str, Any], dict[str, Any]], Out]
EpochParams = Callable[[dict[str, Any], int], dict[str, Any]]


@dataclass(frozen=True)
class Method:
    """A distillation method: one PGD loop, its own objective and loss. Its name, knobs and
    fixed facts (default objective, teachers, ITT, summary) are its params model's, defined
    without torch in :mod:`ablate.core.catalog`."""

    params: type[MethodParams]
    loss: LossFn
    init_state: Callable[[], dict[str, Any]] = field(default=dict)
    # The params of one epoch (0-based) from the run's, for knobs with an epoch schedule.
    at_epoch: EpochParams | None = None

    @property
    def name(self) -> str:
        return self.params.model_fields["name"].default

    @property
    def objective(self) -> str:
        return self.params.objective

    @property
    def teachers(self) -> tuple[str, ...]:
        return self.params.teachers

    @property
    def itt(self) -> bool:
        return self.params.itt

    @property
    def summary(self) -> str:
        return self.params.summary

    def epoch_params(self, params: dict[str, Any], epoch: int) -> dict[str, Any]:
        return self.at_epoch(params, epoch) if self.at_epoch is not None else params
