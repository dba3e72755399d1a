"""From a validated config to live objects: data, models, teachers (loaded or trained+cached)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from ablate.config import ConfigError, ExperimentConfig, config_hash
from ablate.core import zoo
from ablate.core.accuracy import evaluate
from ablate.core.compute import compile_works
from ablate.core.data import Dataset, Split, load_dataset
from ablate.core.models import build_model, load_checkpoint
from ablate.core.teachers import train_teacher
from ablate.core.trainer import Trainer
from ablate.model_config import ModelConfig, TeacherConfig
from ablate.safe_yaml import dump_yaml

Log = Callable[[str], None]
CONFIG_NAME = "config.yaml"


def cache_dir() -> Path:
    """Where trained teachers are cached: ``$ABLATE_CACHE`` if set, else
    ``$XDG_CACHE_HOME/ablate`` (an absolute ``XDG_CACHE_HOME`` only, as the XDG spec asks),
    else ``~/.cache/ablate``. The same for every working directory, so a teacher trained once
    is found again from anywhere."""
    own = os.environ.get("ABLATE_CACHE")
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "ablate"
    return Path.home() / ".cache" / "ablate"


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


def build_net(spec: ModelConfig, data: Dataset) -> nn.Module:
    return build_spec(spec, num_classes=data.num_classes, in_channels=data.image_shape[0])


def build_spec(spec: ModelConfig, *, num_classes: int, in_channels: int) -> nn.Module:
    """The configured architecture (with its normalisation layer) for data of this shape; a
    RobustBench teacher's own architecture (its normalisation inside)."""
    if isinstance(spec, TeacherConfig) and spec.robustbench is not None:
        return zoo.build(*zoo_key(spec))
    norm = (spec.normalize.mean, spec.normalize.std) if spec.normalize else None
    return build_model(spec.arch, num_classes=num_classes, in_channels=in_channels,
                       normalize=norm, **spec.kwargs)


def zoo_key(spec: TeacherConfig) -> tuple[str, str, str]:
    """(name, dataset, threat model) of a RobustBench teacher; the dataset is resolved by the
    experiment config (ExperimentConfig fills it in from data.name)."""
    assert spec.robustbench is not None and spec.dataset is not None, spec
    return spec.robustbench, spec.dataset, spec.threat_model


def zoo_dir(spec: TeacherConfig) -> Path:
    """RobustBench's model_dir for the teacher: its own, else the teacher cache's."""
    return Path(spec.model_dir).expanduser() if spec.model_dir else cache_dir() / "robustbench"


def load_zoo_teacher(role: str, spec: TeacherConfig, log: Log = print) -> nn.Module:
    """A RobustBench teacher with its weights, downloading them first where allowed."""
    name, dataset, threat = zoo_key(spec)
    if zoo.missing(zoo_dir(spec), name, dataset, threat) and spec.download:
        log(f"downloading the {role} teacher {name} ({dataset} {threat}) into {zoo_dir(spec)}")
        zoo.download(zoo_dir(spec), name, dataset, threat)
    return zoo.load(zoo_dir(spec), name, dataset, threat)


def teacher_cache_path(role: str, spec: TeacherConfig, cfg: ExperimentConfig) -> Path:
    """Cache file of a trained teacher. Every part of the name is safe as a path component:
    the dataset name is a Literal, the arch a registered model name, the key a hex hash."""
    key = config_hash({"teacher": spec.model_dump(mode="json"),
                       "data": cfg.data.model_dump(mode="json", exclude={"root", "download"})})
    return cache_dir() / "teachers" / f"{cfg.data.name}-{role}-{spec.arch}-{key}.pt"


def prepare_teacher(
    role: str, spec: TeacherConfig, cfg: ExperimentConfig, data: Dataset,
    device: torch.device, log: Log = print,
) -> nn.Module:
    """Load the teacher's checkpoint, or train it once and cache it by config hash, or load
    it from the RobustBench zoo."""
    if spec.robustbench is not None:
        return load_zoo_teacher(role, spec, log).to(device).eval()
    torch.manual_seed(cfg.data.split_seed)  # a cached teacher must be reproducible from its key
    model = build_net(spec, data)
    path = Path(spec.checkpoint) if spec.checkpoint else teacher_cache_path(role, spec, cfg)
    if spec.checkpoint is None and not path.exists():
        assert spec.train is not None
        log(f"training {role} teacher ({spec.arch}, {spec.train.method}, "
            f"{spec.train.epochs} epochs) -> {path}")
        model.to(device)
        t = spec.train
        data = data.to(device)
        train_teacher(model, data, method=t.method, epochs=t.epochs, lr=t.lr,
                      batch_size=t.batch_size, momentum=t.momentum,
                      weight_decay=t.weight_decay, eps=t.eps, step_size=t.step_size,
                      steps=t.steps, seed=cfg.data.split_seed,
                      on_epoch=teacher_progress(model, role, t.epochs, data.val, cfg, log))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    load_checkpoint(model, path)
    return model.to(device).eval()


TEACHER_VAL_IMAGES = 500  # per-epoch teacher check: enough to see it learn, cheap on CIFAR


def teacher_progress(model: nn.Module, role: str, epochs: int, val: Split,
                     cfg: ExperimentConfig, log: Log) -> Callable[[int, float], None]:
    """A console line per teacher epoch (loss, clean and PGD-10 accuracy on the first
    TEACHER_VAL_IMAGES validation images, seconds), so a long teacher run is not silent. The
    check runs under its own RNG: the cached teacher stays what its key says."""
    val = val.subset(TEACHER_VAL_IMAGES)
    eps = cfg.eval.eps if cfg.eval.eps is not None else cfg.attack.eps
    tick = time.perf_counter()

    def on_epoch(epoch: int, loss: float) -> None:
        nonlocal tick
        seconds = time.perf_counter() - tick
        with torch.random.fork_rng(devices=[val.device] if val.device.type == "cuda" else []):
            r = evaluate(model, val, eps=eps, step_size=eps / 4, steps=10)
        log(f"  {role} teacher epoch {epoch + 1:>3}/{epochs}  loss {loss:.4f}  val clean "
            f"{100 * r['clean_acc']:5.1f}%  PGD-10 {100 * r['robust_acc']:5.1f}% "
            f"(first {len(val)})  {seconds:.1f}s")
        tick = time.perf_counter()

    return on_epoch


def prepare_teachers(
    cfg: ExperimentConfig, data: Dataset, device: torch.device, log: Log = print
) -> tuple[nn.Module, nn.Module]:
    clean = prepare_teacher("clean", cfg.teachers.clean, cfg, data, device, log)
    robust = prepare_teacher("robust", cfg.teachers.robust, cfg, data, device, log)
    return clean, robust


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
