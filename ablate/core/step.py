"""One training step: inner maximisation, only the forward passes the loss asks for, SGD updates.

The step is method-agnostic: a method's loss pulls passes from
:class:`~ablate.core.passes.Passes`, which runs each one at most once and only when asked
(docs/ciard.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from ablate.core.attacks import attack
from ablate.core.compute import Amp, autocast
from ablate.core.igdm import igdm_term
from ablate.core.methods import get_method
from ablate.core.methods.base import WEIGHT
from ablate.core.passes import Passes


class Divergence:
    """The first non-finite loss of the steps it watched, kept on the device: :meth:`check`
    reads it (one host read) every few steps and at the end of an epoch, instead of every step
    reading its loss. Steps after a non-finite one still update the weights, so a trainer
    checks before it validates or saves a checkpoint."""

    def __init__(self, device: torch.device | str) -> None:
        self.value = torch.zeros((), device=device)

    def reset(self) -> None:
        self.value.zero_()

    def watch(self, loss: torch.Tensor) -> None:
        # In place: a captured step (ablate.core.graphs) writes the same tensor every replay.
        self.value.copy_(torch.where(torch.isfinite(self.value), loss.detach().float(),
                                     self.value))

    def check(self, method: str) -> None:
        self.check_now(self.value, method)

    @staticmethod
    def check_now(loss: torch.Tensor, method: str) -> None:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{method} loss is not finite ({value})")


class StepMeans:
    """The epoch means of the steps' outputs, summed where they are (float64 on the device)
    and read back once: Σ w·v / Σ w per key, w the batch weight (``key + WEIGHT``, else 1); a
    key whose weights sum to 0 (no batch had the term) is left out."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.weights: dict[str, torch.Tensor | float] = {}

    def add(self, out: dict[str, torch.Tensor | float]) -> None:
        for k, v in out.items():
            if k.endswith(WEIGHT):
                continue
            w = out.get(k + WEIGHT, 1.0)
            if isinstance(v, torch.Tensor):
                v = v.double()
                if isinstance(w, torch.Tensor):  # masked, not multiplied: 0·NaN would be NaN
                    v, w = torch.where(w > 0, v, 0.0), w.double()
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.weights[k] = self.weights.get(k, 0.0) + w

    def read(self) -> dict[str, float]:
        """The means (one host read for all of them)."""
        keys = list(self.sums)
        values = [*(self.sums[k] for k in keys), *(self.weights[k] for k in keys)]
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if tensors:
            read = iter(torch.stack([t.to(tensors[0].device) for t in tensors]).tolist())
            values = [next(read) if isinstance(v, torch.Tensor) else v for v in values]
        n = len(keys)
        return {k: values[i] / values[n + i] for i, k in enumerate(keys) if values[n + i] > 0}


def train_step(**kw: Any) -> dict[str, float]:
    """:func:`step_tensors`, its loss checked before any update (a non-finite loss raises
    ``FloatingPointError`` and nothing is stepped), its outputs as floats; a term whose batch
    weight is 0 (:data:`~ablate.core.methods.base.WEIGHT`) is left out, as it was not reported.
    One host read per output: for tests and benchmarks; the trainer uses :func:`step_tensors`."""
    out = step_tensors(**kw)
    return {k: float(v) for k, v in out.items()
            if not k.endswith(WEIGHT) and float(out.get(k + WEIGHT, 1.0)) > 0}


def step_tensors(
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
    divergence: Divergence | None = None,
) -> dict[str, torch.Tensor | float]:
    """Run one step of ``method`` on the batch (x, y); returns the loss terms as detached
    tensors on the device, with their batch weights (``key + WEIGHT``), and ``passes``.

    Nothing is read back to the host (no ``.item()``, no Python branch on a tensor): with
    ``divergence`` the loss's finiteness is recorded there for the caller to check every few
    steps; without, it is checked here, before any update (one host read).

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
    if divergence is not None:
        divergence.watch(total)
    else:
        Divergence.check_now(total, method)
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
    metrics: dict[str, torch.Tensor | float] = {k: v.detach() for k, v in out.items()}
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
