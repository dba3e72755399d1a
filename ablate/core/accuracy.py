"""Per-epoch validation and final test evaluation (docs/evaluation.md).

Robust accuracy is PGD with CE on the student, uniform start. The teachers' "robust" accuracy is
measured on the *student's* adversarial examples, as in the released code and the paper's Fig. 3
(which is why a frozen clean teacher's robust accuracy can move during training).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from ablate.core.attacks import attack
from ablate.core.data import Split


@contextmanager
def eval_mode(*models: nn.Module | None) -> Iterator[None]:
    """Put models in eval mode and restore their previous modes afterwards."""
    live = [m for m in models if m is not None]
    modes = [m.training for m in live]
    for m in live:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(live, modes, strict=True):
            m.train(mode)


@torch.no_grad()
def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> int:
    """Number of samples the model classifies correctly."""
    hits = 0
    for i in range(0, len(x), batch_size):
        hits += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return hits


def pgd_examples(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
    steps: int, start: str = "uniform", batch_size: int = 512,
) -> torch.Tensor:
    """White-box PGD-k (CE objective) examples against ``model``, in batches."""
    chunks = [
        attack("ce", model, None, x[i:i + batch_size], y[i:i + batch_size],
               eps=eps, step_size=step_size, steps=steps, start=start)
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(chunks) if chunks else x


def evaluate(
    student: nn.Module,
    split: Split,
    *,
    eps: float,
    step_size: float,
    steps: int,
    w: float = 0.5,
    clean_teacher: nn.Module | None = None,
    robust_teacher: nn.Module | None = None,
    batch_size: int = 512,
    known: dict[str, float] | None = None,
) -> dict[str, float]:
    """Clean, PGD-k robust and W accuracy (in [0, 1]) of the student, plus the teachers'.
    ``known``: teacher accuracies that cannot have changed since they were measured (a frozen
    teacher's clean accuracy), taken as they are instead of measured again."""
    n, x = max(len(split), 1), split.x  # x: converted to float once
    known = known or {}
    with eval_mode(student, clean_teacher, robust_teacher):
        x_adv = pgd_examples(student, x, split.y, eps=eps, step_size=step_size,
                             steps=steps, batch_size=batch_size)
        out = {
            "clean_acc": correct(student, x, split.y, batch_size) / n,
            "robust_acc": correct(student, x_adv, split.y, batch_size) / n,
        }
        for name, model in (("clean_teacher", clean_teacher), ("robust_teacher", robust_teacher)):
            if model is not None:
                key = f"{name}_clean_acc"
                out[key] = known[key] if key in known else correct(model, x, split.y,
                                                                   batch_size) / n
                out[f"{name}_robust_acc"] = correct(model, x_adv, split.y, batch_size) / n
    out["w_acc"] = w * out["clean_acc"] + (1 - w) * out["robust_acc"]
    return out
