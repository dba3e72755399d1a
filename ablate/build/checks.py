"""Checks of everything a command reads besides its YAML, done before anything starts.

Each failure is a one-line :class:`~ablate.config.ConfigError`, :class:`CheckpointError` or
:class:`DatasetError` naming the field or file; the CLI turns it into exit code 2. They run
before Ray or MLflow start and before any teacher is trained, so a refused command writes
nothing. ``ablate validate`` runs the same checks as ``train``, so the two agree. The tracking
URI is checked in :mod:`ablate.config.tracking_uri`, before any of this.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ablate import names
from ablate.build.cache import teacher_cache_path, zoo_dir, zoo_key
from ablate.build.networks import build_spec
from ablate.config import ExperimentConfig, ModelConfig, TeacherConfig
from ablate.core import zoo
from ablate.core.catalog import DATASETS
from ablate.core.data import DatasetMissingError, check_files, check_split, dataset_shape
from ablate.core.errors import ConfigError, one_line
from ablate.core.models import load_checkpoint
from ablate.core.trainer import read_trainer_checkpoint


def check_inputs(cfg: ExperimentConfig) -> None:
    """Device, data split and files of one experiment: CIFAR batches read safely, every model
    builds, and each teacher checkpoint (given, or already cached) loads into its
    architecture exactly as ``train`` will load it (weights_only, strict)."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("field `device`: cuda, but no CUDA device is available here "
                          "(use device=auto or device=cpu)")
    if cfg.compute.cuda_graph and (cfg.device == "cpu" or not torch.cuda.is_available()):
        raise ConfigError("field `compute.cuda_graph`: CUDA graphs need a CUDA device, and "
                          f"this run's is the CPU (device={cfg.device}); set "
                          "compute.cuda_graph=false")
    d, train_images = cfg.data, None
    if DATASETS[d.name].on_disk:
        try:
            train_images = check_files(d.name, d.root)  # DatasetError names the dir or file
        except DatasetMissingError:
            if not d.download:  # with download=true, missing files are fetched later
                raise
    try:
        check_split(d.name, int(d.val_size) if d.val_size >= 1 else d.val_size, train_images)
    except ValueError as exc:
        raise ConfigError(f"field `data.val_size`: {exc}") from None
    # Building models draws from torch's global RNG; the checks must not shift the run's seeds.
    with torch.random.fork_rng(devices=[]):
        _check_models(cfg)


def _check_models(cfg: ExperimentConfig) -> None:
    _build("student", cfg.student, cfg.data.name)
    for role in ("clean", "robust"):
        spec = getattr(cfg.teachers, role)
        if spec.robustbench is not None:
            _check_zoo_teacher(role, spec)
            continue
        net = _build(f"teachers.{role}", spec, cfg.data.name)
        if spec.checkpoint is not None and not Path(spec.checkpoint).is_file():
            raise ConfigError(f"teachers.{role}.checkpoint: file not found: {spec.checkpoint}")
        # Without a checkpoint, train loads the cached teacher if there is one, else trains it.
        path = Path(spec.checkpoint or teacher_cache_path(role, spec, cfg))
        if path.is_file():
            load_checkpoint(net, path)


def pending_downloads(cfg: ExperimentConfig) -> list[str]:
    """What a run of ``cfg`` will download before it starts (files :func:`check_inputs`
    let pass because their `download` is true), one phrase each, for ``--dry-run``."""
    out = []
    for role in ("clean", "robust"):
        spec = getattr(cfg.teachers, role)
        if spec.robustbench is not None and spec.download:
            absent = zoo.missing(zoo_dir(spec), *zoo_key(spec))
            if absent:
                out.append(f"teachers.{role} {spec.robustbench} into {absent[0].parent}")
    return out


def _check_zoo_teacher(role: str, spec: TeacherConfig) -> None:
    """A RobustBench teacher: a known model whose checkpoint is there and loads, or will be
    downloaded (download=true)."""
    name, dataset, threat = zoo_key(spec)
    try:
        absent = zoo.missing(zoo_dir(spec), name, dataset, threat)
        if absent and not spec.download:
            raise ConfigError(f"{name} ({dataset} {threat}) not found: looked for {absent[0]} "
                              "(download=false; RobustBench's model_dir layout)")
        if not absent:
            zoo.load(zoo_dir(spec), name, dataset, threat)
    except ConfigError as exc:
        raise ConfigError(f"teachers.{role}.robustbench: {exc}") from None


def _build(field: str, spec: ModelConfig, dataset: str) -> nn.Module:
    channels, classes = dataset_shape(dataset)
    try:
        return build_spec(spec, num_classes=classes, in_channels=channels)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:  # builder arguments
        why = one_line(exc)
        raise ConfigError(f"field `{field}`: cannot build {spec.arch} with kwargs "
                          f"{spec.kwargs}: {why}") from None


def check_resume(run_dir: Path) -> None:
    """``train --resume``: the run directory holds a run to continue, and its ``trainer.pt``
    (if any) is a trainer checkpoint that loads safely.

    A directory with the MLflow run id but no ``trainer.pt`` is a run interrupted in its
    first epoch: it continues from epoch 1 in the same MLflow run.
    """
    checkpoint = run_dir / names.CHECKPOINT_FILE
    if checkpoint.is_file():
        read_trainer_checkpoint(checkpoint)  # CheckpointError names the file
    elif not (run_dir / names.RUN_ID_FILE).is_file():
        raise ConfigError(f"--resume: nothing to resume in {run_dir} (no {names.CHECKPOINT_FILE}); "
                          "run without --resume to start")
