"""Ray plumbing shared by ``search`` and ``grid``: start Ray, log trials to MLflow, fit/restore.

MLflow sees a single writer: the driver. Trials report to Ray;
:class:`ablate.trial_logger.TrialLogger`, a Tune callback running in the driver, turns each report
into metrics of the trial's child run, so the SQLite store never has concurrent writers.
"""

from __future__ import annotations

import logging
import os
import socket
import time
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
from ablate.storage import experiment_dir, make_private
from ablate.tracking import Tracker
from ablate.tracking_uri import redact
from ablate.trial_logger import TrialLogger, trial_dirname
from ablate.ui import browse_line
from trainables.ciard import train_ciard

# Ray pickles a search's trial_dirname_creator (and callbacks) into its experiment state by this
# module's path: searches interrupted before they moved to ablate.trial_logger still resume.
RESTORED_BY_PATH = (TrialLogger, trial_dirname)

# Quiet Ray: our callback prints one line per trial; Ray's tables, TensorBoard hints and
# snapshot-frequency warnings (every epoch checkpoints, on purpose) would drown it. Nor may Ray
# swap builtins.print for its progress-bar-safe print (it does on the first worker log line
# from a cluster): the callbacks hold `print` and are pickled into the experiment state.
for _key, _value in (("RAY_AIR_NEW_OUTPUT", "0"), ("RAY_TQDM_PATCH_PRINT", "0"),
                     ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")):
    os.environ.setdefault(_key, _value)
EXIT_INTERRUPTED = 130
EXIT_FAILED = 1


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
