"""Distillation methods as registry entries: params model, inner-max objective, loss function.

A loss function has the signature ``loss(passes, y, params, state) -> dict`` and returns at least
``"loss"`` (the student loss); ``"teacher_loss"`` when the robust teacher is trained (ITT).
``state`` holds per-run mutable values (e.g. adaptive temperatures) and is checkpointed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ablate.core.losses import auto_lambda, kl, push_loss, soft_targets, update_temperatures

if TYPE_CHECKING:
    from ablate.core.step import Passes

LossFn = Callable[["Passes", torch.Tensor, dict[str, Any], dict[str, Any]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Method:
    """A distillation method: one PGD loop, its own objective and loss."""

    name: str
    params: type[BaseModel]
    objective: str
    loss: LossFn
    init_state: Callable[[], dict[str, Any]] = field(default=dict)
    summary: str = ""  # one line for ``ablate methods``: the paper and its outer loss
    teachers: tuple[str, ...] = ()  # which teachers the loss reads: "clean", "robust"
    itt: bool = False  # whether the loss returns "teacher_loss" (Iterative Teacher Training)


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


class CiardParams(BaseModel):
    """CIARD loss knobs (Eq. 7, Alg. 1). Defaults are the paper's; switches select the code's."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["ciard"] = "ciard"
    alpha: float = Field(0.5, ge=0, description="weight of KL(s(x) ‖ t(x)), clean knowledge")
    beta: float = Field(0.5, ge=0, description="weight of KL(s(x*) ‖ t'(x*)), robust knowledge")
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
    temp_min: float = Field(1.0, gt=0, description="lower clip of adaptive temperatures")
    temp_max: float = Field(10.0, gt=0, description="upper clip of adaptive temperatures")
    kl_reduction: Literal["batchmean", "mean"] = Field(
        "batchmean", description="KL averaging: per sample (batchmean) or per entry "
        "(mean, released code: 1/num_classes as large)")

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
    return {"tau_adv": 1.0, "tau_nat": 1.0}


def ciard_loss(
    passes: Passes, y: torch.Tensor, params: dict[str, Any], state: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """L = α·KL(s(x) ‖ t(x)) + β·KL(s(x*) ‖ t'(x*)) − λ·Push(s(x*), t(x*), y)   (Eq. 7);
    teacher_loss = CE(t'(x*), y) (Eq. 8), used by the step only while ITT is on."""
    p = params
    red = p["kl_reduction"]
    zero = torch.zeros((), device=y.device)
    use_push = p["push"] and p["lam"] != 0
    use_clean = p["alpha"] > 0 or p["adaptive_temps"]
    if use_clean and use_push:
        passes.t_both()  # one concatenated clean-teacher batch instead of two
    tau_adv, tau_nat = state.get("tau_adv", 1.0), state.get("tau_nat", 1.0)

    kl_clean = kl(passes.s_nat(), soft_targets(passes.t_nat(), tau_nat), reduction=red) \
        if p["alpha"] > 0 else zero
    rt_adv = passes.rt_adv() if (p["beta"] > 0 or passes.update_teacher) else None
    kl_robust = kl(passes.s_adv(), soft_targets(rt_adv, tau_adv), reduction=red) \
        if p["beta"] > 0 else zero
    loss = p["alpha"] * kl_clean + p["beta"] * kl_robust
    out = {"kl_clean": kl_clean.detach(), "kl_robust": kl_robust.detach()}

    push, lam = zero, 0.0
    if use_push:
        push = push_loss(passes.s_adv(), passes.t_adv(), y, student_temp=p["push_student_temp"],
                         teacher_temp=p["push_teacher_temp"], reduction=red)
        lam = p["lam"]
        if lam == "auto":
            lam = auto_lambda(kl_clean.item(), kl_robust.item(), push.item())
        loss = loss - lam * push
    out.update(loss=loss, push=push.detach(), lam=torch.tensor(float(lam)))

    if p["adaptive_temps"] and rt_adv is not None:
        state["tau_adv"], state["tau_nat"] = update_temperatures(
            tau_adv, tau_nat, rt_adv, passes.t_nat(),
            lr=p["temp_lr"], low=p["temp_min"], high=p["temp_max"])
    if passes.update_teacher and rt_adv is not None:
        out["teacher_loss"] = F.cross_entropy(rt_adv, y)
    return out


CIARD = register_method(
    Method(name="ciard", params=CiardParams, objective="kl_clean_teacher", loss=ciard_loss,
           init_state=_ciard_state, teachers=("clean", "robust"), itt=True,
           summary="CIARD (ICCV 2025): α·KL(s(x)‖t(x)) + β·KL(s(x*)‖t'(x*)) − λ·Push; ITT")
)

# The comparison methods of SPEC §4 register themselves on import.
from ablate.core import baselines  # noqa: E402, F401
