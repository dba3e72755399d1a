"""Ray Tune function trainable around the CIARD :class:`~ablate.core.trainer.Trainer`.

One trial = one experiment config (the search's base with the sampled values written in). It
reports the validation metrics after every epoch together with a checkpoint, so ASHA can stop it
at any rung and a restored search continues it from its last epoch. Teachers arrive as state
dicts through the object store (prepared once by the driver, never retrained per trial).
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
import torch.nn as nn
from ray import tune

from ablate import names
from ablate.build import (
    build_data,
    build_net,
    build_trainer,
    resolve_device,
    save_config,
)
from ablate.config import ExperimentConfig, Recipe
from ablate.core.data import Dataset
from ablate.core.errors import CheckpointError, ConfigError
from ablate.core.integrity import verify_file
from ablate.core.trainer import Trainer

TeacherStates = dict[str, dict[str, torch.Tensor]]


def _teacher(cfg: ExperimentConfig, role: str, state: dict[str, torch.Tensor], data: Dataset,
             device: torch.device) -> nn.Module:
    net = build_net(getattr(cfg.teachers, role), data)
    net.load_state_dict(state)
    return net.to(device).eval()


def trial_device(name: str) -> torch.device:
    """The trial's device (``name``: the config's ``device``) from Ray's assignment: its first
    GPU, else the CPU. Ray narrows ``CUDA_VISIBLE_DEVICES`` to the trial's GPUs, so that GPU is
    ``cuda:0``, unless RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES is set (then its index is
    Ray's id). A trial without a GPU share trains on the CPU even where GPUs are visible: Ray
    leaves every GPU visible to it, and ``auto`` would take one Ray counts as free. A GPU share
    where torch has no CUDA is a one-line ConfigError (the trial's error tag), ``auto``
    included: Ray holds that GPU for the trial, so a silent fall-back to the CPU would leave it
    idle and run the search at CPU speed. Outside a Ray task or actor (the driver testing the
    best trial) it is the config's device."""
    in_ray = ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None
    if name == "cpu" or not in_ray:
        return resolve_device(name)
    gpus = assigned_gpus()
    if not gpus:
        return resolve_device("cpu" if name == "auto" else name)
    if not torch.cuda.is_available():
        raise ConfigError(f"trial assigned GPU {','.join(gpus)} by Ray, but CUDA is not "
                          f"available on node {socket.gethostname()} (torch built without "
                          "CUDA, or no driver); set base.device=cpu or resources.gpu=0")
    return gpu_device(gpus)


def gpu_device(gpus: list[str]) -> torch.device:
    """The torch device of the first of Ray's GPU ids ``gpus`` in this worker (no CUDA needed
    to name it): ``cuda:0``, the first GPU left visible, unless Ray was told not to narrow
    ``CUDA_VISIBLE_DEVICES``."""
    if os.environ.get("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", "0") not in ("", "0"):
        return torch.device(f"cuda:{gpus[0]}")
    return torch.device("cuda:0")


def assigned_gpus() -> list[str]:
    """The ids of the GPUs Ray assigned to this Ray worker (a trial's, or a final test's)."""
    return [str(i) for i in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]


def gpu_report() -> dict[str, str]:
    """What a trial's reports carry about its GPUs (its child run's tags): Ray's ids and the
    ``CUDA_VISIBLE_DEVICES`` its process sees, to tell which GPU a trial used (e.g. which
    trials shared one); nothing for a trial without a GPU share."""
    gpus = assigned_gpus()
    if not gpus:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {names.GPU_IDS: ",".join(gpus),
            **({names.CUDA_VISIBLE: visible} if visible is not None else {})}


def make_trainer(cfg: ExperimentConfig, teachers: TeacherStates, threads: float) -> Trainer:
    """The trial's Trainer, with torch pinned to the trial's CPU share (no oversubscription)."""
    torch.set_num_threads(max(1, int(threads)))
    device = trial_device(cfg.device)
    data = build_data(cfg)
    clean = _teacher(cfg, "clean", teachers["clean"], data, device)
    robust = _teacher(cfg, "robust", teachers["robust"], data, device)
    return build_trainer(cfg, data, clean, robust, device)


def train_ciard(config: dict[str, Any], *, recipe: Recipe, teachers: TeacherStates,
                threads: float = 1.0, test_at_end: bool = False) -> None:
    """The trainable. ``config`` holds the sampled values keyed like the search space (a grid:
    ``row`` and ``seed``); ``recipe`` turns them into the trial's experiment. With
    ``test_at_end`` the last report also carries ``test/*``, the best checkpoint on the test
    split with the final PGD protocol (a grid cell's result). Every report carries
    ``node_id``, the Ray node the trial runs on (a child run's ``node_id`` tag), and a trial
    with a GPU share its ``gpu_ids`` and ``cuda_visible_devices`` (:func:`gpu_report`)."""
    where = {names.NODE_ID: ray.get_runtime_context().get_node_id(), **gpu_report()}
    cfg = recipe.config(config)
    trainer = make_trainer(cfg, teachers, threads)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a damaged or missing trainer.pt fails the trial, never retrains
        restore(trainer, checkpoint)
    for metrics in trainer.run():
        if trainer.done and test_at_end:
            test = trainer.test()
            metrics.update(names.prefixed(names.TEST, test))
        with tempfile.TemporaryDirectory() as directory:
            trainer.save(directory)
            save_config(cfg, directory)  # makes the checkpoint self-describing for `ablate eval`
            tune.report({**metrics, **where},
                        checkpoint=tune.Checkpoint.from_directory(directory))


def final_test(sampled: dict[str, Any], checkpoint: tune.Checkpoint, *, recipe: Recipe,
               teachers: TeacherStates,
               threads: float = 1.0) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Test the trial's best checkpoint (by validation W-acc) with the final PGD protocol;
    returns the test metrics and the trial's per-epoch history (for the Fig. 3 curves)."""
    cfg = recipe.config(sampled)
    trainer = make_trainer(cfg, teachers, threads)
    restore(trainer, checkpoint)
    test = trainer.test()
    return test, trainer.history


def restore(trainer: Trainer, checkpoint: tune.Checkpoint) -> None:
    """Continue ``trainer`` from a trial's checkpoint, verified (digest or CRCs, finite
    values); a checkpoint without its ``trainer.pt`` is a one-line CheckpointError too."""
    with checkpoint.as_directory() as directory:
        if not trainer.restore(directory):
            raise CheckpointError(f"trial checkpoint {checkpoint.path}: no "
                                  f"{names.CHECKPOINT_FILE} (deleted or never synced)")


def check_checkpoint(checkpoint: tune.Checkpoint | None, trial: str) -> None:
    """Before a summary logs anything: the checkpoint it will test is there and intact
    (digest or CRCs). A checkpoint in remote storage is verified where it is read."""
    if checkpoint is None:
        raise CheckpointError(f"{trial} has no checkpoint to test")
    if checkpoint.filesystem is not None and checkpoint.filesystem.type_name != "local":
        return
    path = Path(checkpoint.path) / names.CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{trial}: its checkpoint {path} is missing (deleted?), so it "
                              "cannot be tested; restore it, or rerun with --fresh")
    verify_file(path)
