"""Memoised forward passes of the student and teachers on one batch, the only way a method's
loss (and the IGDM add-on) reaches the models (docs/ciard.md)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn


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

    def _memo(self, key: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key not in self._cache:
            self.count += 1
            # Logits in fp32 whatever autocast computed them in: losses reduce in fp32.
            self._cache[key] = fn().float()
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
        return self._memo("rt_nat", lambda: self._no_grad(self._robust(), self.x))

    def rt_adv(self) -> torch.Tensor:
        """Robust teacher logits on x*, t'(x*); with grad only while ITT updates it."""
        teacher = self._robust()
        if self.update_teacher:
            return self._memo("rt_adv", lambda: teacher(self.x_adv))
        return self._memo("rt_adv", lambda: self._no_grad(teacher, self.x_adv))

    def s_on(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Student logits on another input of the batch (e.g. IGDM's x + c·δ), with grad,
        memoised as ``s_<name>``: one name per input within a step."""
        return self._memo(f"s_{name}", lambda: self.student(x))

    def rt_on(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Robust teacher logits on another input, no grad even under ITT (they are targets),
        memoised as ``rt_<name>``."""
        teacher = self._robust()
        return self._memo(f"rt_{name}", lambda: self._no_grad(teacher, x))

    def _teacher(self) -> nn.Module:
        if self.clean_teacher is None:
            raise ValueError("this method needs a clean teacher")
        return self.clean_teacher

    def _robust(self) -> nn.Module:
        if self.robust_teacher is None:
            raise ValueError("this method needs a robust teacher")
        return self.robust_teacher

    @staticmethod
    def _no_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)
