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
from pathlib import Path
from typing import Any

from ablate import names
from ablate.build import (
    build_data,
    check_inputs,
    prepare_teacher,
    resolve_device,
)
from ablate.config import ExperimentConfig, redact
from ablate.core.catalog import ATTACKS, check_attacks
from ablate.core.console import Log
from ablate.core.errors import ConfigError
from ablate.core.robustness import run_suite, suite_metrics, suite_table
from ablate.evaluation.robustbench import check_protocol, entry, entry_folder
from ablate.evaluation.targets import Target, load_student, resolve_target
from ablate.tracking import Tracker


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
            mode="json"), tags={names.KIND: names.KIND_EVAL,
                                names.METHOD: cfg.method.name,
                                names.CHECKPOINT: os.fspath(t.weights.resolve())})
    metrics = names.prefixed(names.TEST, suite_metrics(results))
    tracker.log_metrics(run_id, metrics, step=cfg.optim.epochs)
    (tmp / "robustness.md").write_text(table + "\n")
    tracker.log_artifact(run_id, tmp / "robustness.md", names.EVAL_FOLDER)
    rows = [(k, v) for k, v in results.items() if k != "clean"]
    columns: dict[str, list[Any]] = {"attack": [k for k, _ in rows]}
    for key in ("clean", "robust", "w_r", "n"):
        columns[key] = [v.get(key) for _, v in rows]
    tracker.log_table(run_id, columns, f"{names.EVAL_FOLDER}/robustness.json")
    for path, folder in files:
        tracker.log_artifact(run_id, path, folder)
    if t.run_id is None:
        tracker.end(run_id)
    log(f"logged to MLflow run {run_id} in {redact(tracker.uri)}")
