"""One Ray Tune job (a search, a grid, a confirm stage) run or resumed: inputs and resources
checked, teachers prepared once, the parent run opened, the Tuner fitted or restored, the job
summarised, and Ctrl-C turned into an interrupted job that ``--resume`` continues.

MLflow sees a single writer: the driver. Trials report to Ray;
:class:`~ablate.runtime.trial_logger.TrialLogger`, a Tune callback running in the driver, turns
each report into metrics of the trial's child run, so the SQLite store never has concurrent
writers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import ray
from ray import tune

from ablate import names
from ablate.build import build_data, check_inputs, prepare_teachers, resolve_device
from ablate.config import (
    ExperimentConfig,
    check_resources,
    check_trial_device,
    redact,
)
from ablate.core import signals
from ablate.core.console import Log, fit
from ablate.core.errors import BAD_INPUT
from ablate.runtime.cluster import init_ray, local_resources, machine_resources, wait_for_cluster
from ablate.runtime.job import Job, Options
from ablate.runtime.progress import Heartbeat
from ablate.runtime.storage import experiment_dir, make_private
from ablate.runtime.trial_logger import TrialLogger
from ablate.tracking import (
    EXIT_TRACKING_LOST,
    StoreBroken,
    Tracker,
    TrackingLost,
    browse_line,
    publish_views,
)
from trainables.ciard import train_ciard

EXIT_INTERRUPTED = 130
EXIT_FAILED = 1


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
    if opts.address:
        wait_for_cluster(opts.address, opts.connect_timeout)
    else:  # this machine, or the Ray this process already runs (its declared resources)
        check_resources(job.resources, *local_resources())
    # One job per experiment directory: the claim (a lock) lasts as long as this job.
    with experiment_dir(opts.storage, f"{job.name}-{job.digest}", resume=opts.resume,
                        fresh=opts.fresh) as path:
        make_private(path)
        return _run_claimed(job, opts, path, log)


def _run_claimed(job: Job, opts: Options, path: str, log: Log) -> int:
    tracker = Tracker(opts.tracking_uri)
    if tracker.sqlite_path is None:  # a server: answering, before teachers train or Ray starts
        tracker.check()  # (a SQLite file was read when the command line was checked)
    params = dict(recipe=job.recipe.rooted(Path.cwd()), teachers=teacher_states(job.base, log),
                  threads=job.resources.cpu)
    where = f"the Ray cluster at {opts.address}" if opts.address else local_resources()[1]
    if not opts.address:  # resources already checked; open the store while Ray starts
        tracker.open_in_background()
    available = init_ray(opts.address, machine_resources())
    check_resources(job.resources, available, where)
    parent, before = _parent_run(job, tracker, path, opts.resume)
    publish_views(tracker, parent, job.view_params)  # the runs table's URL works from now on
    log(fit(job.plan({"CPU": available.get("CPU", 0), "GPU": available.get("GPU", 0)})))
    for line in job.warnings():
        log(fit(f"warning: {line}"))
    log(f"MLflow parent run {parent} in {redact(tracker.uri)}; Ray experiment {path}")
    job.start(tracker, parent)
    trainable = tune.with_resources(tune.with_parameters(train_ciard, **params,
                                                         test_at_end=job.test_at_end),
                                    {"cpu": job.resources.cpu, "gpu": job.resources.gpu})
    logger = TrialLogger(tracker, job.name, parent, epochs=job.base.optim.epochs, log=log,
                         describe=job.describe, run_params=job.run_params, run_tags=job.run_tags,
                         run_name=job.run_name, run_config=job.run_config,
                         first=job.first_tag)
    try:
        heartbeat = Heartbeat(planned=job.trials, epochs=job.base.optim.epochs,
                              expected=job.expected_epochs, first=job.first_tag,
                              every=opts.heartbeat, log=log)
        with signals.tuning():  # SIGTERM/SIGHUP: Tune's Ctrl-C handling while it runs
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
        with signals.finishing():  # every trial ended: a stop signal now lets the summary finish
            job.summarize(results, tracker, parent, params)
            _end_finished(tracker, parent, opts.resume)
    except KeyboardInterrupt as exc:
        logger.close_open("KILLED")
        tracker.set_tags(parent, {names.INTERRUPTED: names.flag(True)})
        tracker.end(parent, "KILLED")
        done = f" ({exc}; no summary from partial work)" if str(exc) else ""
        log(f"interrupted{done}. Finished trials are kept; continue with: {opts.command} "
            "--resume")
        return EXIT_INTERRUPTED
    except BaseException as exc:
        lost = cause(exc, TrackingLost)  # raised in Tune's callbacks, it arrives wrapped
        if lost is not None:  # the runs stay open; --resume closes them
            log(f"error: {lost}. The trials' checkpoints are kept; once it answers, continue "
                f"with: {opts.command} --resume")
            return EXIT_TRACKING_LOST
        broken = cause(exc, StoreBroken)
        # A missing or damaged checkpoint (bad input): the parent keeps the status it had
        # before a resume, so FINISHED stays so; any other failure fails it.
        keep = isinstance(exc, BAD_INPUT) and broken is None and before in _ENDED
        with contextlib.suppress(StoreBroken, TrackingLost):  # the store's fault: said alone
            logger.close_open("FAILED")
            tracker.end(parent, before if keep else "FAILED")
        if broken is not None:
            raise broken from None
        raise
    log(browse_line(tracker, parent, opts.tracking_uri))
    note = signals.finished_note()
    if note:
        log(note)
    return 0


def cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of type ``kind`` it was raised from or while handling."""
    seen: set[int] = set()
    here: BaseException | None = exc
    while here is not None and id(here) not in seen:
        if isinstance(here, kind):
            return here
        seen.add(id(here))
        here = here.__cause__ or here.__context__
    return None


def _end_finished(tracker: Tracker, parent: str, resume: bool) -> None:
    if resume:
        tracker.set_tags(parent, {names.INTERRUPTED: names.flag(False)})
    tracker.end(parent, "FINISHED")


_ENDED = ("FINISHED", "KILLED", "FAILED")


def _parent_run(job: Job, tracker: Tracker, path: str, resume: bool) -> tuple[str, str | None]:
    """The parent run, reopened on resume or new, and the status it had (None: new)."""
    tags = {names.KIND: job.kind, names.SPEC_HASH: job.digest, names.STORAGE: path}
    found = tracker.find_run(job.name, tags) if resume else None
    if found is not None:
        return found, tracker.reopen(found)
    return tracker.start(job.name, f"{job.kind}-{job.digest}", params=job.parent_params(),
                         tags={**tags, names.METHOD: job.base.method.name, **job.parent_tags()},
                         parent_run_id=getattr(job, "nested_in", None)), None  # in a search's


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
    installed Ray: ``tests/runtime/test_runner.py``)."""
    internal = getattr(tuner, "_local_tuner", None)
    run_config = getattr(internal, "get_run_config", lambda: None)()
    if run_config is None or not hasattr(run_config, "callbacks"):
        raise RuntimeError(f"ray {ray.__version__}: Tuner._local_tuner.get_run_config() "
                           "changed; ablate cannot set the callbacks of a restored search")
    run_config.callbacks = callbacks
    return tuner
