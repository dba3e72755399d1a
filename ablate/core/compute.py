"""Compute switches of the training step: mixed precision, channels-last memory, torch.compile.

Autocast covers the model calls of the inner maximisation and of the loss (student and teacher
passes); the perturbation, its projection onto the ε-ball and [0, 1], and the loss reductions
stay in fp32 (pass outputs are cast back to fp32 before any loss reads them). fp16 scales the
loss for the backward pass (a gradient scaler); bf16 needs none. Validation and the final test
run in fp32, so the accuracy a run reports is measured the same way whatever trained it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn as nn

from ablate.core.errors import one_line

Amp = Literal["none", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def autocast(device: torch.device, amp: Amp) -> Iterator[None]:
    """Mixed precision for the model calls inside (a no-op for ``none``). Its cache of cast
    weights is off while a CUDA graph captures: a replay would read a stale cached copy."""
    if amp == "none":
        yield
        return
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    with torch.autocast(device.type, dtype=DTYPES[amp], cache_enabled=not capturing):
        yield


def grad_scaler(device: torch.device, amp: Amp) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (whose small gradients underflow); None otherwise."""
    return torch.amp.GradScaler(device.type) if amp == "fp16" else None


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


# Dense bf16/fp16 tensor-core peaks (FLOP/s, datasheets, without sparsity), by a fragment of
# torch.cuda.get_device_name, most specific first. fp32 has no MFU here: cuDNN convolutions use
# TF32 by default, which no single fp32 peak describes.
TENSOR_PEAKS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12,
                "L40S": 362e12, "A10G": 70e12}


def peak_flops(device: torch.device, amp: Amp) -> float | None:
    """The device's peak for ``amp`` when known (CUDA, bf16/fp16, a listed GPU), else None."""
    if device.type != "cuda" or amp == "none":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in TENSOR_PEAKS.items() if key in name), None)


def compile_works(log: Callable[[str], None] = print) -> bool:
    """Whether torch.compile's default backend runs here (a tiny probe); one warning line and
    False when it does not (no C++ compiler for the CPU backend, say)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.compile(lambda t: t * 2 + 1)(torch.ones(2))
        return True
    except Exception as exc:  # the backend's own error types vary
        why = one_line(exc, 160)
        log(f"warning: compute.compile: torch.compile does not work here ({why}); "
            "running uncompiled")
        return False


def prepare(model: nn.Module, *, channels_last: bool, compile: bool) -> nn.Module:
    """The model in channels-last memory and/or compiled in place (``nn.Module.compile`` keeps
    the state-dict keys, so checkpoints stay interchangeable)."""
    model.to(memory_format=memory_format(channels_last))
    if compile:
        model.compile()
    return model
