"""Adversarial distillation from robust (and clean) teachers, the methods CIARD is compared with
(SPEC §4): ARD, RSLAD, MTARD and AdaAD as registry entries.

KL(a ‖ b) follows ``losses.kl``: b is the detached target. ``kl_reduction``: the papers' KL is
per sample (batchmean); the released ARD/RSLAD/MTARD/AdaAD code averages over entries
(``nn.KLDivLoss()`` / ``torch.mean``), which makes each KL term 1/C as large.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from ablate.core.limits import STRICT, Epoch
from ablate.core.losses import Reduction, kl, soft_targets
from ablate.core.methods.base import Method, Out

if TYPE_CHECKING:
    from ablate.core.passes import Passes

KlReduction = Literal["batchmean", "mean"]
_RED_DOC = "KL averaging: per sample (batchmean, the paper's KL) or per entry (mean, released code)"


def _kl(student: torch.Tensor, teacher: torch.Tensor, red: Reduction, temp: float = 1.0
        ) -> torch.Tensor:
    """KL(softmax(s/τ) ‖ softmax(t/τ)), teacher detached."""
    return kl(student, soft_targets(teacher, temp), student_temp=temp, reduction=red)


def _zero(y: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), device=y.device)


# --- ARD (Goldblum et al., AAAI 2020) ------------------------------------------------------------

class ArdParams(BaseModel):
    """ARD (Goldblum et al. 2020); defaults are the paper's CIFAR-10 values."""

    model_config = STRICT
    name: Literal["ard"] = "ard"
    alpha: float = Field(1.0, ge=0, le=1, description="weight α of the distillation term; "
                         "1 − α goes to CE(S(x), y) (paper value 1.0 on CIFAR-10)")
    temp: float = Field(30.0, gt=0, description="distillation temperature T, the KL is scaled "
                        "by T² (paper value 30 on CIFAR-10)")
    kl_reduction: KlReduction = Field("batchmean", description=_RED_DOC)


def ard_loss(passes: Passes, y: torch.Tensor, params: dict[str, Any], state: dict[str, Any]
             ) -> Out:
    """L = α·T²·KL(S(x*)/T ‖ T(x)/T) + (1 − α)·CE(S(x), y), T = robust teacher on clean x (ARD).
    A term with weight 0 runs no passes."""
    a, t = params["alpha"], params["temp"]
    kl_adv = _kl(passes.s_adv(), passes.rt_nat(), params["kl_reduction"], t) if a > 0 \
        else _zero(y)
    ce = F.cross_entropy(passes.s_nat(), y) if a < 1 else _zero(y)
    loss = a * t * t * kl_adv + (1 - a) * ce
    return {"loss": loss, "kl_adv": kl_adv.detach(), "ce": ce.detach()}


# --- RSLAD (Zi et al., ICCV 2021) ----------------------------------------------------------------

class RsladParams(BaseModel):
    """RSLAD (Zi et al. 2021): robust soft labels T(x) in both terms and the inner max."""

    model_config = STRICT
    name: Literal["rslad"] = "rslad"
    alpha: float = Field(5 / 6, ge=0, le=1, description="weight of KL(S(x*) ‖ T(x)); 1 − α goes "
                         "to KL(S(x) ‖ T(x)) (paper value 5/6)")
    kl_reduction: KlReduction = Field("batchmean", description=_RED_DOC)


def rslad_loss(passes: Passes, y: torch.Tensor, params: dict[str, Any], state: dict[str, Any]
               ) -> Out:
    """L = α·KL(S(x*) ‖ T(x)) + (1 − α)·KL(S(x) ‖ T(x)), α = 5/6 (RSLAD)."""
    a, red, t_nat = params["alpha"], params["kl_reduction"], passes.rt_nat()
    kl_adv = _kl(passes.s_adv(), t_nat, red) if a > 0 else _zero(y)
    kl_nat = _kl(passes.s_nat(), t_nat, red) if a < 1 else _zero(y)
    return {"loss": a * kl_adv + (1 - a) * kl_nat, "kl_adv": kl_adv.detach(),
            "kl_nat": kl_nat.detach()}


# --- MTARD (Zhao et al., ECCV 2022) --------------------------------------------------------------

class MtardParams(BaseModel):
    """MTARD (Zhao et al. 2022): clean and robust teachers, adaptive normalised weights."""

    model_config = STRICT
    name: Literal["mtard"] = "mtard"
    weight_lr: float = Field(0.025, gt=0, le=1, description="step η of the weights toward the "
                             "normalised relative losses (paper/released code value 0.025)")
    weight_lr_milestones: list[Epoch] = Field(
        [215, 260, 285], description="epochs (counted from 0) from which η is multiplied by "
        "0.1, as the released code does with the student LR at 215/260/285 of 300 epochs")
    kl_reduction: KlReduction = Field("batchmean", description=_RED_DOC)


def _mtard_at_epoch(params: dict[str, Any], epoch: int) -> dict[str, Any]:
    decays = sum(epoch >= m for m in params["weight_lr_milestones"])
    return {**params, "weight_lr": params["weight_lr"] * 0.1 ** decays}


def _mtard_state() -> dict[str, Any]:
    # Initial losses 0.0 = "not yet seen" (a zero KL cannot serve as a normaliser anyway).
    return {"w_nat": 0.5, "w_adv": 0.5, "l0_nat": 0.0, "l0_adv": 0.0}


def mtard_loss(passes: Passes, y: torch.Tensor, params: dict[str, Any], state: dict[str, Any]
               ) -> Out:
    """L = w_nat·KL(S(x) ‖ T_clean(x)) + w_adv·KL(S(x*) ‖ T_robust(x*)) (MTARD Adaptive
    Normalization Loss). Each step: r = l/l0 per term, w ← w − η·(w − r/(r_nat + r_adv)),
    applied before the loss as in the released code; w_nat + w_adv = 1 throughout."""
    red = params["kl_reduction"]
    kl_nat = _kl(passes.s_nat(), passes.t_nat(), red)
    kl_adv = _kl(passes.s_adv(), passes.rt_adv(), red)
    l_nat, l_adv = kl_nat.item(), kl_adv.item()
    if math.isfinite(l_nat) and math.isfinite(l_adv):
        if state["l0_nat"] <= 0:
            state["l0_nat"] = l_nat
        if state["l0_adv"] <= 0:
            state["l0_adv"] = l_adv
        if state["l0_nat"] > 0 and state["l0_adv"] > 0:
            r_nat, r_adv = l_nat / state["l0_nat"], l_adv / state["l0_adv"]
            if r_nat + r_adv > 0:
                w_nat = state["w_nat"]
                w_nat -= params["weight_lr"] * (w_nat - r_nat / (r_nat + r_adv))
                state["w_nat"], state["w_adv"] = w_nat, 1.0 - w_nat
    w_nat, w_adv = state["w_nat"], state["w_adv"]
    return {"loss": w_nat * kl_nat + w_adv * kl_adv, "kl_nat": kl_nat.detach(),
            "kl_adv": kl_adv.detach(), "w_nat": torch.tensor(w_nat),
            "w_adv": torch.tensor(w_adv)}


# --- AdaAD (Huang et al., CVPR 2023) -------------------------------------------------------------

class AdaadParams(BaseModel):
    """AdaAD (Huang et al. 2023, Eq. 9 inner, Eq. 11 outer)."""

    model_config = STRICT
    name: Literal["adaad"] = "adaad"
    alpha: float = Field(1.0, ge=0, le=1, description="weight α of KL(S(x*) ‖ T(x*)); 1 − α goes "
                         "to KL(S(x) ‖ T(x)) (paper value 1.0)")
    temp: float = Field(1.0, gt=0, description="temperature τ of the adversarial term, both "
                        "sides, no τ² factor (Eq. 11; paper/released code value 1)")
    kl_reduction: KlReduction = Field("batchmean", description=_RED_DOC)


def adaad_loss(passes: Passes, y: torch.Tensor, params: dict[str, Any], state: dict[str, Any]
               ) -> Out:
    """L = α·KL(S^τ(x*) ‖ T^τ(x*)) + (1 − α)·KL(S(x) ‖ T(x)), T = robust teacher (AdaAD Eq. 11).
    With the paper's α = 1 the clean term and its passes are skipped."""
    a, red = params["alpha"], params["kl_reduction"]
    kl_adv = _kl(passes.s_adv(), passes.rt_adv(), red, params["temp"]) if a > 0 else _zero(y)
    kl_nat = _kl(passes.s_nat(), passes.rt_nat(), red) if a < 1 else _zero(y)
    return {"loss": a * kl_adv + (1 - a) * kl_nat, "kl_adv": kl_adv.detach(),
            "kl_nat": kl_nat.detach()}


ARD = Method(
    name="ard", params=ArdParams, objective="ce", loss=ard_loss, teachers=("robust",),
    summary="ARD (Goldblum et al., AAAI 2020): α·T²·KL(s(x*)/T‖t'(x)/T) + (1−α)·CE(s(x), y)",
)
RSLAD = Method(
    name="rslad", params=RsladParams, objective="kl_robust_teacher_nat", loss=rslad_loss,
    teachers=("robust",),
    summary="RSLAD (Zi et al., ICCV 2021): 5/6·KL(s(x*)‖t'(x)) + 1/6·KL(s(x)‖t'(x))",
)
MTARD = Method(
    name="mtard", params=MtardParams, objective="ce", loss=mtard_loss, init_state=_mtard_state,
    teachers=("clean", "robust"), at_epoch=_mtard_at_epoch,
    summary="MTARD (Zhao et al., ECCV 2022): w_nat·KL(s(x)‖t(x)) + w_adv·KL(s(x*)‖t'(x*)), "
            "adaptive weights",
)
ADAAD = Method(
    name="adaad", params=AdaadParams, objective="kl_robust_teacher", loss=adaad_loss,
    teachers=("robust",),
    summary="AdaAD (Huang et al., CVPR 2023): α·KL(s(x*)‖t'(x*)) + (1−α)·KL(s(x)‖t'(x))",
)
