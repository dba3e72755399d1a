"""FLOPs of a training step and of a validation pass, counted by torch's ``FlopCounterMode``
on real calls of :class:`~ablate.core.trainer.Trainer` (its ``train_epoch`` and ``validate``
over a split of a few images), and a throughput probe of the training step.

What is counted: the formulas torch registers for matrix products, convolutions and attention
(forward and backward; a multiply-add is 2 FLOPs). Elementwise work (BatchNorm, activations,
the PGD update, softmax, the optimiser step) is not: it is a few per cent of a convolutional
step. The counts read tensor shapes only, so they are exact for any batch size and any weights.

``shapes_only`` (the default) keeps the count fast on a CPU: the counted operations are not
computed but answered with zeros of the right shape (their shapes come from the meta device),
and everything else runs as usual. The step therefore runs on constant values, which fixes the
few data-dependent branches on the side that costs more: all logits are equal, so the clean
teacher's prediction (class 0) is wrong on the labels :func:`tiny_split` gives (class 1) and
CIARD's push term is always computed. With ``shapes_only=False`` every operation runs for real
(a CIFAR step with a WRN-34-10 teacher then takes 5-20 s on 2 CPU cores, against 0.5-1 s).

The counting itself is :mod:`ablate.core.flop_counter` (also used by the trainer to log each
run's achieved FLOP/s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ablate.core.data import Split
from ablate.core.flop_counter import count_flops
from ablate.core.trainer import Trainer


@dataclass(frozen=True)
class ImageFlops:
    """FLOPs per image of one configuration."""

    train: float  # one training step, the robust teacher not updated
    train_itt: float  # one training step with the ITT teacher update (= train without ITT)
    val: float  # one per-epoch validation pass (clean + PGD-k of the student, both teachers)

    @property
    def itt_differs(self) -> bool:
        return self.train_itt != self.train


def tiny_split(image_shape: tuple[int, int, int], n: int = 2,
               device: torch.device | str = "cpu") -> Split:
    """``n`` images of this shape, all labelled 1 (see the module docstring); two by default,
    since BatchNorm in train mode refuses a batch of one where the spatial size is 1x1."""
    return Split(torch.full((n, *image_shape), 0.5, device=device),
                 torch.ones(n, dtype=torch.int64, device=device))


def trainer_flops(trainer: Trainer, *, shapes_only: bool = True) -> ImageFlops:
    """Per-image FLOPs of ``trainer``'s training step (one ``train_epoch`` over its training
    split, which should hold a batch or less) and of its validation (``validate`` on its
    validation subset). The step with the teacher update is counted in epoch
    ``trainer.freeze_epochs`` when the trainer has a teacher optimiser and that epoch exists;
    the step without it in epoch 0 when ``freeze_epochs > 0``. The models' weights change
    (a trainer built for counting is thrown away afterwards); the epoch counter is restored."""
    n_train, n_val = len(trainer.data.train), len(trainer.val)
    if n_train > trainer.batch_size:
        raise ValueError(f"the training split holds {n_train} images, more than one batch "
                         f"({trainer.batch_size})")
    itt = trainer.teacher_optimizer is not None and trainer.freeze_epochs < trainer.epochs
    epoch = trainer.epoch

    def step_at(e: int) -> float:
        trainer.epoch = e
        return count_flops(trainer.train_epoch, shapes_only=shapes_only) / n_train

    try:
        off = step_at(0) if trainer.freeze_epochs > 0 or not itt else None
        on = step_at(trainer.freeze_epochs) if itt else None
    finally:
        trainer.epoch = epoch
    val = count_flops(trainer.validate, shapes_only=shapes_only) / max(n_val, 1)
    train = off if off is not None else on
    assert train is not None
    return ImageFlops(train=train, train_itt=on if on is not None else train, val=val)


@dataclass(frozen=True)
class Throughput:
    """Training steps timed on the trainer's device."""

    images_per_s: float
    steps: int
    seconds: float


def time_steps(trainer: Trainer, *, itt: bool = False, warmup: int = 1, min_steps: int = 3,
               min_seconds: float = 2.0, max_seconds: float = 30.0) -> Throughput:
    """Images per second of real training steps: ``warmup`` untimed steps (allocation, kernel
    selection, compilation), then timed steps until ``min_steps`` and ``min_seconds`` are both
    reached, or ``max_seconds`` has passed after at least one. The trainer's training split
    should be one batch (one ``train_epoch`` is one step). ``itt``: steps that update the
    robust teacher (epoch ``freeze_epochs``), else epoch 0."""
    trainer.epoch = trainer.freeze_epochs if itt else 0
    device = trainer.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        trainer.train_epoch()
    sync()
    steps, start = 0, time.perf_counter()
    while True:
        trainer.train_epoch()
        sync()
        steps += 1
        elapsed = time.perf_counter() - start
        if (steps >= min_steps and elapsed >= min_seconds) or elapsed >= max_seconds:
            break
    return Throughput(images_per_s=steps * len(trainer.data.train) / elapsed, steps=steps,
                      seconds=elapsed)
