"""``ablate eval``: the final evaluation protocol (docs/evaluation.md) on a trained student.

A target is a checkpoint (a run or trial directory holding ``trainer.pt`` and ``config.yaml``, a
``trainer.pt`` file, or a student state dict with ``--config``) or an MLflow run id (an
``ablate train`` run, a search/grid trial, or a search's parent run for its best trial; found
through the ``checkpoint`` tag or, failing that, the logged ``config.yaml`` and
``checkpoints/best_student.pt`` artifacts). The table has the layout of the paper's Tables 3-6
and goes to MLflow as ``test/<attack>_acc`` metrics plus a Markdown and a table artifact, on the
target run (a search's best trial run) or on an ``eval`` run for a plain file.

Each attack's metrics reach MLflow the moment it finishes, with the results so far in the run's
tag ``eval_partial`` (keyed by the weights' digest and the protocol's settings). A stopped
evaluation (Ctrl-C) keeps them: the same command again continues with the next attack.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ablate import names
from ablate.build import (
    build_data,
    check_inputs,
    prepare_teacher,
    resolve_device,
)
from ablate.config import ExperimentConfig, config_hash, redact
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
        key = config_hash({"weights": hashlib.sha256(t.weights.read_bytes()).hexdigest(),
                           "eps": eps, "aa_subset": subset, "seed": cfg.seed, "w": cfg.eval.w,
                           "batch_size": batch_size, "n": len(test)})
        run_id, done = _open_run(tracker, t, cfg, key, chosen, log)
        start = time.perf_counter()
        try:
            results = run_suite(student, test.x, test.y, attacks=chosen, eps=eps, w=cfg.eval.w,
                                surrogate=surrogate, autoattack_subset=subset, seed=cfg.seed,
                                batch_size=batch_size, log=log, done=done,
                                on_result=_keeper(tracker, run_id, cfg, key))
        except KeyboardInterrupt:
            _stopped(tracker, t, run_id, chosen, log)
            raise
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
        _log(tracker, t, run_id, cfg, results, table, Path(tmp), log, files)
    return results


def _open_run(tracker: Tracker, t: Target, cfg: ExperimentConfig, key: str,
              chosen: Sequence[str], log: Log) -> tuple[str, dict[str, dict[str, float]]]:
    """The run the evaluation logs into (the target's, or an ``eval`` run: the stopped one of
    the same weights and settings, else a new one) and the attacks a stopped evaluation with
    the same ``key`` already finished there."""
    run_id = t.run_id or tracker.find_run(cfg.name, {names.KIND: names.KIND_EVAL,
                                                     names.EVAL_KEY: key})
    if run_id is None or (t.run_id is None and
                          tracker.run_info(run_id)["status"] == "FINISHED"):
        run_id = tracker.start(cfg.name, f"eval-{cfg.digest()}", params=cfg.model_dump(
            mode="json"), tags={names.KIND: names.KIND_EVAL, names.EVAL_KEY: key,
                                names.METHOD: cfg.method.name,
                                names.CHECKPOINT: os.fspath(t.weights.resolve())})
        return run_id, {}
    try:
        partial = json.loads(tracker.run_info(run_id)["tags"].get(names.EVAL_PARTIAL) or "{}")
    except ValueError:  # edited by hand: start over
        partial = {}
    done = {k: v for k, v in (partial.get("done") or {}).items()
            if partial.get("key") == key and k in chosen}
    if t.run_id is None:
        tracker.reopen(run_id)
    if done:
        log(f"continuing the stopped evaluation in run {run_id}: {', '.join(done)} kept "
            f"(logged when they finished); {len(chosen) - len(done)} to run")
    return run_id, done


def _keeper(tracker: Tracker, run_id: str, cfg: ExperimentConfig,
            key: str) -> Callable[[str, dict[str, float]], None]:
    """Log each attack's metrics the moment it finishes, and the results so far in the run's
    ``eval_partial`` tag (what a stopped evaluation continues from)."""
    so_far: dict[str, dict[str, float]] = {}

    def keep(name: str, result: dict[str, float]) -> None:
        so_far[name] = dict(result)
        tracker.log_summary(run_id, names.prefixed(names.TEST, suite_metrics(so_far)),
                            step=cfg.optim.epochs)
        done = {k: v for k, v in so_far.items() if k != "clean"}
        tracker.set_tags(run_id, {names.EVAL_PARTIAL: json.dumps({"key": key, "done": done})})

    return keep


def _stopped(tracker: Tracker, t: Target, run_id: str, chosen: Sequence[str],
             log: Log) -> None:
    """Ctrl-C: say what is kept and how to continue; an ``eval`` run of its own ends KILLED
    (a trial's run keeps its status)."""
    tags = tracker.run_info(run_id)["tags"]
    try:
        kept = list(json.loads(tags.get(names.EVAL_PARTIAL) or "{}").get("done") or {})
    except ValueError:
        kept = []
    if t.run_id is None:
        tracker.end(run_id, "KILLED")
    log(f"stopped: {len(kept)} of {len(chosen)} attacks finished and logged to run {run_id}"
        f"{' (' + ', '.join(kept) + ')' if kept else ''}; the same command continues from "
        "the next attack")


def _log(tracker: Tracker, t: Target, run_id: str, cfg: ExperimentConfig,
         results: dict[str, dict[str, float]], table: str, tmp: Path, log: Log,
         files: Sequence[tuple[Path, str]] = ()) -> None:
    """Metrics, the table and ``files`` (path, artifact folder) into the run; the partial
    state goes: a complete evaluation is not continued, it is run again."""
    metrics = names.prefixed(names.TEST, suite_metrics(results))
    tracker.log_summary(run_id, metrics, step=cfg.optim.epochs)
    tracker.delete_tag(run_id, names.EVAL_PARTIAL)
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
