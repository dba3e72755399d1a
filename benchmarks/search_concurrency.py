"""Concurrent trials vs one at a time: the same fixed set of digits trials, wall time of each,
and where the time goes.

    python benchmarks/search_concurrency.py [--trials 4] [--epochs 6] [--cpus-per-trial 1]

Each trial pins torch to its CPU share, so N trials on N cores should take about 1/N of the
serial time. The trials are fixed points (no sampling, no early stopping), so both runs
train exactly the same work; the MLflow store and Ray storage are temporary (new, so each run
pays for creating the store, as a first search does). Each run's wall time is split, from the
child runs' start and end times in MLflow, into the part before the first trial started
(preamble, Ray starting the trial workers: process and imports), the trial phase (first trial
start to last trial end: what concurrency can shorten) and the part after (summary, final
test). CPU: of this process (the driver, the MLflow writer) and of Ray's own processes (GCS,
raylet, ...) during the search: what the trials do not get of the machine's cores. An
untimed one-trial search runs first, so that neither timed run pays the driver's one-off imports.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from ablate.config import load_search_spec
from ablate.runtime import Options, machine_resources, teacher_states
from ablate.search import run_search
from ablate.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]
RAY_SYSTEM = ("gcs_server", "raylet", "ray/_private/", "ray/dashboard/", "ray/autoscaler/")


@dataclass
class Timing:
    wall: float  # seconds, the whole run_search call
    before: float  # call start -> first trial's child run started
    trials: float  # first trial started -> last trial ended
    after: float  # last trial ended -> call returned
    driver_cpu: float  # CPU seconds of this process during the call
    ray_cpu: float  # CPU seconds of Ray's own processes (GCS, raylet, ...; not the workers)


def ray_system_cpu() -> float:
    """CPU seconds so far of Ray's system processes on this machine (GCS, raylet, monitors;
    Linux ``/proc``). Workers, whose titles start with ``ray::``, are left out: they are the
    trials."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if cmd.startswith("ray::") or not any(k in cmd for k in RAY_SYSTEM):
                continue
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / tick  # utime, stime
        except (OSError, UnicodeDecodeError):  # ended meanwhile
            continue
    return total


def timed_search(trials: int, epochs: int, cpus: float, concurrent: int, tmp: Path) -> Timing:
    points = [{"method.alpha": 0.3 + 0.1 * i, "method.beta": 0.5, "method.lam": 0.1,
               "push_temp": 4.0, "itt.freeze_epochs": min(2, epochs), "itt.teacher_lr": 1e-3}
              for i in range(trials)]
    overrides = [f"num_samples={trials}", f"base.optim.epochs={epochs}",
                 f"space.itt.freeze_epochs.high={epochs}", "scheduler.name=none",
                 f"searcher.points_to_evaluate={points}", f"resources.cpu={cpus}",
                 f"max_concurrent={concurrent}", f"name=bench-{concurrent}"]
    spec = load_search_spec(REPO / "search_spaces/quickstart.yaml", overrides)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    opts = Options(tracking_uri=uri, storage=str(tmp / "ray"), heartbeat=0)
    cpu0, ray0, start = os.times(), ray_system_cpu(), time.time()
    code = run_search(spec, opts, log=lambda _: None)
    end, cpu1, ray1 = time.time(), os.times(), ray_system_cpu()
    assert code == 0, f"search with max_concurrent={concurrent} failed"
    tracker = Tracker(uri)
    parent = tracker.find_run(spec.name, {"kind": "search"})
    assert parent is not None
    runs = tracker.children(parent)
    first = min(r["start_time"] for r in runs) / 1000
    last = max(r["end_time"] for r in runs) / 1000
    return Timing(end - start, first - start, last - first, end - last,
                  (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), ray1 - ray0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    args = parser.parse_args()
    cores = int(machine_resources()["CPU"])
    parallel = max(1, int(cores // args.cpus_per_trial))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ABLATE_CACHE", str(REPO / ".cache/ablate"))
        # Teachers first: a cold cache would charge their training to the first timed search.
        base = load_search_spec(REPO / "search_spaces/quickstart.yaml").base
        teacher_states(base, log=lambda _: None)
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        # An untimed search first: the driver's one-off imports (torch._dynamo with the first
        # optimizer, MLflow's store, plotly) would otherwise be charged to the first timed run.
        timed_search(1, 2, args.cpus_per_trial, 1, Path(tmp) / "warm-up")
        times = {}
        for concurrent in (1, parallel):
            times[concurrent] = timed_search(args.trials, args.epochs, args.cpus_per_trial,
                                             concurrent, Path(tmp) / str(concurrent))
        ray.shutdown()
    work = args.trials * args.epochs
    print(f"{args.trials} digits trials x {args.epochs} epochs, {args.cpus_per_trial:g} CPU per "
          f"trial, {cores} cores")
    for concurrent, t in times.items():
        print(f"  max_concurrent={concurrent}: {t.wall:6.1f} s wall ({work / t.wall:.2f} "
              f"trial-epochs/s) = {t.before:4.1f} s before the first trial + {t.trials:5.1f} s "
              f"trials + {t.after:4.1f} s after; CPU: driver {t.driver_cpu:4.1f} s, Ray's "
              f"processes {t.ray_cpu:4.1f} s")
    one, many = times[1], times[parallel]
    print(f"  speed-up {one.wall / many.wall:.2f}x for the job, {one.trials / many.trials:.2f}x "
          f"for the trial phase, with {parallel} concurrent trials")


if __name__ == "__main__":
    main()
