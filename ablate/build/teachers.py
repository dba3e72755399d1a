"""The two teachers of a config, ready to teach: loaded from a checkpoint, trained once and
cached by config hash (a console line per epoch), or from the RobustBench zoo."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from ablate.build.cache import teacher_cache_path, zoo_dir, zoo_key
from ablate.build.networks import build_net
from ablate.config import ExperimentConfig, TeacherConfig
from ablate.core import zoo
from ablate.core.accuracy import evaluate
from ablate.core.console import Log, clock
from ablate.core.data import Dataset, Split
from ablate.core.integrity import save_verified
from ablate.core.models import load_checkpoint
from ablate.core.teachers import train_teacher


def load_zoo_teacher(role: str, spec: TeacherConfig, log: Log = print) -> nn.Module:
    """A RobustBench teacher with its weights, downloading them first where allowed."""
    name, dataset, threat = zoo_key(spec)
    if zoo.missing(zoo_dir(spec), name, dataset, threat) and spec.download:
        log(f"downloading the {role} teacher {name} ({dataset} {threat}) into {zoo_dir(spec)}")
        zoo.download(zoo_dir(spec), name, dataset, threat)
    return zoo.load(zoo_dir(spec), name, dataset, threat)


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
        data = data.with_train(data.train.subset(t.subset))
        train_teacher(model, data, method=t.method, epochs=t.epochs, lr=t.lr,
                      batch_size=t.batch_size, momentum=t.momentum,
                      weight_decay=t.weight_decay, eps=t.eps, step_size=t.step_size,
                      steps=t.steps, seed=cfg.data.split_seed,
                      on_epoch=teacher_progress(model, role, t.epochs, data.val, cfg, log))
        save_verified(model.state_dict(), path)  # atomic, with its digest beside it
    load_checkpoint(model, path)
    return model.to(device).eval()


TEACHER_VAL_IMAGES = 500  # per-epoch teacher check: enough to see it learn, cheap on CIFAR


def teacher_progress(model: nn.Module, role: str, epochs: int, val: Split,
                     cfg: ExperimentConfig, log: Log) -> Callable[[int, float], None]:
    """A console line per teacher epoch (loss, clean and PGD-10 accuracy on the first
    TEACHER_VAL_IMAGES validation images, seconds, and the ETA of the teacher from the mean
    epoch so far), so a long teacher run is not silent. The check runs under its own RNG: the
    cached teacher stays what its key says."""
    val = val.subset(TEACHER_VAL_IMAGES)
    eps = cfg.eval.eps if cfg.eval.eps is not None else cfg.attack.eps
    start = tick = time.perf_counter()

    def on_epoch(epoch: int, loss: float) -> None:
        nonlocal tick
        seconds = time.perf_counter() - tick
        with torch.random.fork_rng(devices=[val.device] if val.device.type == "cuda" else []):
            r = evaluate(model, val, eps=eps, step_size=eps / 4, steps=10)
        tick = time.perf_counter()
        left = (tick - start) / (epoch + 1) * (epochs - epoch - 1)
        when = f"ETA {clock(left)}" if left > 0 else f"done in {clock(tick - start)}"
        log(f"  {role} teacher epoch {epoch + 1:>3}/{epochs}  loss {loss:.4f}  val clean "
            f"{100 * r['clean_acc']:5.1f}%  PGD-10 {100 * r['robust_acc']:5.1f}% "
            f"(first {len(val)})  {seconds:.1f}s  {when}")

    return on_epoch


def prepare_teachers(
    cfg: ExperimentConfig, data: Dataset, device: torch.device, log: Log = print
) -> tuple[nn.Module, nn.Module]:
    clean = prepare_teacher("clean", cfg.teachers.clean, cfg, data, device, log)
    robust = prepare_teacher("robust", cfg.teachers.robust, cfg, data, device, log)
    return clean, robust


