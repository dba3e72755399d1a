"""One training step: inner maximisation, only the forward passes the loss asks for, SGD updates.

The step is method-agnostic: a method's loss pulls passes from :class:`Passes`, which runs each
one at most once and only when asked (SPEC §2.2, §7).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ablate.core.attacks import attack
from ablate.core.baselines import igdm_term
from ablate.core.methods import METHODS


class Passes:
    """Memoised forward passes of the three models on x and x*.

    Student passes run in train mode with grad; clean-teacher passes without grad; the robust
    teacher on x* carries grad only while it is being updated (ITT). Each pass runs on its own
    batch: t(x) and t(x*) in one concatenated batch would differ from separate passes by ~1e-6
    (other conv kernels), so switching the push term on would change t(x) even where the push
    set is empty, and a row whose push term never acted would not equal its "w/o push" row.
    """

    def __init__(
        self,
        *,
        student: nn.Module,
        clean_teacher: nn.Module | None,
        robust_teacher: nn.Module | None,
        x: torch.Tensor,
        x_adv: torch.Tensor | None = None,
        update_teacher: bool,
    ) -> None:
        self.student, self.clean_teacher = student, clean_teacher
        self.robust_teacher = robust_teacher
        self.x, self.x_adv, self.update_teacher = x, x_adv, update_teacher
        self._cache: dict[str, torch.Tensor] = {}
        self.count = 0  # forward passes actually run (each model call on a batch counts once)

    @property
    def computed(self) -> list[str]:
        """Names of the passes run so far."""
        return sorted(self._cache)

    def _memo(self, key: str, fn: Any) -> torch.Tensor:
        if key not in self._cache:
            self.count += 1
            self._cache[key] = fn()
        return self._cache[key]

    def s_nat(self) -> torch.Tensor:
        """Student logits on clean inputs, s(x)."""
        return self._memo("s_nat", lambda: self.student(self.x))

    def s_adv(self) -> torch.Tensor:
        """Student logits on adversarial inputs, s(x*)."""
        return self._memo("s_adv", lambda: self.student(self.x_adv))

    def t_nat(self) -> torch.Tensor:
        """Clean teacher logits on x, t(x), no grad."""
        return self._memo("t_nat", lambda: self._no_grad(self._teacher(), self.x))

    def t_adv(self) -> torch.Tensor:
        """Clean teacher logits on x*, t(x*), no grad."""
        return self._memo("t_adv", lambda: self._no_grad(self._teacher(), self.x_adv))

    def rt_nat(self) -> torch.Tensor:
        """Robust teacher logits on clean inputs, t'(x), no grad (ARD, RSLAD, AdaAD's T(x))."""
        if self.robust_teacher is None:
            raise ValueError("this method needs a robust teacher")
        return self._memo("rt_nat", lambda: self._no_grad(self.robust_teacher, self.x))

    def rt_adv(self) -> torch.Tensor:
        """Robust teacher logits on x*, t'(x*); with grad only while ITT updates it."""
        if self.robust_teacher is None:
            raise ValueError("this method needs a robust teacher")
        if self.update_teacher:
            return self._memo("rt_adv", lambda: self.robust_teacher(self.x_adv))
        return self._memo("rt_adv", lambda: self._no_grad(self.robust_teacher, self.x_adv))

    def _teacher(self) -> nn.Module:
        if self.clean_teacher is None:
            raise ValueError("this method needs a clean teacher")
        return self.clean_teacher

    @staticmethod
    def _no_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)


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
) -> dict[str, float]:
    """Run one step of ``method`` on the batch (x, y); returns the loss terms as floats.

    ``state`` is the method's mutable per-run state (e.g. adaptive temperatures), updated in place.
    ``igdm`` (weight, beta, gamma, distance) adds the IGDM term to any method's loss (IGDM Eq. 9).
    The robust teacher receives gradients only when ``update_teacher`` is true; its BatchNorm
    mode is ``teacher_bn`` while it is updated and ``frozen_teacher_bn`` before (``train`` as in
    the released code: batch statistics, running statistics updated, weights untouched).
    ``student_mode`` is the student's mode while x* is crafted (ARD and Madry's code: train);
    ``clean_pass_first`` runs s(x) before the attack, as the released CIARD code does, so the
    eval-mode attack sees BatchNorm statistics that include the current batch.
    """
    spec = METHODS[method]
    update_teacher = update_teacher and spec.itt  # only ITT methods ever train the teacher
    for model in (clean_teacher, robust_teacher):
        if model is not None:
            model.eval()
    passes = Passes(student=student, clean_teacher=clean_teacher, robust_teacher=robust_teacher,
                    x=x, update_teacher=update_teacher)
    if clean_pass_first:
        student.train()
        passes.s_nat()
    student.train(student_mode == "train")
    passes.x_adv = attack(
        objective or spec.objective, student, clean_teacher, x, y, robust_teacher=robust_teacher,
        eps=eps, step_size=step_size, steps=steps, start=start,
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
    if update_teacher and "teacher_loss" in out:
        assert teacher_optimizer is not None, "update_teacher needs a teacher optimizer"
        teacher_optimizer.zero_grad(set_to_none=True)
        # The two graphs are disjoint (student targets are detached), so one backward serves both.
        (total + out["teacher_loss"]).backward()
        optimizer.step()
        teacher_optimizer.step()
    else:
        total.backward()
        optimizer.step()
    if robust_teacher is not None:
        robust_teacher.eval()
    metrics = {k: float(v.detach()) for k, v in out.items()}
    metrics["passes"] = float(passes.count)  # model calls, for benchmarks and tests
    return metrics
