"""Learning-rate schedules of the student and of the ITT teacher (epochs counted from 0)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Paper schedule: cosine from lr to lr_min over the epochs."""
    return lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))


def cosine_exp_lr(epoch: int, start: int, end: int, lr: float) -> float:
    """Released code's decay lr·(½ + ½cos(π p))·exp(−0.01 p²) with p = (e + 1 − start)/(end −
    start): the code counts epochs from 1, so 0-based epoch e is its epoch e + 1. Before
    ``start`` (p ≤ 0) the LR is ``lr``; the last epoch (p = 1) has LR 0."""
    p = (epoch + 1 - start) / max(end - start, 1)
    if p <= 0:
        return lr
    return lr * (0.5 + 0.5 * math.cos(math.pi * p)) * math.exp(-0.01 * p * p)


def step_lr(epoch: int, lr: float, milestones: Sequence[int], gamma: float) -> float:
    """Step decay: ×gamma from each milestone epoch (0-based) on, as torch's MultiStepLR."""
    return lr * gamma ** sum(epoch >= m for m in milestones)


def student_lr(schedule: str, epoch: int, epochs: int, lr: float, lr_min: float,
               milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """``cosine`` (paper), ``code`` (released CIARD code: constant for the first half, then
    cosine×exp down to 0) or ``step`` (the baselines' released recipes)."""
    if schedule == "cosine":
        return cosine_lr(epoch, epochs, lr, lr_min)
    if schedule == "step":
        return step_lr(epoch, lr, milestones, gamma)
    return cosine_exp_lr(epoch, epochs // 2, epochs, lr)


def teacher_lr(schedule: str, epoch: int, epochs: int, lr: float, freeze_epochs: int) -> float:
    """``constant`` (paper) or ``code`` (cosine×exp from the freeze epoch to the end)."""
    if schedule == "constant":
        return lr
    return cosine_exp_lr(epoch, freeze_epochs, epochs, lr)


