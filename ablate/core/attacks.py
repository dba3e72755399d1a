"""One L∞ PGD loop; methods differ only in the objective it maximises (docs/ciard.md).

An objective factory takes ``(student, clean_teacher, x, y, robust_teacher)`` and returns a
function of the perturbed input ``x_adv`` giving the scalar to maximise. Callers put the models in
eval mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

Objective = Callable[[torch.Tensor], torch.Tensor]
ObjectiveFactory = Callable[..., Objective]  # (student, clean_teacher, x, y, robust_teacher)
Start = Literal["normal", "uniform", "uniform_unclamped", "none"]

OBJECTIVES: dict[str, ObjectiveFactory] = {}


def register_objective(name: str) -> Callable[[ObjectiveFactory], ObjectiveFactory]:
    def deco(factory: ObjectiveFactory) -> ObjectiveFactory:
        if name in OBJECTIVES:
            raise ValueError(f"attack objective {name!r} is already registered")
        OBJECTIVES[name] = factory
        return factory

    return deco


@register_objective("ce")
def ce_objective(
    student: nn.Module, clean_teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
    robust_teacher: nn.Module | None = None,
) -> Objective:
    """CE(s(x+δ), y) on the student alone (released code, Eq. 5)."""
    return lambda x_adv: F.cross_entropy(student(x_adv).float(), y)


def _needs(model: nn.Module | None, objective: str, role: str) -> nn.Module:
    if model is None:
        raise ValueError(f"attack objective {objective!r} needs a {role}")
    return model


def _joint_kl(student: nn.Module, teacher: nn.Module, detach_teacher: bool = False
              ) -> Objective:
    """KL(s(x+δ) ‖ t(x+δ)), gradients through both models (or the student only)."""

    def objective(x_adv: torch.Tensor) -> torch.Tensor:
        log_ps = F.log_softmax(student(x_adv).float(), dim=1)
        log_pt = F.log_softmax(teacher(x_adv).float(), dim=1)
        if detach_teacher:
            log_pt = log_pt.detach()
        return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)

    return objective


def _fixed_target_kl(student: nn.Module, target: nn.Module, x: torch.Tensor) -> Objective:
    """KL(s(x+δ) ‖ target(x)), the target computed once on the clean input, without grad."""
    with torch.no_grad():
        p_target = F.softmax(target(x).float(), dim=1)
    return lambda x_adv: F.kl_div(F.log_softmax(student(x_adv).float(), dim=1), p_target,
                                  reduction="batchmean")


@register_objective("kl_clean_teacher")
def kl_clean_teacher_objective(
    student: nn.Module, clean_teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
    robust_teacher: nn.Module | None = None,
) -> Objective:
    """KL(s(x+δ) ‖ t(x+δ)), student and clean teacher both on the perturbed input (Eq. 6).

    Gradients flow through both models ("jointly considers both", §3.2), as in AdaAD's inner
    maximisation. The ascent can move the teacher towards the student as well as away, so x*
    ends up where the two agree: the clean teacher is rarely wrong on it and the push set J is
    small (digits: empty in every batch of the first two epochs, 15% of samples over 12).
    """
    return _joint_kl(student, _needs(clean_teacher, "kl_clean_teacher", "clean teacher"))


@register_objective("kl_clean_teacher_detached")
def kl_clean_teacher_detached_objective(
    student: nn.Module, clean_teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
    robust_teacher: nn.Module | None = None,
) -> Objective:
    """KL(s(x+δ) ‖ t(x+δ)) with the clean teacher's output as a stop-gradient target (Eq. 6
    read with t fixed): x* only moves the student away from t, so t keeps making its own
    mistakes on x* and the push set J stays populated."""
    teacher = _needs(clean_teacher, "kl_clean_teacher_detached", "clean teacher")
    return _joint_kl(student, teacher, detach_teacher=True)


@register_objective("trades_kl")
def trades_kl_objective(
    student: nn.Module, clean_teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
    robust_teacher: nn.Module | None = None,
) -> Objective:
    """KL(s(x+δ) ‖ s(x)) with s(x) a fixed target, computed once (TRADES, Zhang et al. 2019)."""
    return _fixed_target_kl(student, student, x)


@register_objective("kl_robust_teacher_nat")
def kl_robust_teacher_nat_objective(
    student: nn.Module, clean_teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
    robust_teacher: nn.Module | None = None,
) -> Objective:
    """KL(s(x+δ) ‖ t'(x)), robust teacher on the clean input as a fixed target (RSLAD)."""
    teacher = _needs(robust_teacher, "kl_robust_teacher_nat", "robust teacher")
    return _fixed_target_kl(student, teacher, x)


@register_objective("kl_robust_teacher")
def kl_robust_teacher_objective(
    student: nn.Module, clean_teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
    robust_teacher: nn.Module | None = None,
) -> Objective:
    """KL(s(x+δ) ‖ t'(x+δ)), gradients through student and robust teacher (AdaAD Eq. 9)."""
    return _joint_kl(student, _needs(robust_teacher, "kl_robust_teacher", "robust teacher"))


def random_start(x: torch.Tensor, eps: float, start: Start, sigma: float = 1e-3) -> torch.Tensor:
    """Starting point: x + σ·N(0, I), uniform in the ε-ball (clamped to [0, 1], or not), or x.

    The normal start is returned unclamped: the released codes (CIARD, RSLAD, MTARD, TRADES,
    AdaAD) take the first gradient there, and every PGD step projects afterwards. So does
    ARD's code with its uniform start (``uniform_unclamped``); Madry's clips it first.
    """
    if start == "normal":
        return x + sigma * torch.randn_like(x)
    if start == "uniform_unclamped":
        return x + torch.empty_like(x).uniform_(-eps, eps)
    if start == "uniform":
        x0 = x + torch.empty_like(x).uniform_(-eps, eps)
    elif start == "none":
        x0 = x.clone()
    else:
        raise ValueError(f"unknown PGD start {start!r}")
    return project(x0, x, eps)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the ε-ball around x, then onto the image box [0, 1]."""
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)


def pgd(
    objective: Objective,
    x: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    start: Start = "uniform",
    sigma: float = 1e-3,
) -> torch.Tensor:
    """Signed-gradient ascent on ``objective`` inside the ε-ball and [0, 1]; returns x* detached.

    Gradients are taken with respect to the input only, so no parameter ``.grad`` is touched.
    x* stays fp32 under autocast: objectives read fp32 logits, and the step and projection
    are done on the fp32 input.
    """
    x = x.detach()
    x_adv = random_start(x, eps, start, sigma).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = objective(x_adv)
            (grad,) = torch.autograd.grad(loss, [x_adv])
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps).detach()
    return project(x_adv, x, eps)  # a no-op after a step; places a 0-step normal start


def attack(
    objective: str,
    student: nn.Module,
    clean_teacher: nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    robust_teacher: nn.Module | None = None,
    **pgd_kwargs: float | int | str,
) -> torch.Tensor:
    """Run PGD with a registered objective by name."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown attack objective {objective!r}; known: {sorted(OBJECTIVES)}")
    factory = OBJECTIVES[objective]
    return pgd(factory(student, clean_teacher, x, y, robust_teacher), x, **pgd_kwargs)
