"""Ray plumbing shared by ``search`` and ``grid``: start Ray, log trials to MLflow, fit/restore.

MLflow sees a single writer: the driver. Trials report to Ray; :class:`TrialLogger`, a Tune
callback running in the driver, turns each report into metrics of the trial's child run, so the
SQLite store never has concurrent writers.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ray
from ray import tune

from ablate.build import Log, build_data, prepare_teachers, resolve_device
from ablate.config import ConfigError, ExperimentConfig, check_inputs
from ablate.progress import Heartbeat
from ablate.recipe import Recipe
from ablate.resources import (
    Resources,
    check_resources,
    check_trial_device,
    machine_resources,
)
from ablate.safe_yaml import dump_yaml
from ablate.storage import experiment_dir, make_private
from ablate.tracking import Tracker
from ablate.tracking_uri import redact
from ablate.ui import browse_line
from trainables.ciard import train_ciard

# Quiet Ray: our callback prints one line per trial; Ray's tables, TensorBoard hints and
# snapshot-frequency warnings (every epoch checkpoints, on purpose) would drown it. Nor may Ray
# swap builtins.print for its progress-bar-safe print (it does on the first worker log line
# from a cluster): the callbacks hold `print` and are pickled into the experiment state.
for _key, _value in (("RAY_AIR_NEW_OUTPUT", "0"), ("RAY_TQDM_PATCH_PRINT", "0"),
                     ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")):
    os.environ.setdefault(_key, _value)
EXIT_INTERRUPTED = 130
EXIT_FAILED = 1
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*?: .+")


def init_ray(address: str | None, resources: dict[str, float]) -> dict[str, float]:
    """Start a local Ray (or join ``address``); returns the cluster's resources."""
    if not ray.is_initialized():
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=True)
        if address:
            ray.init(address=address, **quiet)
        else:
            # "local": a new Ray of our own even when `ray start` runs one on this machine
            ray.init(address="local", num_cpus=int(resources["CPU"]),
                     num_gpus=int(resources["GPU"]), **quiet)
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def error_reason(trace: str | None) -> str:
    """The last 'SomeError: message' line of a Ray error trace, e.g. a NaN-loss reason."""
    if not trace:
        return "unknown error"
    lines = [ln.strip() for ln in str(trace).splitlines() if ln.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line[:500]
    return lines[-1][:500] if lines else "unknown error"


def trial_number(trial: Any) -> int:
    """1-based order in which the searcher created the trial (Ray's experiment tag prefix)."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    return int(head) if head.isdigit() else 0


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial_number(trial):04d}_{trial.trial_id}"


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
                 run_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.tracker, self.experiment, self.parent = tracker, experiment, parent_run_id
        self.run_params, self.run_tags, self.describe = run_params, run_tags, describe
        self.run_name = run_name or (lambda sampled, number, tid: f"trial-{tid}")
        self.run_config = run_config
        self.epochs, self.log = epochs, log
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
        lost = [run for run in self.tracker.children(self.parent)
                if run["tags"].get("trial_id") and run["tags"]["trial_id"] not in self.known]
        for run in lost:
            self.tracker.end(run["run_id"], "KILLED")
            self.tracker.delete(run["run_id"])
        return [run["tags"]["trial_id"] for run in lost]

    def run_id(self, trial: Any) -> str:
        tid = trial.trial_id
        self.known.add(tid)  # started since the last step (a grid starts several at once)
        if tid not in self.runs:
            found = self.tracker.find_run(self.experiment, {"trial_id": tid,
                                                            "mlflow.parentRunId": self.parent})
            self.names[tid] = self.run_name(trial.config, trial_number(trial), tid)
            self.runs[tid] = found or self._start(trial)
        if tid not in self.open:  # a resumed trial continues its run (a no-op for a new one)
            self.tracker.reopen(self.runs[tid])
            self.open.add(tid)
            self.last_epoch[tid] = self.tracker.last_step(self.runs[tid], "epoch")
        return self.runs[tid]

    def _start(self, trial: Any) -> str:
        tid = trial.trial_id
        run = self.tracker.start(
            self.experiment, self.names[tid], params=self.run_params(trial.config),
            tags={"trial_id": tid, "trial_number": str(trial_number(trial)), "kind": "trial",
                  **self.run_tags(trial.config)},
            parent_run_id=self.parent)
        if self.run_config is not None:
            self.tracker.log_text(run, dump_yaml(self.run_config(trial.config)), "config.yaml")
        return run

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        run, epoch = self.run_id(trial), int(result["epoch"])
        if epoch <= self.last_epoch[trial.trial_id]:
            return  # replayed from an older checkpoint after a crash: each epoch is logged once
        metrics = {k: v for k, v in result.items()
                   if ("/" in k or k == "epoch") and isinstance(v, int | float)}
        self.tracker.log_metrics(run, metrics, step=epoch)
        self.last_epoch[trial.trial_id] = epoch

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        epochs = int(result.get("training_iteration", 0))
        stopped = epochs < self.epochs
        run = self.run_id(trial)
        tags: dict[str, Any] = {"epochs_trained": epochs, "stopped_early": stopped}
        if stopped:  # visible in the runs table's name column
            tags["mlflow.runName"] = f"{self.names[trial.trial_id]}-stopped"
        if trial.checkpoint is not None:  # trainer.pt + config.yaml: `ablate eval RUN_ID`
            tags["checkpoint"] = trial.checkpoint.path
        if result.get("node_id"):  # the Ray node it finished on (after a resume: the last)
            tags["node_id"] = result["node_id"]
        self.tracker.set_tags(run, tags)
        self.tracker.end(run, "FINISHED")
        self.open.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        how = f"stopped early after {epochs}/{self.epochs}" if stopped else f"{epochs}"
        w = 100 * result.get("val/best_w_acc", float("nan"))
        self.log(f"trial {trial_number(trial)} ({trial.trial_id}): {how} epochs, best val W "
                 f"{w:.1f}% "
                 f"(clean {100 * result.get('val/best_clean_acc', float('nan')):.1f}%, "
                 f"PGD {100 * result.get('val/best_robust_acc', float('nan')):.1f}%)  "
                 f"{self.describe(trial.config)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # The driver writes the trace to the trial's local directory before this callback; the
        # copy in (possibly remote) storage may not be synced yet.
        local = Path(trial.error_file) if trial.error_file else None
        reason = error_reason(local.read_text() if local and local.exists() else
                              trial.get_error())
        run = self.run_id(trial)
        if "KeyboardInterrupt" in reason:  # Ctrl-C reached the worker: interrupted, not failed
            return
        self.tracker.set_tags(run, {"error": reason})
        self.tracker.end(run, "FAILED")
        self.open.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        self.failed[trial.trial_id] = reason
        self.log(f"trial {trial_number(trial)} ({trial.trial_id}): FAILED: {reason}  "
                 f"{self.describe(trial.config)}")

    def close_open(self, status: str = "KILLED") -> None:
        """Mark runs of trials still in flight (an interrupted search) as ``status``."""
        for tid in sorted(self.open):
            self.tracker.end(self.runs[tid], status)
        self.open.clear()


def wait_for_cluster(address: str, timeout: float) -> None:
    """Give up on a cluster address that nothing answers within ``timeout`` seconds (Ray
    itself retries for minutes). ``auto`` and a local start need no probe."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise ConfigError(f"--address {address}: no Ray cluster answers there after "
                                  f"{timeout:g} s ({exc.strerror or exc}); is the head node "
                                  "up (`ray start --head`)? --connect-timeout sets the wait"
                                  ) from None
            time.sleep(1)


@dataclass
class Options:
    """How to run a job: where to log, where Ray keeps state, which cluster, resume or not."""

    tracking_uri: str | None = None
    storage: str | None = None
    address: str | None = None
    resume: bool = False
    fresh: bool = False
    connect_timeout: float = 30.0  # seconds to wait for --address to answer
    heartbeat: float = 30.0  # seconds between progress lines; 0 = none
    command: str = "ablate search SPEC"  # how the job was started, for the resume hint


class Job(Protocol):
    """What :func:`run_job` needs from a search (:class:`ablate.search.SearchJob`) or a grid
    (:class:`ablate.grid.GridJob`): one Ray Tune experiment of CIARD trials over a base
    experiment, how each trial is logged, and how the whole is summarised into the parent run."""

    kind: str  # "search" | "grid": the parent run's `kind` tag
    name: str  # MLflow experiment; the Ray experiment is NAME-DIGEST
    digest: str  # the spec's hash
    base: ExperimentConfig  # the experiment every trial starts from (teachers, data)
    resources: Resources  # per trial
    trials: int  # how many trials make the job complete
    max_failures: int  # retries of a trial from its last checkpoint
    recipe: Recipe  # how each trial's config is made, on the workers and in the driver
    test_at_end: bool  # each trial tests its best checkpoint when done (a grid cell)

    def parent_params(self) -> dict[str, Any]: ...
    def parent_tags(self) -> dict[str, str]: ...
    def warnings(self) -> list[str]: ...  # inert terms, printed before the run
    def plan(self, available: dict[str, float]) -> str: ...
    def tune_config(self) -> tune.TuneConfig: ...
    def param_space(self) -> dict[str, Any] | None: ...
    def describe(self, sampled: dict[str, Any]) -> str: ...  # a trial on the console
    def run_name(self, sampled: dict[str, Any], number: int, trial_id: str) -> str: ...
    def run_params(self, sampled: dict[str, Any]) -> dict[str, Any]: ...  # what varies
    def run_config(self, sampled: dict[str, Any]) -> dict[str, Any]: ...  # config.yaml
    def run_tags(self, sampled: dict[str, Any]) -> dict[str, str]: ...
    def summarize(self, results: tune.ResultGrid, tracker: Tracker, parent: str,
                  params: dict[str, Any]) -> None: ...


@dataclass
class JobFields:
    """The data fields of a :class:`Job`, which a job sets from its spec in ``__post_init__``
    (shared by :class:`ablate.search.SearchJob` and :class:`ablate.grid.GridJob`)."""

    name: str = field(init=False)
    digest: str = field(init=False)
    base: ExperimentConfig = field(init=False)
    resources: Resources = field(init=False)
    trials: int = field(init=False)
    max_failures: int = field(init=False)
    recipe: Recipe = field(init=False)

    def run_config(self, sampled: dict[str, Any]) -> dict[str, Any]:
        return self.recipe.config(sampled).model_dump(mode="json")


def teacher_states(cfg: ExperimentConfig, log: Log) -> dict[str, dict[str, Any]]:
    """Load or train (and cache) both teachers once, as CPU state dicts for the object store."""
    clean, robust = prepare_teachers(cfg, build_data(cfg), resolve_device(cfg.device), log)
    return {role: {k: v.detach().cpu() for k, v in net.state_dict().items()}
            for role, net in (("clean", clean), ("robust", robust))}


def run_job(job: Job, opts: Options, log: Log = print) -> int:
    """Validate inputs and resources, prepare teachers, run or resume the Tuner, summarise.
    Returns the exit code: 0, or 130 when interrupted (finished trials are kept)."""
    umask = os.umask(0o077)  # what Ray writes (restored by unpickling) stays private
    try:
        return _run_job(job, opts, log)
    finally:
        os.umask(umask)


def _run_job(job: Job, opts: Options, log: Log) -> int:
    check_inputs(job.base)
    check_trial_device(job.resources, job.base.device)
    path = experiment_dir(opts.storage, f"{job.name}-{job.digest}", resume=opts.resume,
                          fresh=opts.fresh)
    if opts.address:
        wait_for_cluster(opts.address, opts.connect_timeout)
    else:
        check_resources(job.resources, machine_resources(), "this machine")
    make_private(path)
    params = dict(recipe=job.recipe.rooted(Path.cwd()), teachers=teacher_states(job.base, log),
                  threads=job.resources.cpu)
    tracker = Tracker(opts.tracking_uri)
    if not opts.address:  # resources already checked; open the store while Ray starts
        tracker.open_in_background()
    available = init_ray(opts.address, machine_resources())
    check_resources(job.resources, available,
                    f"the Ray cluster at {opts.address}" if opts.address else "this machine")
    parent = _parent_run(job, tracker, path, opts.resume)
    log(job.plan({"CPU": available.get("CPU", 0), "GPU": available.get("GPU", 0)}))
    for line in job.warnings():
        log(f"warning: {line}")
    log(f"MLflow parent run {parent} in {redact(tracker.uri)}; Ray experiment {path}")
    trainable = tune.with_resources(tune.with_parameters(train_ciard, **params,
                                                         test_at_end=job.test_at_end),
                                    {"cpu": job.resources.cpu, "gpu": job.resources.gpu})
    logger = TrialLogger(tracker, job.name, parent, epochs=job.base.optim.epochs, log=log,
                         describe=job.describe, run_params=job.run_params, run_tags=job.run_tags,
                         run_name=job.run_name, run_config=job.run_config)
    try:
        heartbeat = Heartbeat(planned=job.trials, epochs=job.base.optim.epochs,
                              every=opts.heartbeat, log=log)
        results = _tuner(job, trainable, path, opts.resume, [logger, heartbeat]).fit()
        for tid in logger.discard_orphans():
            log(f"discarded the child run of trial {tid}: it was lost with the interrupted "
                "driver before Ray saved it, and a new trial took its place")
        left = logger.unfinished(results, job.trials)
        if left:  # Ray caught the Ctrl-C, stopped the trials and saved their state
            raise KeyboardInterrupt(f"{job.trials - left} of {job.trials} trials ended")
        if results.num_errors == job.trials:  # nothing to summarise: not a finished job
            reason = next(iter(logger.failed.values()), "see the trials' error tags")
            log(f"error: all {job.trials} trials failed, so there is no result (first "
                f"reason: {reason})")
            tracker.end(parent, "FAILED")
            return EXIT_FAILED
        job.summarize(results, tracker, parent, params)
    except KeyboardInterrupt as exc:
        logger.close_open("KILLED")
        tracker.set_tags(parent, {"interrupted": "true"})
        tracker.end(parent, "KILLED")
        done = f" ({exc}; no summary from partial work)" if str(exc) else ""
        log(f"interrupted{done}. Finished trials are kept; continue with: {opts.command} "
            "--resume")
        return EXIT_INTERRUPTED
    except BaseException:
        logger.close_open("FAILED")
        tracker.end(parent, "FAILED")
        raise
    if opts.resume:
        tracker.set_tags(parent, {"interrupted": "false"})
    tracker.end(parent, "FINISHED")
    log(browse_line(tracker, parent, opts.tracking_uri))
    return 0


def _parent_run(job: Job, tracker: Tracker, path: str, resume: bool) -> str:
    tags = {"kind": job.kind, "spec_hash": job.digest, "storage": path}
    found = tracker.find_run(job.name, tags) if resume else None
    if found is not None:
        tracker.reopen(found)
        return found
    return tracker.start(job.name, f"{job.kind}-{job.digest}", params=job.parent_params(),
                         tags={**tags, "method": job.base.method.name, **job.parent_tags()},
                         parent_run_id=getattr(job, "nested_in", None))  # in a search's


def _tuner(job: Job, trainable: Any, path: str, resume: bool,
           callbacks: list[tune.Callback]) -> tune.Tuner:
    if resume:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
        return replace_callbacks(tuner, callbacks)
    run_config = tune.RunConfig(
        name=path.rsplit("/", 1)[1], storage_path=path.rsplit("/", 1)[0], callbacks=callbacks,
        verbose=0, failure_config=tune.FailureConfig(max_failures=job.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    return tune.Tuner(trainable, param_space=job.param_space(), tune_config=job.tune_config(),
                      run_config=run_config)


def replace_callbacks(tuner: tune.Tuner, callbacks: list[tune.Callback]) -> tune.Tuner:
    """A restored Tuner would log through the callbacks unpickled from the first invocation;
    use this invocation's (its tracking URI and console). ``Tuner.restore`` has no public
    argument for it, so this is the one place that touches Ray internals (tested against the
    installed Ray: ``tests/test_runner.py``)."""
    internal = getattr(tuner, "_local_tuner", None)
    run_config = getattr(internal, "get_run_config", lambda: None)()
    if run_config is None or not hasattr(run_config, "callbacks"):
        raise RuntimeError(f"ray {ray.__version__}: Tuner._local_tuner.get_run_config() "
                           "changed; ablate cannot set the callbacks of a restored search")
    run_config.callbacks = callbacks
    return tuner
