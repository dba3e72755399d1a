"""One training step: inner maximisation, only the forward passes the loss asks for, SGD updates.

The step is method-agnostic: a method's loss pulls passes from
:class:`~ablate.core.passes.Passes`, which runs each one at most once and only when asked
(docs/ciard.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ablate.core.attacks import attack
from ablate.core.compute import Amp, autocast
from ablate.core.igdm import igdm_term
from ablate.core.methods import get_method
from ablate.core.passes import Passes


def train_step(
    *,
    method: str,
    params: dict[str, Any],
    state: dict[str, Any],
    student: nn.Module,
    clean_teacher: nn.Module | None,
    robust_teacher: nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    teacher_optimizer: torch.optim.Optimizer | None = None,
    update_teacher: bool = False,
    teacher_bn: str = "train",
    frozen_teacher_bn: str = "eval",
    objective: str | None = None,
    eps: float,
    step_size: float,
    steps: int,
    start: str = "normal",
    student_mode: str = "eval",
    clean_pass_first: bool = False,
    igdm: dict[str, Any] | None = None,
    amp: Amp = "none",
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """Run one step of ``method`` on the batch (x, y); returns the loss terms as floats.

    ``state`` is the method's mutable per-run state (e.g. adaptive temperatures), updated in place.
    ``igdm`` (weight, beta, gamma, distance) adds the IGDM term to any method's loss (IGDM Eq. 9).
    The robust teacher receives gradients only when ``update_teacher`` is true; its BatchNorm
    mode is ``teacher_bn`` while it is updated and ``frozen_teacher_bn`` before (``train`` as in
    the released code: batch statistics, running statistics updated, weights untouched).
    ``student_mode`` is the student's mode while x* is crafted (ARD and Madry's code: train);
    ``clean_pass_first`` runs s(x) before the attack, as the released CIARD code does, so the
    eval-mode attack sees BatchNorm statistics that include the current batch. ``amp`` runs the
    model calls of the attack and the loss in bf16/fp16 (:mod:`ablate.core.compute`); fp16
    backpropagates through ``scaler``.
    """
    spec = get_method(method)
    update_teacher = update_teacher and spec.itt  # only ITT methods ever train the teacher
    for model in (clean_teacher, robust_teacher):
        if model is not None:
            model.eval()
    passes = Passes(student=student, clean_teacher=clean_teacher, robust_teacher=robust_teacher,
                    x=x, update_teacher=update_teacher)
    with autocast(x.device, amp):
        if clean_pass_first:
            student.train()
            passes.s_nat()
        student.train(student_mode == "train")
        passes.x_adv = attack(
            objective or spec.objective, student, clean_teacher, x, y,
            robust_teacher=robust_teacher, eps=eps, step_size=step_size, steps=steps, start=start,
        )
        student.train()
        if spec.itt and robust_teacher is not None:
            robust_teacher.train((teacher_bn if update_teacher else frozen_teacher_bn) == "train")
        out = spec.loss(passes, y, params, state)
        if igdm is not None and igdm["weight"] > 0:
            term = igdm_term(passes, beta=igdm["beta"], gamma=igdm["gamma"],
                             distance=igdm["distance"])
            out["igdm"] = term.detach()
            out["loss"] = out["loss"] + igdm["weight"] * term
    total = out["loss"]
    if not torch.isfinite(total):
        raise FloatingPointError(f"{method} loss is not finite ({total.item()})")
    optimizer.zero_grad(set_to_none=True)
    optimizers = [optimizer]
    if update_teacher and "teacher_loss" in out:
        assert teacher_optimizer is not None, "update_teacher needs a teacher optimizer"
        teacher_optimizer.zero_grad(set_to_none=True)
        optimizers.append(teacher_optimizer)
        # The two graphs are disjoint (student targets are detached), so one backward serves both.
        total = total + out["teacher_loss"]
    _backward_and_step(total, optimizers, scaler)
    if robust_teacher is not None:
        robust_teacher.eval()
    metrics = {k: float(v.detach()) for k, v in out.items()}
    metrics["passes"] = float(passes.count)  # model calls, for benchmarks and tests
    return metrics


def _backward_and_step(loss: torch.Tensor, optimizers: list[torch.optim.Optimizer],
                       scaler: torch.amp.GradScaler | None) -> None:
    if scaler is None:
        loss.backward()
        for opt in optimizers:
            opt.step()
        return
    scaler.scale(loss).backward()
    for opt in optimizers:
        scaler.step(opt)  # skipped when the scaled gradients overflowed
    scaler.update()
