"""Is the search worth it? TPE+ASHA vs random search (FIFO) vs TPE (FIFO) on digits at the same
budget of trial-epochs, over several search seeds.

    python benchmarks/search_efficiency.py [--seeds 0 1 2 3 4] [--epochs 8] [--budget 96]
        [--grace 1] [--rf 2] [--startup 10] [--multivariate default|true|false]
        [--variants TPE+ASHA random+FIFO TPE+FIFO] [--cache curves.json]
        [--out search_efficiency.png] [OVERRIDE ...]

Every variant searches the quickstart space (no given first points; OVERRIDEs are search spec
overrides applied to every variant, e.g. a wider space with the student's learning rate
``"space.optim.lr={type: float, low: 0.001, high: 1.0, log: true}"``) with its own searcher seed;
trials run 2 at a time on this machine. From the child runs in MLflow, each reported epoch of
each trial (in time order) is one trial-epoch spent, and the best validation W-acc reported so
far is what the search has found. Printed: the best found at the budget (mean ± std over search
seeds), and for each search seed the trial-epochs each variant needed to reach the final best of
random search (``--tolerance``: or come within that many points of it, e.g. the noise between
trials measured by benchmarks/search_noise.py); the median over seeds of their ratio to the
trial-epochs random search itself needed is the efficiency (the issue's target for TPE+ASHA:
<= 1/3). TPE's startup trials are the draws of random search with the same seed, so a search
seed whose best random draw comes first gives every variant the same count; the last column
is therefore also computed on the curves averaged over search seeds (the usual "speed-up over
random search"): the trial-epochs until the mean curve reaches random search's mean final
best, and their ratio to random's own. A plot of the mean curves is
written to --out. ASHA gets as many trials as fit the budget in expectation
(:func:`ablate.cost.expected_epochs`); every curve is cut at the budget. ``--startup`` and
``--multivariate`` are TPE's ``searcher.n_startup_trials`` and ``searcher.multivariate``.
``--cache`` keeps every curve in a JSON file under a key of all the settings that shape it, and
reuses it: random search and FIFO runs are deterministic, so tuning ASHA or TPE reruns only them
(ASHA curves depend on the order in which trials report, so a reused one is one sample).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
from pathlib import Path

import matplotlib

from ablate import names

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ray  # noqa: E402

from ablate.config import load_search_spec  # noqa: E402
from ablate.cost.model import expected_epochs  # noqa: E402
from ablate.runtime import Options, teacher_states  # noqa: E402
from ablate.search import run_search  # noqa: E402
from ablate.tracking import Tracker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"TPE+ASHA": ("optuna_tpe", "asha"), "random+FIFO": ("optuna_random", "none"),
            "TPE+FIFO": ("optuna_tpe", "none")}


def curve(tracker: Tracker, name: str) -> list[float]:
    """Best validation objective found after each trial-epoch (index 0 = 1 epoch spent)."""
    parent = tracker.find_run(name, {"kind": "search"})
    assert parent is not None, name
    points = sorted(p for run in tracker.children(parent)
                    for p in tracker.metric_points(run["run_id"], names.OBJECTIVE))
    best, out = -math.inf, []
    for _, _, value in points:
        best = max(best, value)
        out.append(best)
    return out


def settings(variant: str, seed: int, args: argparse.Namespace) -> list[str]:
    """The search spec overrides of one variant and search seed (its cache key too)."""
    sampler, scheduler = VARIANTS[variant]
    trials = args.budget // args.epochs
    out = [f"base.optim.epochs={args.epochs}", f"space.itt.freeze_epochs.high={args.epochs}",
           "searcher.points_to_evaluate=[]", f"searcher.name={sampler}",
           f"searcher.seed={seed}", f"scheduler.name={scheduler}", "max_concurrent=2"]
    if scheduler == "asha":
        trials = int(args.budget // expected_epochs(args.grace, args.rf, args.epochs))
        out += [f"scheduler.grace_period={args.grace}", f"scheduler.reduction_factor={args.rf}"]
    if sampler == "optuna_tpe":
        out += [f"searcher.n_startup_trials={args.startup}"]
        if args.multivariate != "default":
            out += [f"searcher.multivariate={args.multivariate}"]
    return [*out, f"num_samples={trials}", *args.overrides]


def search(variant: str, seed: int, args: argparse.Namespace, tmp: Path) -> list[float]:
    name = f"eff-{variant.replace('+', '-')}-{seed}"
    overrides = [f"name={name}", *settings(variant, seed, args)]
    spec = load_search_spec(REPO / "search_spaces/quickstart.yaml", overrides)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    code = run_search(spec, Options(tracking_uri=uri, storage=str(tmp / "ray"), heartbeat=0),
                      log=lambda _: None)
    assert code == 0, f"{name} failed"
    return curve(Tracker(uri), name)[:args.budget]


def mean_curve(by_seed: dict[int, list[float]]) -> list[float]:
    """The best found after each trial-epoch, averaged over search seeds."""
    n = min(len(c) for c in by_seed.values())
    return [statistics.mean(c[i] for c in by_seed.values()) for i in range(n)]


def needed(values: list[float], target: float) -> float:
    """Trial-epochs until ``values`` first reaches ``target`` (inf if never)."""
    return next((i + 1 for i, v in enumerate(values) if v >= target - 1e-12), math.inf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="search spec overrides for every variant")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--budget", type=int, default=96, help="trial-epochs per search")
    parser.add_argument("--grace", type=int, default=1)
    parser.add_argument("--rf", type=float, default=2.0)
    parser.add_argument("--startup", type=int, default=10, help="TPE's n_startup_trials")
    parser.add_argument("--multivariate", choices=["default", "true", "false"],
                        default="default")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--tolerance", type=float, default=0.0, help="points of W-acc: "
                        "count a variant as there once within this of random's final best")
    parser.add_argument("--cache", help="JSON file of curves, reused for identical settings")
    parser.add_argument("--out", default="search_efficiency.png")
    args = parser.parse_args()
    args.variants = list(dict.fromkeys(["random+FIFO", *args.variants]))  # the reference
    os.environ.setdefault("ABLATE_CACHE", str(REPO / ".cache/ablate"))
    teacher_states(load_search_spec(REPO / "search_spaces/quickstart.yaml", [
        "searcher.points_to_evaluate=[]", *args.overrides]).base, log=print)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cache = json.loads(Path(args.cache).read_text()) if args.cache and Path(
        args.cache).exists() else {}
    curves: dict[str, dict[int, list[float]]] = {v: {} for v in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for variant in args.variants:
                key = " ".join(settings(variant, seed, args) + [f"budget={args.budget}"])
                if key not in cache:
                    cache[key] = search(variant, seed, args, Path(tmp))
                    if args.cache:
                        Path(args.cache).write_text(json.dumps(cache))
                curves[variant][seed] = cache[key]
                print(f"seed {seed} {variant}: {len(cache[key])} trial-epochs, best "
                      f"val W {100 * cache[key][-1]:.2f}%", flush=True)
    ray.shutdown()
    report(curves, args)


def report(curves: dict[str, dict[int, list[float]]], args: argparse.Namespace) -> None:
    print(f"\ndigits, quickstart space, {args.epochs} epochs per trial, budget {args.budget} "
          f"trial-epochs, ASHA grace {args.grace} rf {args.rf:g}, TPE {args.startup} startup "
          f"trials, multivariate {args.multivariate}, search seeds {args.seeds}, overrides: "
          f"{args.overrides or 'none'}")
    within = f" - {args.tolerance:g} pts" if args.tolerance else ""
    print(f"| variant | best val W at budget (%) | trial-epochs to reach random's final best"
          f"{within} (per seed) | median ratio to random's | mean curve: trial-epochs to "
          f"random's mean final best{within} (ratio) |")
    print("|---|---|---|---|---|")
    random = {s: curves["random+FIFO"][s] for s in args.seeds}
    target = {s: c[-1] - args.tolerance / 100 for s, c in random.items()}
    own = {s: needed(c, target[s]) for s, c in random.items()}  # when random found its best
    random_mean = mean_curve(random)
    level = random_mean[-1] - args.tolerance / 100
    own_mean = needed(random_mean, level)
    for variant, by_seed in curves.items():
        finals = [100 * c[-1] for c in by_seed.values()]
        reach = [needed(by_seed[s], target[s]) for s in args.seeds]
        ratios = [r / own[s] for r, s in zip(reach, args.seeds, strict=True)]
        on_mean = needed(mean_curve(by_seed), level)
        print(f"| {variant} | {statistics.mean(finals):.2f} ± "
              f"{statistics.stdev(finals) if len(finals) > 1 else 0:.2f} | "
              f"{', '.join('never' if math.isinf(r) else str(r) for r in reach)} | "
              f"{statistics.median(ratios):.2f} | {on_mean} ({on_mean / own_mean:.2f}) |")
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, by_seed in curves.items():
        mean = [100 * v for v in mean_curve(by_seed)]
        ax.plot(range(1, len(mean) + 1), mean, label=variant)
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("best val W-acc found (%), mean over search seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
