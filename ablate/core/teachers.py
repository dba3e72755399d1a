"""Teacher training: clean (CE) and robust (PGD-AT, Madry et al.) on an in-memory dataset."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.core.attacks import attack
from ablate.core.data import Dataset, augment_crop_flip, iterate_batches
from ablate.core.schedules import cosine_lr


def train_teacher(
    model: nn.Module,
    data: Dataset,
    *,
    method: str,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    eps: float = 0.0,
    step_size: float = 0.0,
    steps: int = 0,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place by CE on clean inputs (``ce``) or on PGD-k examples (``pgd_at``).

    PGD-AT uses a uniform random start and the CE objective (Madry et al.); LR is cosine to 0.
    """
    if method not in ("ce", "pgd_at"):
        raise ValueError(f"unknown teacher training method {method!r}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                          weight_decay=weight_decay)
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(epoch, epochs, lr, 0.0)
        total, n = 0.0, 0
        for x, y in iterate_batches(data.train, batch_size, shuffle=True, generator=gen):
            if data.augment:
                x = augment_crop_flip(x, generator=gen)
            if method == "pgd_at":
                model.eval()
                x = attack("ce", model, None, x, y, eps=eps, step_size=step_size, steps=steps,
                           start="uniform")
            model.train()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        if on_epoch is not None:
            on_epoch(epoch, total / max(n, 1))
    model.eval()
    return model
