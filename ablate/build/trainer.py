"""From a validated config to live objects: data, models, teachers (loaded or trained+cached)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from ablate import names
from ablate.build.networks import build_net
from ablate.config import ExperimentConfig, dump_yaml
from ablate.core.compute import compile_works
from ablate.core.data import Dataset, load_dataset
from ablate.core.errors import ConfigError
from ablate.core.settings import (
    AttackSettings,
    ComputeSettings,
    EvalSettings,
    IttSettings,
    OptimSettings,
)
from ablate.core.trainer import Trainer


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("field `device`: cuda, but no CUDA device is available here "
                          "(use device=auto or device=cpu)")
    return torch.device(name)


def build_data(cfg: ExperimentConfig) -> Dataset:
    d = cfg.data
    val_size: int | float = int(d.val_size) if d.val_size >= 1 else d.val_size
    return load_dataset(d.name, root=d.root, download=d.download, val_size=val_size,
                        seed=d.split_seed)


def build_trainer(
    cfg: ExperimentConfig, data: Dataset, clean: nn.Module, robust: nn.Module,
    device: torch.device,
) -> Trainer:
    """A Trainer for the config; the robust teacher is copied because ITT modifies it."""
    torch.manual_seed(cfg.seed)
    data = data.with_train(data.train.subset(cfg.data.train_subset))
    student = build_net(cfg.student, data).to(device)
    robust_copy = build_net(cfg.teachers.robust, data).to(device)
    robust_copy.load_state_dict(robust.state_dict())
    c = cfg.compute
    return Trainer(
        student=student, clean_teacher=clean, robust_teacher=robust_copy.eval(),
        data=data.to(device), method=cfg.method.name,
        method_params=cfg.method.model_dump(exclude={"name"}),
        optim=OptimSettings(**cfg.optim.model_dump()),
        attack=AttackSettings(**cfg.attack.model_dump()),
        itt=IttSettings(**cfg.itt.model_dump()), eval=EvalSettings(**cfg.eval.model_dump()),
        compute=ComputeSettings(**c.model_dump() | {"compile": c.compile and compile_works()}),
        seed=cfg.seed, surrogate=robust,
        igdm=cfg.igdm.model_dump(exclude={"enabled"}) if cfg.igdm.enabled else None,
    )


def save_config(cfg: ExperimentConfig, directory: str | os.PathLike) -> Path:
    """Write the resolved config as ``config.yaml`` (what ``ablate eval`` reads beside weights)."""
    path = Path(directory) / names.CONFIG_FILE
    path.write_text(dump_yaml(cfg.model_dump(mode="json")), encoding="utf-8")
    return path
