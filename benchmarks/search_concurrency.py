"""Concurrent trials vs one at a time: the same fixed set of digits trials, wall time of each.

    python benchmarks/search_concurrency.py [--trials 4] [--epochs 6] [--cpus-per-trial 1]

Each trial pins torch to its CPU share, so N trials on N cores should take about 1/N of the
serial time. The trials are fixed points (no sampling, no early stopping), so both runs
train exactly the same work; the MLflow store and Ray storage are temporary.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray

from ablate.resources import machine_resources
from ablate.runner import Options, teacher_states
from ablate.search import run_search
from ablate.search_spec import load_search_spec

REPO = Path(__file__).resolve().parents[1]


def timed_search(trials: int, epochs: int, cpus: float, concurrent: int, tmp: Path) -> float:
    points = [{"method.alpha": 0.3 + 0.1 * i, "method.beta": 0.5, "method.lam": 0.1,
               "push_temp": 4.0, "itt.freeze_epochs": 2, "itt.teacher_lr": 1e-3}
              for i in range(trials)]
    overrides = [f"num_samples={trials}", f"base.optim.epochs={epochs}",
                 f"space.itt.freeze_epochs.high={epochs}", "scheduler.name=none",
                 f"searcher.points_to_evaluate={points}", f"resources.cpu={cpus}",
                 f"max_concurrent={concurrent}", f"name=bench-{concurrent}"]
    spec = load_search_spec(REPO / "search_spaces/quickstart.yaml", overrides)
    opts = Options(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", storage=str(tmp / "ray"))
    start = time.perf_counter()
    code = run_search(spec, opts, log=lambda _: None)
    elapsed = time.perf_counter() - start
    assert code == 0, f"search with max_concurrent={concurrent} failed"
    return elapsed


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
        times = {}
        for concurrent in (1, parallel):
            times[concurrent] = timed_search(args.trials, args.epochs, args.cpus_per_trial,
                                             concurrent, Path(tmp) / str(concurrent))
        ray.shutdown()
    work = args.trials * args.epochs
    print(f"{args.trials} digits trials x {args.epochs} epochs, {args.cpus_per_trial:g} CPU per "
          f"trial, {cores} cores")
    for concurrent, seconds in times.items():
        print(f"  max_concurrent={concurrent}: {seconds:6.1f} s wall  "
              f"({work / seconds:.2f} trial-epochs/s)")
    print(f"  speed-up {times[1] / times[parallel]:.2f}x with {parallel} concurrent trials")


if __name__ == "__main__":
    main()
