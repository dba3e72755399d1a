"""IGDM (Lee, Cho et al., indirect gradient matching): an add-on term to any method's loss,
not a method of its own; the step adds it with its epoch weight (IGDM Eq. 9)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from ablate.core.passes import Passes

DISTANCES = ("kl", "l1", "l2")


def _shifted(passes: Passes, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and robust-teacher logits on clamp(x + c·δ, 0, 1), δ = x* − x; c ∈ {0, 1} reuses
    the memoised passes on x and x*."""
    if c == 0:
        return passes.s_nat(), passes.rt_nat()
    if c == 1:
        return passes.s_adv(), passes.rt_adv()
    if passes.robust_teacher is None:
        raise ValueError("IGDM needs a robust teacher")
    x = (passes.x + c * (passes.x_adv - passes.x)).clamp(0.0, 1.0)
    name = f"igdm{c:+g}"
    return passes.s_on(name, x), passes.rt_on(name, x)


def igdm_term(passes: Passes, *, beta: float, gamma: float, distance: str) -> torch.Tensor:
    """D(S(x+βδ) − S(x−γδ), T(x+βδ) − T(x−γδ)), T = robust teacher (IGDM Eq. 8) without the
    epoch weight T(α), which the step applies (Eq. 9). ``kl``: KL(softmax(ΔS) ‖ softmax(ΔT)),
    ΔT the detached target, batchmean (the paper's choice); ``l1``/``l2``: mean absolute /
    squared difference."""
    s_plus, t_plus = _shifted(passes, beta)
    s_minus, t_minus = _shifted(passes, -gamma)
    d_s, d_t = s_plus - s_minus, (t_plus - t_minus).detach()
    if distance == "kl":
        return F.kl_div(F.log_softmax(d_s, dim=1), F.log_softmax(d_t, dim=1),
                        reduction="batchmean", log_target=True)
    if distance == "l1":
        return (d_s - d_t).abs().mean()
    if distance == "l2":
        return (d_s - d_t).pow(2).mean()
    raise ValueError(f"unknown IGDM distance {distance!r}; known: {', '.join(DISTANCES)}")
