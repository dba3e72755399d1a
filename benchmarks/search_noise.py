"""Can any searcher beat random on this objective? How much of the spread between a search's
trials is the configurations, and how much is the training seed.

    python benchmarks/search_noise.py [--spec quickstart] [--configs 16] [--seeds 0 1 2]
        [--epochs 8] [--sample-seed 0] [--workers 2] [OVERRIDE ...]

Draws ``--configs`` configurations at random from the space of ``--spec`` (a shipped search
spec's name or a path; quickstart_fmnist for Fashion-MNIST) (Optuna's RandomSampler
over the same distributions the search uses; OVERRIDEs are search spec overrides, e.g. a wider
space ``"space.optim.lr={type: float, low: 0.001, high: 1.0, log: true}"``), trains each on
every seed for ``--epochs`` epochs (the Trainer the Ray trials run, in ``--workers`` processes of
one thread, no Ray or MLflow) and reads the search objective a trial reports: the best
validation W-acc of its epochs. Printed:

- variance components: between configurations (what a searcher can exploit), within one (seed
  to seed: what it cannot), and the residual once each seed's common shift is taken out (the
  noise between the trials of one search, which share a seed);
- the intraclass correlation ICC = between / (between + within); near 0, trials are ranked by
  their seeds and no searcher, TPE or ASHA, can beat random sampling;
- the Spearman correlation of the configurations' ranks under two seeds;
- the Spearman correlation of the objective after an early epoch (what ASHA stops on) with the
  final one;
- where the configuration that looks best on the first seed ranks by its mean over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import optuna
from scipy.stats import spearmanr

from ablate import names
from ablate.config import ExperimentConfig, Recipe, load_search_spec, resolve_spec
from ablate.runtime import teacher_states
from ablate.search.study import optuna_space
from trainables.ciard import make_trainer

REPO = Path(__file__).resolve().parents[1]


def sample(spec: Any, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` configurations drawn as the search's random sampler draws them."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    space = optuna_space(spec)
    return [study.ask(space).params for _ in range(count)]


def train(recipe: Recipe, teachers: dict[str, Any], params: dict[str, Any],
          seed: int) -> list[float]:
    """The objective one trial of ``params`` trained with ``seed`` reports after each epoch (a
    trial whose loss diverged keeps what it reported before, 0 if nothing, to the last)."""
    tree = recipe.tree(params)
    tree["seed"] = seed
    trainer = make_trainer(ExperimentConfig.model_validate(tree), teachers, threads=1)
    reported: list[float] = []
    try:
        for metrics in trainer.run():
            reported.append(metrics[names.OBJECTIVE])
    except FloatingPointError:
        pass
    last = reported[-1] if reported else 0.0
    return reported + [last] * (trainer.epochs - len(reported))


def anova(values: list[list[float]]) -> tuple[float, float, float]:
    """Variance components of k configurations x n seeds (balanced): between configurations
    (one-way random effects: (MS_between - MS_within) / n, floored at 0), within a
    configuration (MS_within: seed to seed), and the residual of the two-way table
    configuration + seed (MS_residual: the noise between trials that share a seed, as the
    trials of one search do)."""
    k, n = len(values), len(values[0])
    grand = statistics.mean(v for row in values for v in row)
    means = [statistics.mean(row) for row in values]
    seeds = [statistics.mean(row[j] for row in values) for j in range(n)]
    ms_between = n * sum((m - grand) ** 2 for m in means) / (k - 1)
    ms_within = sum((v - m) ** 2 for row, m in zip(values, means, strict=True)
                    for v in row) / (k * (n - 1))
    ms_residual = sum((v - m - seeds[j] + grand) ** 2
                      for row, m in zip(values, means, strict=True)
                      for j, v in enumerate(row)) / ((k - 1) * (n - 1))
    return max(0.0, (ms_between - ms_within) / n), ms_within, ms_residual


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="search spec overrides")
    parser.add_argument("--spec", default="quickstart", help="search spec name or path")
    parser.add_argument("--configs", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--save", help="JSON file for the configurations and their curves")
    args = parser.parse_args()
    if len(args.seeds) < 2 or args.configs < 2:
        parser.error("need at least 2 configurations and 2 seeds")
    os.environ.setdefault("ABLATE_CACHE", str(REPO / ".cache/ablate"))
    spec = load_search_spec(resolve_spec(args.spec), [
        "searcher.points_to_evaluate=[]", f"base.optim.epochs={args.epochs}",
        f"space.itt.freeze_epochs.high={args.epochs}",
        *args.overrides])
    teachers = teacher_states(spec.base, log=print)
    configs = sample(spec, args.configs, args.sample_seed)
    recipe = spec.recipe()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = [[pool.submit(train, recipe, teachers, p, s) for s in args.seeds]
                   for p in configs]
        curves = [[[100 * v for v in f.result()] for f in row] for row in futures]
    if args.save:
        Path(args.save).write_text(json.dumps({"configs": configs, "curves": curves}))
    report(configs, curves, args)


def report(configs: list[dict[str, Any]], curves: list[list[list[float]]],
           args: argparse.Namespace) -> None:
    """``curves[config][seed]``: the objective (%) after each epoch."""
    values = [[c[-1] for c in row] for row in curves]
    keys = list(configs[0])
    print(f"\n{args.configs} random configurations x seeds {args.seeds}, {args.epochs} epochs, "
          f"objective {names.OBJECTIVE} (%); overrides: {args.overrides or 'none'}")
    print("| " + " | ".join(keys) + " | per seed | mean |")
    print("|" + "---|" * (len(keys) + 2))
    for params, row in sorted(zip(configs, values, strict=True),
                              key=lambda pr: -statistics.mean(pr[1])):
        cells = [f"{params[k]:.3g}" if isinstance(params[k], float) else str(params[k])
                 for k in keys]
        print(f"| {' | '.join(cells)} | {', '.join(f'{v:.2f}' for v in row)} | "
              f"{statistics.mean(row):.2f} |")
    between, within, residual = anova(values)
    means = [statistics.mean(row) for row in values]
    first = [row[0] for row in values]
    picked = max(range(len(values)), key=first.__getitem__)
    print(f"\nbetween-configuration sd {between ** 0.5:.2f} pts, within (seed) sd "
          f"{within ** 0.5:.2f} pts, ICC {between / (between + within):.2f}; residual sd "
          f"{residual ** 0.5:.2f} pts once each seed's shift is taken out (trials of one "
          f"search share a seed)")
    print(f"Spearman of the configurations' ranks, seed {args.seeds[0]} vs {args.seeds[1]}: "
          f"{spearmanr(first, [row[1] for row in values]).statistic:.2f}")
    for epoch in sorted(e for e in {1, 2, args.epochs // 2} if 1 <= e < args.epochs):  # ASHA's
        early = [row[0][epoch - 1] for row in curves]
        print(f"Spearman of the objective after epoch {epoch} (seed {args.seeds[0]}) with the "
              f"final mean over seeds: {spearmanr(early, means).statistic:.2f}")
    rank = 1 + sum(m > means[picked] for m in means)
    print(f"the best on seed {args.seeds[0]} alone ranks {rank} of {len(values)} by its mean "
          f"over seeds ({means[picked]:.2f}); best mean {max(means):.2f}; mean of all "
          f"{statistics.mean(means):.2f}")


if __name__ == "__main__":
    main()
