"""Model registry, input normalisation wrapper and safe checkpoint loading.

Architectures live in :mod:`ablate.core.architectures`; this module registers a builder for each
under a config name (``build_model("wrn34_10", num_classes=10)``) and loads teacher checkpoints
with ``torch.load(..., weights_only=True)`` only, so a checkpoint can never execute code.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ablate.core.architectures import (
    CifarResNet,
    FlatCNN,
    MobileNetV2,
    ResNet18,
    SmallCNN,
    WideResNet,
)
from ablate.core.errors import CheckpointError
from ablate.core.integrity import check_finite, verify_file

__all__ = [
    "MODELS",
    "CheckpointError",
    "Normalize",
    "Normalized",
    "build_model",
    "load_checkpoint",
    "load_state",
    "read_checkpoint",
    "register_model",
]

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder ``fn(*, num_classes, in_channels, **extra)`` as ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = fn
        return fn

    return deco


# --------------------------------------------------------------------------------------------
# Normalisation wrapper
# --------------------------------------------------------------------------------------------


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, so the wrapped model still takes inputs in [0, 1]."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean_t.shape != std_t.shape:
            raise ValueError(f"normalize mean/std lengths differ: {len(mean)} vs {len(std)}")
        if (std_t <= 0).any():
            raise ValueError(f"normalize std must be positive, got {list(std)}")
        # Non-persistent: the statistics are configuration, not weights. Keeping them out of the
        # state dict means a wrapper's checkpoint is exactly "1." + the inner net's keys, and a
        # checkpoint never silently overrides the configured normalisation.
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Normalized(nn.Sequential):
    """``Normalized(Normalize(mean, std), net)``: a net trained on normalised inputs, fed [0, 1].

    Attacks (PGD, AutoAttack) then work in pixel space with the usual ε, while the net sees the
    statistics it was trained with.
    """

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__(normalize, net)

    @property
    def normalize(self) -> Normalize:
        return self[0]  # type: ignore[return-value]

    @property
    def net(self) -> nn.Module:
        return self[1]


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build registered model ``name``; ``normalize=(mean, std)`` wraps it in ``Normalized``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    net = MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    if normalize is None:
        return net
    mean, std = normalize
    if len(mean) not in (1, in_channels):
        raise ValueError(
            f"normalize has {len(mean)} channel statistics but the model has {in_channels} "
            "input channels"
        )
    return Normalized(Normalize(mean, std), net)


# --------------------------------------------------------------------------------------------
# Registered architectures
# --------------------------------------------------------------------------------------------


@register_model("small_cnn")
def small_cnn(*, num_classes: int, in_channels: int = 3, width: int = 32) -> nn.Module:
    """3-conv BN-ReLU CNN for the embedded 8x8 digits set (also fine on 32x32)."""
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, width=width)


@register_model("flat_cnn")
def flat_cnn(*, num_classes: int, in_channels: int = 3, width: int = 16) -> nn.Module:
    """3-conv BN-ReLU CNN with two pools and a flattened 7x7 head, for 28x28 Fashion-MNIST."""
    return FlatCNN(num_classes=num_classes, in_channels=in_channels, width=width)


@register_model("resnet18")
def resnet18(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-18 (Madry/RSLAD/ARD layout), 11.17M params for 10 classes."""
    return ResNet18(num_classes=num_classes, in_channels=in_channels)


@register_model("mobilenet_v2")
def mobilenet_v2(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    """CIFAR MobileNetV2 (kuangliu/pytorch-cifar)."""
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels)


@register_model("resnet56")
def resnet56(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-56 (chenyaofo/pytorch-cifar-models ``cifar10_resnet56`` keys)."""
    return CifarResNet([9, 9, 9], num_classes=num_classes, in_channels=in_channels)


@register_model("wide_resnet")
def wide_resnet(
    *,
    num_classes: int,
    in_channels: int = 3,
    depth: int,
    widen_factor: int,
    dropout: float = 0.0,
) -> nn.Module:
    """TRADES-layout WideResNet of any depth (6n+4) and width."""
    return WideResNet(depth, num_classes, widen_factor, dropout, in_channels=in_channels)


@register_model("wrn34_10")
def wrn34_10(*, num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """WRN-34-10 (TRADES ``model_cifar_wrn.pt`` layout)."""
    return WideResNet(34, num_classes, 10, dropout, in_channels=in_channels)


@register_model("wrn22_6")
def wrn22_6(*, num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """WRN-22-6."""
    return WideResNet(22, num_classes, 6, dropout, in_channels=in_channels)


@register_model("wrn70_16")
def wrn70_16(*, num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
    """WRN-70-16 (~267M params; slow to build on CPU)."""
    return WideResNet(70, num_classes, 16, dropout, in_channels=in_channels)


# --------------------------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------------------------


_WRAPPER_KEYS = ("model", "state_dict", "net")
_MAX_LISTED = 3


def _arch_name(model: nn.Module) -> str:
    if isinstance(model, Normalized):
        return f"Normalized({type(model.net).__name__})"
    return type(model).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refusal(exc: BaseException) -> str:
    """The line of torch's weights_only refusal that says what was refused; its first lines
    suggest retrying with weights_only=False, which is exactly what must not happen."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), _first_line(exc))


def _extract_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    """Find the state dict in ``obj``: itself, or under "model"/"state_dict"/"net"."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"checkpoint {path} holds no state dict (got {type(obj).__name__}; expected a "
            f"tensor dict or a dict with one of {list(_WRAPPER_KEYS)})"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"checkpoint {path} holds no state dict: non-tensor entries "
            f"{_short(bad)} (expected a tensor dict or one under {list(_WRAPPER_KEYS)})"
        )
    # DataParallel / DDP save every key as "module.<key>".
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def _short(keys: Sequence[str]) -> str:
    shown = ", ".join(sorted(keys)[:_MAX_LISTED])
    return f"[{shown}{', ...' if len(keys) > _MAX_LISTED else ''}] ({len(keys)})"


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only, so
    a checkpoint can never execute code. Every failure (missing, truncated, not a torch file,
    objects outside torch's allow-list) is a one-line :class:`CheckpointError` naming the file.
    The file is verified first (:func:`~ablate.core.integrity.verify_file`): against its
    digest, else by its zip CRCs, which ``torch.load`` does not check.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    verify_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any class outside torch's allow-list: that is the safety property
        # we want, so report it rather than retrying with a full unpickler.
        raise CheckpointError(
            f"checkpoint {path} contains objects other than tensors and plain containers and "
            f"was not loaded (weights_only=True): {_refusal(exc)}"
        ) from exc
    except Exception as exc:  # corrupt/truncated/not a torch file
        raise CheckpointError(
            f"cannot read checkpoint {path} (damaged, truncated or not a torch file): "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a (teacher) checkpoint file into ``model`` in place and return it (see
    :func:`read_checkpoint` and :func:`load_state`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    return load_state(model, read_checkpoint(path), path)


def load_state(model: nn.Module, obj: Any, path: str) -> nn.Module:
    """Load the state dict in ``obj`` (read from ``path``) into ``model`` in place.

    Accepts a plain state dict or ``{"model"|"state_dict"|"net": state_dict}``, strips
    ``module.`` prefixes, and loads an unwrapped checkpoint into the inner net of a
    :class:`Normalized` model. Every failure is a one-line :class:`CheckpointError`.
    """
    state = _extract_state_dict(obj, path)
    check_finite(state, path)
    target = model
    if isinstance(model, Normalized) and not any(k.startswith("1.") for k in state):
        # A teacher checkpoint of the bare net: the wrapper only adds parameter-free
        # normalisation, so the weights belong to the inner net.
        target = model.net

    expected = target.state_dict()
    # BatchNorm fills in num_batches_tracked itself; old checkpoints (e.g. TRADES) lack it.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches (checkpoint vs model) {_short(mismatched)}")
        raise CheckpointError(
            f"checkpoint {path} does not fit architecture {_arch_name(model)}: " + "; ".join(parts)
        )
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # defensive: anything the pre-checks did not anticipate
        raise CheckpointError(
            f"checkpoint {path} does not fit architecture {_arch_name(model)}: {_first_line(exc)}"
        ) from exc
    return model
