"""FLOPs of running some code, by torch's ``FlopCounterMode``: the formulas torch registers
for matrix products, convolutions and attention, forward and backward (a multiply-add is 2
FLOPs); elementwise work is not counted.

``FlopCounterMode`` normally also tracks modules, with hooks that break ``torch.autograd.grad``
on a leaf input, which is exactly what PGD does (pytorch/pytorch#131753); :class:`FlopCounter`
switches that tracking off (only the total is read). ``shapes_only`` answers the counted
operations with zeros of the right shape instead of computing them (fast estimates on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import FlopCounterMode, flop_registry


class _NoModules:
    """Stands in for FlopCounterMode's module tracker: every count goes to ``Global``."""

    parents = ("Global",)

    def __enter__(self) -> _NoModules:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FlopCounter(FlopCounterMode):
    """``with FlopCounter() as c: ...``, then ``c.get_total_flops()``."""

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
    counter = FlopCounter()
    if shapes_only:
        with _ShapesOnly(), counter:  # the counter above: it counts, then the zeros answer
            fn()
    else:
        with counter:
            fn()
    return int(counter.get_total_flops())
