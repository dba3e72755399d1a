"""The driver's Tune callback that logs each trial to MLflow (:class:`TrialLogger`), and how
trials are named: their number, directory and error reason."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from ablate import names
from ablate.config import dump_yaml
from ablate.core import signals
from ablate.core.console import Log
from ablate.tracking import Tracker

_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*?: .+")


def error_reason(trace: str | None) -> str:
    """The last 'SomeError: message' line of a Ray error trace, e.g. a NaN-loss reason."""
    if not trace:
        return "unknown error"
    lines = [ln.strip() for ln in str(trace).splitlines() if ln.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line[:500]
    return lines[-1][:500] if lines else "unknown error"


def interrupted(reason: str) -> bool:
    """Whether a trial's error is the stop of the whole job, not a failure of the trial:
    Ctrl-C or SIGTERM reached its worker (to the process group), or the driver had already been
    told to stop, so that a worker dying now is part of the stop."""
    return ("KeyboardInterrupt" in reason or "receives a SIGTERM" in reason
            or bool(signals.received))


def trial_number(trial: Any, first: int = 1) -> int:
    """1-based order in which the trial was created, from Ray's experiment tag prefix, which
    counts from ``first``: 1 for a searcher's trials, 0 for a grid's variants."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    return int(head) - first + 1 if head.isdigit() else 0


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial_number(trial):04d}_{trial.trial_id}"


def cell_dirname(trial: Any) -> str:
    """A grid cell's directory: Ray counts variants from 0, ablate from 1."""
    return f"trial_{trial_number(trial, first=0):04d}_{trial.trial_id}"


class TrialLogger(tune.Callback):
    """One MLflow child run per trial, per-epoch metrics, a console line per finished trial.

    A child run's params are what varies between trials (``run_params``); its full config is
    its ``config.yaml`` artifact (``run_config``). A restored search finds each trial's run
    again by its ``trial_id`` tag, so a resumed trial keeps logging into the same run.
    """

    def __init__(self, tracker: Tracker, experiment: str, parent_run_id: str, *,
                 run_params: Callable[[dict[str, Any]], dict[str, Any]],
                 run_tags: Callable[[dict[str, Any]], dict[str, str]],
                 describe: Callable[[dict[str, Any]], str], epochs: int, log: Log = print,
                 run_name: Callable[[dict[str, Any], int, str], str] | None = None,
                 run_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 first: int = 1):
        self.tracker, self.experiment, self.parent = tracker, experiment, parent_run_id
        self.run_params, self.run_tags, self.describe = run_params, run_tags, describe
        self.run_name = run_name or (lambda sampled, number, tid: f"trial-{tid}")
        self.run_config = run_config
        self.epochs, self.log, self.first = epochs, log, first
        self.runs: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.open: set[str] = set()
        self.last_epoch: dict[str, int] = {}
        self.known: set[str] = set()  # every trial Ray holds (restored ones included)
        self.done: set[str] = set()  # trials seen to finish, stop early or fail for good
        self.failed: dict[str, str] = {}  # trial id -> why it failed for good
        self.stepped = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self.stepped:  # a restored search: the trials that had ended before
            self.done |= {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}
            self.stepped = True
        self.known |= {t.trial_id for t in trials}

    def unfinished(self, results: tune.ResultGrid, expected: int) -> int:
        """How many of the ``expected`` trials did not end. Ray marks the trials it stops on
        Ctrl-C as TERMINATED, so only what this callback saw end counts as ended."""
        if not self.stepped:  # restored with every trial already ended: nothing ran
            return expected - results.num_terminated - results.num_errors
        return expected - len(self.done)

    def discard_orphans(self) -> list[str]:
        """Delete the child runs of trials that Ray no longer knows: a driver killed before
        Ray saved its state loses the trials it had just started, and the restored searcher
        samples new ones in their place. Returns the discarded trial ids."""
        if not self.stepped:
            return []
        keep = self.known | {None}  # a run without a trial id is not a trial's
        lost = [run for run in self.tracker.children(self.parent)
                if run["tags"].get(names.TRIAL_ID) not in keep]
        for run in lost:
            self.tracker.end(run["run_id"], "KILLED")
            self.tracker.delete(run["run_id"])
        return [run["tags"][names.TRIAL_ID] for run in lost]

    def run_id(self, trial: Any) -> str:
        tid = trial.trial_id
        self.known.add(tid)  # started since the last step (a grid starts several at once)
        if tid not in self.runs:
            found = self.tracker.find_run(self.experiment, {names.TRIAL_ID: tid,
                                                            names.PARENT_RUN: self.parent})
            self.names[tid] = self.run_name(trial.config, trial_number(trial, self.first), tid)
            self.runs[tid] = found or self._start(trial)
        if tid not in self.open:  # a resumed trial continues its run (a no-op for a new one)
            self.tracker.reopen(self.runs[tid])
            self.open.add(tid)
            self.last_epoch[tid] = self.tracker.last_step(self.runs[tid], names.EPOCH)
        return self.runs[tid]

    def _start(self, trial: Any) -> str:
        tid = trial.trial_id
        run = self.tracker.start(
            self.experiment, self.names[tid], params=self.run_params(trial.config),
            tags={names.TRIAL_ID: tid, names.TRIAL_NUMBER: str(trial_number(trial, self.first)),
                  names.KIND: names.KIND_TRIAL,
                  **self.run_tags(trial.config)},
            parent_run_id=self.parent)
        if self.run_config is not None:
            self.tracker.log_text(run, dump_yaml(self.run_config(trial.config)),
                                  names.CONFIG_FILE)
        return run

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        run, epoch = self.run_id(trial), int(result[names.EPOCH])
        if epoch <= self.last_epoch[trial.trial_id]:
            return  # replayed from an older checkpoint after a crash: each epoch is logged once
        metrics = {k: v for k, v in result.items()
                   if ("/" in k or k == names.EPOCH) and isinstance(v, int | float)}
        self.tracker.log_metrics(run, metrics, step=epoch)
        self.last_epoch[trial.trial_id] = epoch

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        epochs = int(result.get("training_iteration", 0))
        stopped = epochs < self.epochs
        run = self.run_id(trial)
        tags = {names.EPOCHS_TRAINED: str(epochs), names.STOPPED_EARLY: names.flag(stopped)}
        if stopped:  # visible in the runs table's name column
            tags[names.RUN_NAME] = f"{self.names[trial.trial_id]}-stopped"
        if trial.checkpoint is not None:  # trainer.pt + config.yaml: `ablate eval RUN_ID`
            tags[names.CHECKPOINT] = trial.checkpoint.path
        if result.get(names.NODE_ID):  # the Ray node it finished on (after a resume: the last)
            tags[names.NODE_ID] = result[names.NODE_ID]
        for key in (names.GPU_IDS, names.CUDA_VISIBLE):  # only a trial with a GPU share
            if result.get(key) is not None:
                tags[key] = str(result[key])
        self.tracker.set_tags(run, tags)
        self.tracker.end(run, "FINISHED")
        self.open.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        how = f"stopped early after {epochs}/{self.epochs}" if stopped else f"{epochs}"
        w = 100 * result.get(names.OBJECTIVE, float("nan"))
        number = trial_number(trial, self.first)
        self.log(f"trial {number} ({trial.trial_id}): {how} epochs, best val W {w:.1f}% "
                 f"(clean {100 * result.get(names.BEST_CLEAN, float('nan')):.1f}%, "
                 f"PGD {100 * result.get(names.BEST_ROBUST, float('nan')):.1f}%)  "
                 f"{self.describe(trial.config)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # The driver writes the trace to the trial's local directory before this callback; the
        # copy in (possibly remote) storage may not be synced yet.
        local = Path(trial.error_file) if trial.error_file else None
        reason = error_reason(local.read_text() if local and local.exists() else
                              trial.get_error())
        run = self.run_id(trial)
        if interrupted(reason):  # Ctrl-C or SIGTERM reached the worker: interrupted, not failed
            return
        self.tracker.set_tags(run, {names.ERROR: reason})
        self.tracker.end(run, "FAILED")
        self.open.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        self.failed[trial.trial_id] = reason
        self.log(f"trial {trial_number(trial, self.first)} ({trial.trial_id}): FAILED: {reason}  "
                 f"{self.describe(trial.config)}")

    def close_open(self, status: str = "KILLED") -> None:
        """Mark runs of trials still in flight (an interrupted search) as ``status``."""
        for tid in sorted(self.open):
            self.tracker.end(self.runs[tid], status)
        self.open.clear()
