"""What ``ablate eval`` evaluates: a checkpoint on disk (a run or trial directory, a
``trainer.pt``, a student state dict with its config) or an MLflow run id, resolved to the
config it was trained with and the student's weights, read safely before anything else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ablate import names
from ablate.build import build_net
from ablate.config import ExperimentConfig, check_eval_target, load_config, not_a_target
from ablate.core.errors import CheckpointError, ConfigError
from ablate.core.integrity import DIGEST_SUFFIX, check_finite
from ablate.core.models import load_state, read_checkpoint
from ablate.tracking import Tracker


@dataclass
class Target:
    """What to evaluate: the config it was trained with and where its weights are."""

    cfg: ExperimentConfig
    weights: Path  # trainer.pt (best epoch is taken) or a student state dict
    state: dict[str, Any]  # the student's weights, read from `weights` once (safely)
    run_id: str | None  # the MLflow run to log into; None = a new eval run
    label: str


def _from_path(path: Path, config: str | None, run_id: str | None = None) -> Target:
    """A checkpoint on disk and its config; the weights are read (safely) here, so a damaged
    or hostile file is refused before the tracking store is opened."""
    weights = path / names.CHECKPOINT_FILE if path.is_dir() else path
    if not weights.is_file():
        raise ConfigError(f"{path}: no {names.CHECKPOINT_FILE} in this directory")
    cfg_path = Path(config) if config else weights.parent / names.CONFIG_FILE
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path}: file not found (pass --config with the experiment YAML "
                          "the checkpoint was trained with)")
    cfg = load_config(cfg_path)
    return Target(cfg, weights, _read_student(weights), run_id, str(path))


def _read_student(weights: Path) -> dict[str, Any]:
    """The student's weights, verified (digest or CRCs, finite values) before any store opens."""
    state = student_state(read_checkpoint(weights), weights)
    check_finite(state, weights)
    return state


def student_state(obj: Any, weights: Path) -> Any:
    """The student's weights in a checkpoint read from ``weights``: the best epoch's of a
    trainer.pt (the last epoch's before any best), else the object itself (a state dict)."""
    if isinstance(obj, dict) and "best" in obj and "student" in obj:  # a Trainer checkpoint
        best = obj["best"]
        state = best.get("student") if isinstance(best, dict) else None
        state = state or obj["student"]
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {weights} holds no student state dict")
        return state
    return obj


def _run_of(path: Path, tracker: Tracker) -> str | None:
    """The MLflow run an ``ablate train`` run directory logged to, if it is in this store."""
    id_file = path / names.RUN_ID_FILE
    if not (id_file.is_file() and tracker.exists()):
        return None
    run_id = id_file.read_text().strip()  # a run of another store: None
    return run_id if tracker.run_info_or_none(run_id) is not None else None


def resolve_target(target: str, tracker: Tracker, config: str | None, tmp: Path) -> Target:
    """A path on disk, else an MLflow run id in the tracker's store."""
    if Path(target).exists():
        found = _from_path(Path(target), config)
        found.run_id = _run_of(Path(target), tracker)
        return found
    check_eval_target(target, tracker.uri)
    info = tracker.run_info_or_none(target)
    if info is None:
        raise ConfigError(not_a_target(target, tracker.uri))
    best = info["tags"].get(names.BEST_TRIAL)
    if best:  # a search's parent run: its best trial
        child = tracker.find_run(info["experiment"], {names.TRIAL_ID: best,
                                                      names.PARENT_RUN: target})
        if child is not None:
            return resolve_target(child, tracker, config, tmp)
    checkpoint = info["tags"].get(names.CHECKPOINT)
    if checkpoint and (Path(checkpoint) / names.CHECKPOINT_FILE).is_file():
        return _from_path(Path(checkpoint), config, run_id=target)
    weights = tracker.download_if_present(target, names.BEST_STUDENT, tmp)
    tracker.download_if_present(target, f"{names.BEST_STUDENT}{DIGEST_SUFFIX}", tmp)  # if any
    cfg_file = config or tracker.download_if_present(target, names.CONFIG_FILE, tmp)
    if weights is None or cfg_file is None:
        raise ConfigError(f"run {target}: no checkpoint found (tag 'checkpoint' is "
                          f"{checkpoint or 'missing'}, no {names.BEST_STUDENT} artifact)")
    return Target(load_config(cfg_file), Path(weights), _read_student(Path(weights)), target,
                  f"run {target}")


def load_student(target: Target, cfg: ExperimentConfig, data: Any,
                 device: torch.device) -> torch.nn.Module:
    """The student network with the target's weights (the best epoch of a trainer.pt)."""
    net = build_net(cfg.student, data)
    load_state(net, target.state, str(target.weights))  # CheckpointError: other architecture
    return net.to(device).eval()


