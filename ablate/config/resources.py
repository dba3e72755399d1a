"""Resources per trial, and what this machine or a Ray cluster offers: shared by searches
and grids."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ablate.config.networks import Strict
from ablate.core.errors import ConfigError


class Resources(Strict):
    cpu: float = Field(1.0, gt=0, le=4096, description="CPU cores per trial (= its torch "
                       "threads)")
    gpu: float = Field(0.0, ge=0, le=1024, description="GPUs per trial; fractions share a GPU")


def check_resources(res: Resources, available: dict[str, float], where: str) -> None:
    """A trial must fit on the machine (or cluster) it is going to run on."""
    if res.cpu > available.get("CPU", 0):
        raise ConfigError(f"field `resources.cpu`: {res.cpu:g} CPUs per trial, but {where} has "
                          f"{available.get('CPU', 0):g}")
    if res.gpu > 0 and res.gpu > available.get("GPU", 0):
        have = available.get("GPU", 0)
        hint = " (use --address to run on a Ray cluster with GPUs)" if have == 0 else ""
        raise ConfigError(f"field `resources.gpu`: {res.gpu:g} GPUs per trial, but {where} "
                          f"has {have:g}{hint}")


def check_trial_device(res: Resources, device: str) -> None:
    """``device: cuda`` needs a GPU share from Ray for every trial: a trial with none still
    sees every GPU of its node (Ray leaves them visible) and would use one Ray counts as free."""
    if device == "cuda" and res.gpu == 0:
        raise ConfigError("field `resources.gpu`: 0 GPUs per trial, but the experiment's device "
                          "is cuda; give each trial a GPU share (e.g. resources.gpu=0.25) or "
                          "set base.device=auto")


def concurrency(spec: Any, available: dict[str, float], trials: int | None = None) -> int:
    """How many trials of a search or grid spec (its ``resources`` and ``max_concurrent``) run
    at once on the given resources; ``trials`` defaults to a search's ``num_samples``."""
    fit = [available.get("CPU", 0) / spec.resources.cpu]
    if spec.resources.gpu > 0:
        fit.append(available.get("GPU", 0) / spec.resources.gpu)
    n = max(int(min(fit) + 1e-9), 0)
    if spec.max_concurrent is not None:
        n = min(n, spec.max_concurrent)
    return min(n, spec.num_samples if trials is None else trials)
