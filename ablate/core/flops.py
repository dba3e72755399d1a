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

``FlopCounterMode`` normally also tracks modules, with hooks that break ``torch.autograd.grad``
on a leaf input, which is exactly what PGD does (pytorch/pytorch#131753); :class:`_Counter`
switches that tracking off (only the total is read here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ablate.core.data import Split
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


class _NoModules:
    """Stands in for FlopCounterMode's module tracker: every count goes to ``Global``."""

    parents = ("Global",)

    def __enter__(self) -> _NoModules:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Counter(FlopCounterMode):
    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _NoModules()  # type: ignore[assignment]


class _ShapesOnly(TorchDispatchMode):
    """Answer every operation FlopCounterMode has a formula for with zeros of the shape, dtype
    and device it would return, without computing it; all others run normally."""

    counted = frozenset(flop_registry)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func._overloadpacket not in self.counted or "out" in kwargs:
            return func(*args, **kwargs)
        tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        if not tensors:
            return func(*args, **kwargs)
        device = tensors[0].device

        def to_meta(t: Any) -> Any:
            return t.to("meta") if isinstance(t, torch.Tensor) else t

        def zeros(t: Any) -> Any:
            if isinstance(t, torch.Tensor):
                return torch.zeros(t.shape, dtype=t.dtype, device=device)
            return t

        return tree_map(zeros, func(*tree_map(to_meta, args), **tree_map(to_meta, kwargs)))


def count_flops(fn: Callable[[], Any], *, shapes_only: bool = True) -> int:
    """FLOPs of running ``fn()`` (forward and backward), by FlopCounterMode."""
    counter = _Counter()
    if shapes_only:
        with _ShapesOnly(), counter:  # the counter above: it counts, then the zeros answer
            fn()
    else:
        with counter:
            fn()
    return int(counter.get_total_flops())


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
