"""Adversarial distillation from robust (and clean) teachers, the methods CIARD is compared with
(docs/methods.md): ARD, RSLAD, MTARD and AdaAD as registry entries.

KL(a ‖ b) follows ``losses.kl``: b is the detached target. ``kl_reduction``: the papers' KL is
per sample (batchmean); the released ARD/RSLAD/MTARD/AdaAD code averages over entries
(``nn.KLDivLoss()`` / ``torch.mean``), which makes each KL term 1/C as large.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ablate.core.catalog import AdaadParams, ArdParams, MtardParams, RsladParams
from ablate.core.losses import Reduction, kl, soft_targets
from ablate.core.methods.base import Method, Out

if TYPE_CHECKING:
    from ablate.core.passes import Passes



def _kl(student: torch.Tensor, teacher: torch.Tensor, red: Reduction, temp: float = 1.0,
        eps: float = 0.0) -> torch.Tensor:
    """KL(softmax(s/τ) ‖ softmax(t/τ)), teacher detached; ``eps``: the released code's
    p·log(p + eps) (RSLAD, MTARD: 1e-5)."""
    return kl(student, soft_targets(teacher, temp), student_temp=temp, reduction=red,
              log_eps=eps)


def _zero(y: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), device=y.device)


# --- ARD (Goldblum et al., AAAI 2020) ------------------------------------------------------------

def ard_loss(passes: Passes, y: torch.Tensor, params: dict[str, Any], state: dict[str, Any]
             ) -> Out:
    """L = α·T²·KL(S(x*)/T ‖ T(x)/T) + (1 − α)·CE(S(x), y), T = robust teacher on clean x (ARD).
    A term with weight 0 runs no passes, except S(x) with ``clean_pass`` (released code: its
    BatchNorm statistics); passes run in the released order S(x*), T(x), S(x)."""
    a, t = params["alpha"], params["temp"]
    kl_adv = _kl(passes.s_adv(), passes.rt_nat(), params["kl_reduction"], t) if a > 0 \
        else _zero(y)
    if a == 1 and params["clean_pass"]:
        passes.s_nat()
    ce = F.cross_entropy(passes.s_nat(), y) if a < 1 else _zero(y)
    loss = a * t * t * kl_adv + (1 - a) * ce
    return {"loss": loss, "kl_adv": kl_adv.detach(), "ce": ce.detach()}


# --- RSLAD (Zi et al., ICCV 2021) ----------------------------------------------------------------

def rslad_loss(passes: Passes, y: torch.Tensor, params: dict[str, Any], state: dict[str, Any]
               ) -> Out:
    """L = α·KL(S(x*) ‖ T(x)) + (1 − α)·KL(S(x) ‖ T(x)), α = 5/6 (RSLAD)."""
    a, red, eps, t_nat = params["alpha"], params["kl_reduction"], params["kl_eps"], passes.rt_nat()
    kl_adv = _kl(passes.s_adv(), t_nat, red, eps=eps) if a > 0 else _zero(y)
    kl_nat = _kl(passes.s_nat(), t_nat, red, eps=eps) if a < 1 else _zero(y)
    return {"loss": a * kl_adv + (1 - a) * kl_nat, "kl_adv": kl_adv.detach(),
            "kl_nat": kl_nat.detach()}


# --- MTARD (Zhao et al., ECCV 2022) --------------------------------------------------------------

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
    red, eps = params["kl_reduction"], params["kl_eps"]
    # S(x*) before S(x), as released: the BatchNorm running statistics end where its loop's do.
    kl_adv = _kl(passes.s_adv(), passes.rt_adv(), red, eps=eps)
    kl_nat = _kl(passes.s_nat(), passes.t_nat(), red, eps=eps)
    _mtard_update(state, kl_nat.detach().double(), kl_adv.detach().double(),
                  params["weight_lr"])
    w_nat, w_adv = state["w_nat"], state["w_adv"]
    # The weights in the KLs' dtype: Python floats multiply in float32 too (the loss unchanged).
    return {"loss": w_nat.to(kl_nat.dtype) * kl_nat + w_adv.to(kl_adv.dtype) * kl_adv,
            "kl_nat": kl_nat.detach(), "kl_adv": kl_adv.detach(), "w_nat": w_nat,
            "w_adv": w_adv}


def _mtard_update(state: dict[str, Any], l_nat: torch.Tensor, l_adv: torch.Tensor,
                  lr: float) -> None:
    """The released rule on the device (0-dim float64 tensors, Python's float arithmetic, no
    host read): the first finite losses become l0; then, with both l0 > 0 and r_nat + r_adv > 0,
    w_nat ← w_nat − η·(w_nat − r_nat/(r_nat + r_adv)) and w_adv = 1 − w_nat."""
    s = {k: torch.as_tensor(state[k], dtype=torch.float64, device=l_nat.device)
         for k in ("w_nat", "w_adv", "l0_nat", "l0_adv")}
    finite = torch.isfinite(l_nat) & torch.isfinite(l_adv)
    l0_nat = torch.where(finite & (s["l0_nat"] <= 0), l_nat, s["l0_nat"])
    l0_adv = torch.where(finite & (s["l0_adv"] <= 0), l_adv, s["l0_adv"])
    r_nat, r_adv = l_nat / l0_nat, l_adv / l0_adv  # used only where both l0 > 0
    move = finite & (l0_nat > 0) & (l0_adv > 0) & (r_nat + r_adv > 0)
    w = s["w_nat"]
    w_nat = torch.where(move, w - lr * (w - r_nat / (r_nat + r_adv)), w)
    state.update(l0_nat=l0_nat, l0_adv=l0_adv, w_nat=w_nat,
                 w_adv=torch.where(move, 1.0 - w_nat, s["w_adv"]))


# --- AdaAD (Huang et al., CVPR 2023) -------------------------------------------------------------

def adaad_loss(passes: Passes, y: torch.Tensor, params: dict[str, Any], state: dict[str, Any]
               ) -> Out:
    """L = α·KL(S^τ(x*) ‖ T^τ(x*)) + (1 − α)·KL(S(x) ‖ T(x)), T = robust teacher (AdaAD Eq. 11).
    With the paper's α = 1 the clean term and its passes are skipped, except S(x) with
    ``clean_pass`` (released code: its BatchNorm statistics). S(x) runs before S(x*), in the
    released order: the running statistics end where the released loop leaves them."""
    a, red = params["alpha"], params["kl_reduction"]
    if a < 1 or params["clean_pass"]:
        passes.s_nat()
    kl_adv = _kl(passes.s_adv(), passes.rt_adv(), red, params["temp"]) if a > 0 else _zero(y)
    kl_nat = _kl(passes.s_nat(), passes.rt_nat(), red) if a < 1 else _zero(y)
    return {"loss": a * kl_adv + (1 - a) * kl_nat, "kl_adv": kl_adv.detach(),
            "kl_nat": kl_nat.detach()}


ARD = Method(params=ArdParams, loss=ard_loss)
RSLAD = Method(params=RsladParams, loss=rslad_loss)
MTARD = Method(params=MtardParams, loss=mtard_loss, init_state=_mtard_state,
               at_epoch=_mtard_at_epoch)
ADAAD = Method(params=AdaadParams, loss=adaad_loss)
