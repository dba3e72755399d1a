"""How often does CIARD's push term act? The push set J (clean teacher wrong on x*) per inner
maximisation objective, measured in real training on the embedded digits data.

For each objective (paper Eq. 6 with gradient through the clean teacher, Eq. 6 with the teacher
detached, the released code's CE) it trains the digits base's CIARD student and prints, per
epoch and over the run, the mean |J|/B, the share of batches with J = ∅ (where the push term is
exactly 0), the push loss over the batches with J ≠ ∅, and the student's validation accuracy.

    python benchmarks/push_set.py                  # 12 epochs, seed 0 (ablation_table7_digits)
    python benchmarks/push_set.py --epochs 2 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ablate.build import build_data, build_trainer, prepare_teachers, resolve_device
from ablate.config import load_config

BASE = Path(__file__).resolve().parents[1] / "search_spaces" / "base" / "digits.yaml"
OBJECTIVES = ("kl_clean_teacher", "kl_clean_teacher_detached", "ce")


def run(objective: str, epochs: int, seed: int, data, clean, robust) -> list[dict[str, float]]:
    cfg = load_config(BASE, [f"attack.objective={objective}", f"optim.epochs={epochs}",
                             f"seed={seed}", "itt.freeze_epochs=3"])
    trainer = build_trainer(cfg, data, clean, robust, torch.device("cpu"))
    return [trainer.run_epoch() for _ in range(epochs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--per-epoch", action="store_true", help="print every epoch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(BASE)
    data = build_data(cfg)
    clean, robust = prepare_teachers(cfg, data, resolve_device("cpu"))
    print(f"digits, eps {cfg.attack.eps} ({cfg.attack.steps} x {cfg.attack.step_size}), "
          f"{args.epochs} epochs, seeds {args.seeds}, batch {cfg.optim.batch_size}")
    print("| objective | seed | samples in J | batches with J=∅ | push loss (J≠∅) "
          "| val clean | val PGD | s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for objective in args.objectives:
        for seed in args.seeds:
            start = time.perf_counter()
            history = run(objective, args.epochs, seed, data, clean, robust)
            seconds = time.perf_counter() - start
            if args.per_epoch:
                for h in history:
                    print(f"  epoch {int(h['epoch'])}: J "
                          f"{100 * h['train/push_active_frac']:.1f}%, J=∅ in "
                          f"{100 * h['train/push_empty_frac']:.0f}% of batches")
            last = history[-1]
            push = [h["train/push_loss"] for h in history if "train/push_loss" in h]
            push_text = f"{sum(push) / len(push):.4f}" if push else "–"
            print(f"| {objective} | {seed} | {100 * last['train/run_push_active_frac']:.1f}% "
                  f"| {100 * last['train/run_push_empty_frac']:.0f}% | {push_text} "
                  f"| {100 * last['val/clean_acc']:.1f}% | {100 * last['val/robust_acc']:.1f}% "
                  f"| {seconds:.0f} |")


if __name__ == "__main__":
    main()
