"""CIARD (ICCV 2025): clean and robust knowledge distillation with a contrastive push loss and
Iterative Teacher Training, as a registry entry (Eq. 7-8, Alg. 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from ablate.core.limits import MAX_EPOCHS, STRICT
from ablate.core.losses import (
    auto_lambda,
    kl,
    push_loss,
    push_set,
    soft_targets,
    update_temperatures,
)
from ablate.core.methods.base import Method

if TYPE_CHECKING:
    from ablate.core.passes import Passes


class CiardParams(BaseModel):
    """CIARD loss knobs (Eq. 7, Alg. 1). Defaults are the paper's; switches select the code's."""

    model_config = STRICT

    name: Literal["ciard"] = "ciard"
    alpha: float = Field(0.5, ge=0, description="weight of KL(s(x) ‖ t(x)), clean knowledge "
                         "(paper: α + β = 1, Eq. 4; released code 1)")
    beta: float = Field(0.5, ge=0, description="weight of KL(s(x*) ‖ t'(x*)), robust knowledge "
                        "(released code 1)")
    lam: float | Literal["auto"] = Field(
        "auto",
        description="push weight λ ≥ 0, or 'auto' (released code: a power of ten that gives the "
        "push term the magnitude of the smaller KL term, every step)",
    )
    push: bool = Field(True, description="use the contrastive push loss (Table 7 'w/ push')")
    push_student_temp: float = Field(4.0, gt=0, description="push temperature, student side "
                                     "(paper 4; released code 5)")
    push_teacher_temp: float = Field(4.0, gt=0, description="push temperature, teacher side "
                                     "(paper 4; released code 1)")
    adaptive_temps: bool = Field(False, description="released code's adaptive teacher "
                                 "temperatures τ_adv, τ_nat for the two KL targets")
    temp_lr: float = Field(1e-3, gt=0, description="adaptive temperature step per batch")
    adaptive_temps_freeze_epoch: int | None = Field(
        None, ge=0, le=MAX_EPOCHS, description="epochs with the full temperature step; from "
        "then on the step shrinks ×0.1 after every batch, which freezes the temperatures "
        "within an epoch (released code: 214, i.e. its 1-based epoch 215); None = never")
    temp_min: float = Field(1.0, gt=0, description="lower clip of adaptive temperatures")
    temp_max: float = Field(10.0, gt=0, description="upper clip of adaptive temperatures")
    kl_reduction: Literal["batchmean", "mean"] = Field(
        "batchmean", description="KL averaging: per sample (batchmean) or per entry "
        "(mean, released code: 1/num_classes as large)")
    kl_eps: float = Field(0.0, ge=0, description="eps in the teacher's p·log(p + eps) of every "
                          "KL term (released code: 1e-5); shifts the loss values, hence λ auto, "
                          "not the gradients")

    @field_validator("lam")
    @classmethod
    def _lam(cls, v: float | str) -> float | str:
        if isinstance(v, float) and v < 0:
            raise ValueError("must be >= 0 or 'auto'")
        return v

    @field_validator("temp_max")
    @classmethod
    def _temps(cls, v: float, info: ValidationInfo) -> float:
        if v < info.data.get("temp_min", 0.0):
            raise ValueError("must be >= temp_min")
        return v


def _ciard_state() -> dict[str, Any]:
    return {"tau_adv": 1.0, "tau_nat": 1.0, "temp_lr_scale": 1.0}


def _ciard_at_epoch(params: dict[str, Any], epoch: int) -> dict[str, Any]:
    freeze = params["adaptive_temps_freeze_epoch"]
    return {**params, "temps_decaying": freeze is not None and epoch >= freeze}


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
        if p.get("temps_decaying"):  # the released code's ×0.1 per batch from epoch 215
            state["temp_lr_scale"] = scale * 0.1
    if passes.update_teacher and rt_adv is not None:
        out["teacher_loss"] = F.cross_entropy(rt_adv, y)
    return out


def _push_term(passes: Passes, y: torch.Tensor, p: dict[str, Any], kl_clean: torch.Tensor,
               kl_robust: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
    """λ·Push, with its diagnostics written to ``out``: ``push_active_frac`` = |J|/B and
    ``push_empty_frac`` (1 when J = ∅) every batch; ``push_loss`` and ``lam`` only when J ≠ ∅,
    so their epoch means run over the batches where the term acted (an empty J would log the
    auto-λ of a zero push, ~1e5)."""
    t_adv = passes.t_adv()
    n_push = int(push_set(t_adv, y).sum())
    out["push_active_frac"] = torch.tensor(n_push / max(len(y), 1))
    out["push_empty_frac"] = torch.tensor(float(n_push == 0))
    if n_push == 0:
        return torch.zeros((), device=y.device)  # exactly 0: no λ, no NaN
    push = push_loss(passes.s_adv(), t_adv, y, student_temp=p["push_student_temp"],
                     teacher_temp=p["push_teacher_temp"], reduction=p["kl_reduction"],
                     log_eps=p["kl_eps"])
    lam = p["lam"]
    if lam == "auto":
        lam = auto_lambda(kl_clean.item(), kl_robust.item(), push.item())
    out["push_loss"], out["lam"] = push.detach(), torch.tensor(float(lam))
    return lam * push


CIARD = Method(
    name="ciard", params=CiardParams, objective="kl_clean_teacher", loss=ciard_loss,
    init_state=_ciard_state, teachers=("clean", "robust"), itt=True, at_epoch=_ciard_at_epoch,
    summary="CIARD (ICCV 2025): α·KL(s(x)‖t(x)) + β·KL(s(x*)‖t'(x*)) − λ·Push; ITT",
)
