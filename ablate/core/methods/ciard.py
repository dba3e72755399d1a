"""CIARD (ICCV 2025): clean and robust knowledge distillation with a contrastive push loss and
Iterative Teacher Training, as a registry entry (Eq. 7-8, Alg. 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ablate.core.catalog import CiardParams
from ablate.core.losses import (
    auto_lambda_tensor,
    kl,
    push_loss,
    push_set,
    soft_targets,
    update_temperatures,
)
from ablate.core.methods.base import WEIGHT, Method

if TYPE_CHECKING:
    from ablate.core.passes import Passes


def _ciard_state() -> dict[str, Any]:
    # The temperatures become 0-dim float64 tensors on the step's device at their first update.
    return {"tau_adv": 1.0, "tau_nat": 1.0, "temp_lr_scale": 1.0}


def _ciard_at_epoch(params: dict[str, Any], epoch: int) -> dict[str, Any]:
    return {**params, "temps_decaying": epoch in params["adaptive_temps_decay_epochs"]}


def ciard_loss(
    passes: Passes, y: torch.Tensor, params: dict[str, Any], state: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """L = α·KL(s(x) ‖ t(x)) + β·KL(s(x*) ‖ t'(x*)) − λ·Push(s(x*), t(x*), y)   (Eq. 7);
    teacher_loss = CE(t'(x*), y) (Eq. 8), used by the step only while ITT is on."""
    p = params
    kw = {"reduction": p["kl_reduction"], "log_eps": p["kl_eps"]}
    zero = torch.zeros((), device=y.device)
    use_push = p["push"] and p["lam"] != 0
    tau_adv, tau_nat = state.get("tau_adv", 1.0), state.get("tau_nat", 1.0)

    kl_clean = kl(passes.s_nat(), soft_targets(passes.t_nat(), tau_nat), **kw) \
        if p["alpha"] > 0 else zero
    rt_adv = passes.rt_adv() if (p["beta"] > 0 or passes.update_teacher) else None
    kl_robust = kl(passes.s_adv(), soft_targets(rt_adv, tau_adv), **kw) \
        if p["beta"] > 0 else zero
    loss = p["alpha"] * kl_clean + p["beta"] * kl_robust
    out = {"kl_clean": kl_clean.detach(), "kl_robust": kl_robust.detach()}
    if use_push:
        loss = loss - _push_term(passes, y, p, kl_clean, kl_robust, out)
    out["loss"] = loss

    if p["adaptive_temps"] and rt_adv is not None:
        scale = state.get("temp_lr_scale", 1.0)
        state["tau_adv"], state["tau_nat"] = update_temperatures(
            tau_adv, tau_nat, rt_adv, passes.t_nat(),
            lr=p["temp_lr"] * scale, low=p["temp_min"], high=p["temp_max"])
        if p.get("temps_decaying"):  # the released code's ×0.1 per batch of epochs 215, 260, 285
            state["temp_lr_scale"] = scale * 0.1
    if passes.update_teacher and rt_adv is not None:
        out["teacher_loss"] = F.cross_entropy(rt_adv, y)
    return out


def _push_term(passes: Passes, y: torch.Tensor, p: dict[str, Any], kl_clean: torch.Tensor,
               kl_robust: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
    """λ·Push, with its diagnostics written to ``out``: ``push_active_frac`` = |J|/B and
    ``push_empty_frac`` (1 when J = ∅) every batch; ``push_loss`` and ``lam`` weighted by
    whether J ≠ ∅ (:data:`~ablate.core.methods.base.WEIGHT`), so their epoch means run over the
    batches where the term acted (an empty J would log the auto-λ of a zero push, ~1e5).
    Nothing is read back to the host: J is a mask and an empty J gives exactly 0 (0·λ)."""
    t_adv = passes.t_adv()
    n_push = push_set(t_adv, y).sum()
    acted = (n_push > 0).float()
    out["push_active_frac"] = n_push / max(len(y), 1)
    out["push_empty_frac"] = 1.0 - acted
    push = push_loss(passes.s_adv(), t_adv, y, student_temp=p["push_student_temp"],
                     teacher_temp=p["push_teacher_temp"], reduction=p["kl_reduction"],
                     log_eps=p["kl_eps"])
    lam = p["lam"]
    if lam == "auto":
        lam = auto_lambda_tensor(kl_clean, kl_robust, push)
    lam = torch.as_tensor(lam, dtype=torch.float64, device=y.device)
    out["push_loss"], out["lam"] = push.detach(), lam
    out[f"push_loss{WEIGHT}"] = out[f"lam{WEIGHT}"] = acted
    # λ in the push's dtype: a Python λ multiplies in float32 too, so the loss is unchanged.
    return lam.to(push.dtype) * push


CIARD = Method(params=CiardParams, loss=ciard_loss, init_state=_ciard_state,
               at_epoch=_ciard_at_epoch)
