"""``ablate eval``: the final evaluation protocol (docs/evaluation.md) on a trained student.

A target is a checkpoint (a run or trial directory holding ``trainer.pt`` and ``config.yaml``, a
``trainer.pt`` file, or a student state dict with ``--config``) or an MLflow run id (an
``ablate train`` run, a search/grid trial, or a search's parent run for its best trial; found
through the ``checkpoint`` tag or, failing that, the logged ``config.yaml`` and
``checkpoints/best_student.pt`` artifacts). The table has the layout of the paper's Tables 3-6
and goes to MLflow as ``test/<attack>_acc`` metrics plus a Markdown and a table artifact, on the
target run (a search's best trial run) or on a new ``eval`` run for a plain file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ablate.build import (
    CONFIG_NAME,
    Log,
    build_data,
    build_net,
    prepare_teacher,
    resolve_device,
)
from ablate.config import ConfigError, ExperimentConfig, check_inputs, load_config
from ablate.core.catalog import ATTACKS, check_attacks
from ablate.core.models import CheckpointError, load_state, read_checkpoint
from ablate.core.robustness import run_suite, suite_metrics, suite_table
from ablate.core.trainer import CHECKPOINT_NAME
from ablate.robustbench_entry import check_protocol, entry, entry_folder
from ablate.tracking import Tracker
from ablate.tracking_uri import check_eval_target, not_a_target, redact

STUDENT_ARTIFACT = "checkpoints/best_student.pt"


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
    weights = path / CHECKPOINT_NAME if path.is_dir() else path
    if not weights.is_file():
        raise ConfigError(f"{path}: no {CHECKPOINT_NAME} in this directory")
    cfg_path = Path(config) if config else weights.parent / CONFIG_NAME
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path}: file not found (pass --config with the experiment YAML "
                          "the checkpoint was trained with)")
    cfg = load_config(cfg_path)
    return Target(cfg, weights, _read_student(weights), run_id, str(path))


def _read_student(weights: Path) -> dict[str, Any]:
    return student_state(read_checkpoint(weights), weights)


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
    id_file = path / "mlflow_run_id"
    if not (id_file.is_file() and tracker.exists()):
        return None
    run_id = id_file.read_text().strip()
    try:
        tracker.run_info(run_id)
    except Exception:  # logged to another store
        return None
    return run_id


def resolve_target(target: str, tracker: Tracker, config: str | None, tmp: Path) -> Target:
    """A path on disk, else an MLflow run id in the tracker's store."""
    if Path(target).exists():
        found = _from_path(Path(target), config)
        found.run_id = _run_of(Path(target), tracker)
        return found
    check_eval_target(target, tracker.uri)
    try:
        info = tracker.run_info(target)
    except Exception:  # MLflow raises its own exception types for unknown ids
        raise ConfigError(not_a_target(target, tracker.uri)) from None
    best = info["tags"].get("best_trial")
    if best:  # a search's parent run: its best trial
        child = tracker.find_run(info["experiment"], {"trial_id": best,
                                                      "mlflow.parentRunId": target})
        if child is not None:
            return resolve_target(child, tracker, config, tmp)
    checkpoint = info["tags"].get("checkpoint")
    if checkpoint and (Path(checkpoint) / CHECKPOINT_NAME).is_file():
        return _from_path(Path(checkpoint), config, run_id=target)
    try:
        weights = tracker.download(target, STUDENT_ARTIFACT, tmp)
        cfg_file = config or tracker.download(target, CONFIG_NAME, tmp)
    except Exception:
        raise ConfigError(f"run {target}: no checkpoint found (tag 'checkpoint' is "
                          f"{checkpoint or 'missing'}, no {STUDENT_ARTIFACT} artifact)") from None
    return Target(load_config(cfg_file), Path(weights), _read_student(Path(weights)), target,
                  f"run {target}")


def load_student(target: Target, cfg: ExperimentConfig, data: Any,
                 device: torch.device) -> torch.nn.Module:
    """The student network with the target's weights (the best epoch of a trainer.pt)."""
    net = build_net(cfg.student, data)
    load_state(net, target.state, str(target.weights))  # CheckpointError: other architecture
    return net.to(device).eval()


def run_eval(target: str, *, tracker: Tracker, attacks: Sequence[str] | None = None,
             config: str | None = None, autoattack_subset: int | None = -1,
             batch_size: int = 256, robustbench_entry: str | None = None, link: str = "",
             log: Log = print) -> dict[str, dict[str, float]]:
    """Evaluate, print the table, log metrics and the table to MLflow; returns the results.

    ``attacks`` None = every attack; ``autoattack_subset`` -1 = the config's value;
    ``robustbench_entry`` a model name ("" = the config's name) to also log RobustBench's
    leaderboard entry, refused unless the evaluation follows its protocol.
    """
    chosen = list(ATTACKS if attacks is None else attacks)
    try:
        check_attacks(chosen)
    except ValueError as exc:
        raise ConfigError(f"--attacks: {exc}") from None
    with tempfile.TemporaryDirectory() as tmp:
        t = resolve_target(target, tracker, config, Path(tmp))
        cfg = t.cfg
        check_inputs(cfg)
        subset = cfg.eval.autoattack_subset if autoattack_subset == -1 else autoattack_subset
        device = resolve_device(cfg.device)
        data = build_data(cfg)
        student = load_student(t, cfg, data, device)
        surrogate = None
        if any(a.startswith("transfer_") for a in chosen):
            surrogate = prepare_teacher("robust", cfg.teachers.robust, cfg, data, device, log)
        eps = cfg.eval.eps if cfg.eval.eps is not None else cfg.attack.eps
        test = data.test.to(device)
        if robustbench_entry is not None:  # before any attack runs
            check_protocol(cfg, chosen, subset, len(test), robustbench_entry)
        log(f"evaluating {t.label} ({cfg.student.arch}, method {cfg.method.name}) on "
            f"{len(test)} {cfg.data.name} test images at eps={eps:.4g}")
        start = time.perf_counter()
        results = run_suite(student, test.x, test.y, attacks=chosen, eps=eps, w=cfg.eval.w,
                            surrogate=surrogate, autoattack_subset=subset, seed=cfg.seed,
                            batch_size=batch_size, log=log)
        table = suite_table(results, title=f"{cfg.name} ({cfg.method.name}), {cfg.data.name} "
                            f"test, eps={eps:.4g}")
        log(table)
        log(f"total {time.perf_counter() - start:.1f}s")
        files = []
        if robustbench_entry is not None:
            path = Path(tmp) / f"{robustbench_entry or cfg.name}.json"
            path.write_text(json.dumps(entry(cfg, results, link=link, n_test=len(test)),
                                       indent=2) + "\n")
            files.append((path, entry_folder(cfg)))
            log(f"RobustBench entry ({entry_folder(cfg)}/{path.name}):\n{path.read_text()}")
        _log(tracker, t, cfg, results, table, Path(tmp), log, files)
    return results


def _log(tracker: Tracker, t: Target, cfg: ExperimentConfig,
         results: dict[str, dict[str, float]], table: str, tmp: Path, log: Log,
         files: Sequence[tuple[Path, str]] = ()) -> None:
    """Metrics, the table and ``files`` (path, artifact folder) into the target's run."""
    run_id = t.run_id
    if run_id is None:
        run_id = tracker.start(cfg.name, f"eval-{cfg.digest()}", params=cfg.model_dump(
            mode="json"), tags={"kind": "eval", "method": cfg.method.name,
                                "checkpoint": os.fspath(t.weights.resolve())})
    metrics = {f"test/{k}": v for k, v in suite_metrics(results).items()}
    tracker.log_metrics(run_id, metrics, step=cfg.optim.epochs)
    (tmp / "robustness.md").write_text(table + "\n")
    tracker.log_artifact(run_id, tmp / "robustness.md", "eval")
    rows = [(k, v) for k, v in results.items() if k != "clean"]
    columns: dict[str, list[Any]] = {"attack": [k for k, _ in rows]}
    for key in ("clean", "robust", "w_r", "n"):
        columns[key] = [v.get(key) for _, v in rows]
    tracker.log_table(run_id, columns, "eval/robustness.json")
    for path, folder in files:
        tracker.log_artifact(run_id, path, folder)
    if t.run_id is None:
        tracker.end(run_id)
    log(f"logged to MLflow run {run_id} in {redact(tracker.uri)}")
