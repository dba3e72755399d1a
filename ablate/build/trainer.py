"""From a validated config to live objects: data, models, teachers (loaded or trained+cached)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from ablate.build.networks import build_net
from ablate.config import ExperimentConfig, dump_yaml
from ablate.core.compute import compile_works
from ablate.core.data import Dataset, load_dataset
from ablate.core.errors import ConfigError
from ablate.core.trainer import Trainer

CONFIG_NAME = "config.yaml"


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
    student = build_net(cfg.student, data).to(device)
    robust_copy = build_net(cfg.teachers.robust, data).to(device)
    robust_copy.load_state_dict(robust.state_dict())
    a, o, i, e = cfg.attack, cfg.optim, cfg.itt, cfg.eval
    return Trainer(
        student=student, clean_teacher=clean, robust_teacher=robust_copy.eval(),
        data=data.to(device), method=cfg.method.name,
        method_params=cfg.method.model_dump(exclude={"name"}),
        epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, lr_min=o.lr_min,
        momentum=o.momentum, weight_decay=o.weight_decay, lr_schedule=o.schedule,
        lr_milestones=o.milestones, lr_gamma=o.gamma,
        objective=a.objective, eps=a.eps, step_size=a.step_size, steps=a.steps, start=a.start,
        student_mode=a.student_mode, clean_pass_first=a.clean_pass_first,
        freeze_epochs=i.freeze_epochs if i.enabled else o.epochs, teacher_lr=i.teacher_lr,
        teacher_momentum=i.momentum,
        teacher_weight_decay=i.weight_decay, teacher_lr_schedule=i.schedule, teacher_bn=i.bn,
        frozen_teacher_bn=i.frozen_bn,
        eval_eps=e.eps, eval_step_size=e.step_size, eval_steps=e.val_steps,
        val_subset=e.val_subset, w=e.w, seed=cfg.seed,
        igdm=cfg.igdm.model_dump(exclude={"enabled"}) if cfg.igdm.enabled else None,
        surrogate=robust, amp=cfg.compute.amp, channels_last=cfg.compute.channels_last,
        compile=cfg.compute.compile and compile_works(),
    )


def save_config(cfg: ExperimentConfig, directory: str | os.PathLike) -> Path:
    """Write the resolved config as ``config.yaml`` (what ``ablate eval`` reads beside weights)."""
    path = Path(directory) / CONFIG_NAME
    path.write_text(dump_yaml(cfg.model_dump(mode="json")))
    return path


def evaluate_best(trainer: Trainer, cfg: ExperimentConfig) -> dict[str, float]:
    """The config's final test protocol on the trainer's best checkpoint (keys without prefix)."""
    return trainer.test(attacks=cfg.eval.attacks, autoattack_subset=cfg.eval.autoattack_subset)
