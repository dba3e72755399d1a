"""Wall time and accuracies of the final-evaluation attack suite (docs/evaluation.md) on digits.

Trains two small digits models, as the tests do (``small_cnn``, undefended CE and PGD-AT at
ε = 0.2, step 0.05, 5 steps), then runs :func:`ablate.core.robustness.run_suite` with every attack
on the digits test split (359 images), AutoAttack on the first ``--aa-subset`` of them, the PGD-AT
model serving as the transfer surrogate. Prints per-attack seconds, images/s and accuracies, the
total, and the Markdown table.

Run: ``python benchmarks/eval_suite.py [--device cuda] [--width 12] [--aa-subset 200]``
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn

from ablate.core.catalog import ATTACK_LABELS as LABELS
from ablate.core.catalog import ATTACKS
from ablate.core.data import load_digits
from ablate.core.models import build_model
from ablate.core.robustness import run_suite, suite_table
from ablate.core.teachers import train_teacher


def train(method: str, args: argparse.Namespace) -> nn.Module:
    data = load_digits(seed=0).to(args.device)
    torch.manual_seed(0)
    net = build_model("small_cnn", num_classes=10, in_channels=1, width=args.width).to(args.device)
    kwargs = ({"epochs": args.ce_epochs} if method == "ce" else
              {"epochs": args.at_epochs, "eps": args.eps, "step_size": 0.05, "steps": 5})
    start = time.perf_counter()
    train_teacher(net, data, method=method, lr=0.1, seed=0, **kwargs)
    print(f"trained {method} small_cnn (width {args.width}) in {time.perf_counter() - start:.1f}s")
    return net


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave default)")
    p.add_argument("--width", type=int, default=12)
    p.add_argument("--ce-epochs", type=int, default=8)
    p.add_argument("--at-epochs", type=int, default=12)
    p.add_argument("--eps", type=float, default=0.2)
    p.add_argument("--aa-subset", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    models = {"undefended (CE)": train("ce", args), "PGD-AT": train("pgd_at", args)}
    test = load_digits(seed=0).test.to(args.device)
    for name, model in models.items():
        start = time.perf_counter()
        res = run_suite(model, test.x, test.y, eps=args.eps, surrogate=models["PGD-AT"],
                        autoattack_subset=args.aa_subset, seed=args.seed,
                        batch_size=args.batch_size)
        total = time.perf_counter() - start
        print(f"\n== {name}: clean {100 * res['clean']['acc']:.2f}% on {res['clean']['n']} ==")
        print(f"{'attack':<22}{'n':>5}{'seconds':>10}{'img/s':>10}{'clean%':>9}{'robust%':>9}"
              f"{'W-R%':>8}")
        for attack in ATTACKS:
            r = res[attack]
            rate = r["n"] / r["seconds"] if r["seconds"] > 0 else float("inf")
            print(f"{LABELS[attack]:<22}{int(r['n']):>5}{r['seconds']:>10.2f}{rate:>10.0f}"
                  f"{100 * r['clean']:>9.2f}{100 * r['robust']:>9.2f}{100 * r['w_r']:>8.2f}")
        print(f"{'total (incl. clean)':<22}{'':>5}{total:>10.2f}")
        print("\n" + suite_table(res, title=f"{name} small_cnn, digits, ε = {args.eps}"))


if __name__ == "__main__":
    main()
