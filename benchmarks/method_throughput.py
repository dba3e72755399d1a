"""Training throughput (images/s) of every registered method, against PGD-AT.

Each method runs its own training step (``ablate.core.step.train_step``: its inner-max objective
through the one PGD loop, the passes its loss needs, the SGD step) on the same digits batches
with the same models (student ``small_cnn`` width 16, teachers width 32, batch 64, ε = 0.2,
10 PGD steps of 0.05). PGD-AT (one model, CE attack, CE loss) is the straightforward baseline:
the ratio says what a method's teachers and extra passes cost. ``+igdm`` rows add IGDM
(β = γ = 1: two extra passes on x − δ). CIARD runs with ITT on (its robust teacher updated).

Run: ``python benchmarks/method_throughput.py [--device cuda] [--batches 20] [--threads 2]``
"""

from __future__ import annotations

import argparse
import time

import torch

from ablate.core.data import load_digits
from ablate.core.methods import get_method, method_names
from ablate.core.models import build_model
from ablate.core.step import train_step

IGDM = {"weight": 1.0, "beta": 1.0, "gamma": 1.0, "distance": "kl"}


def run(method: str, igdm: bool, batches: list[tuple[torch.Tensor, torch.Tensor]],
        device: str) -> float:
    """Images per second of ``method`` over the batches (after one warm-up step)."""
    torch.manual_seed(0)

    def net(width: int) -> torch.nn.Module:
        return build_model("small_cnn", num_classes=10, in_channels=1, width=width).to(device)

    student, clean, robust = net(16), net(32), net(32)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    t_opt = torch.optim.SGD(robust.parameters(), lr=1e-3, momentum=0.1)
    spec = get_method(method)
    params, state = spec.params().model_dump(), spec.init_state()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        train_step(method=method, params=params, state=state, student=student,
                   clean_teacher=clean, robust_teacher=robust, x=x, y=y, optimizer=opt,
                   teacher_optimizer=t_opt, update_teacher=spec.itt,
                   igdm=IGDM if igdm else None, eps=0.2, step_size=0.05, steps=10)

    step(*batches[0])
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for x, y in batches:
        step(x, y)
    if device == "cuda":
        torch.cuda.synchronize()
    return sum(len(y) for _, y in batches) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train = load_digits(seed=0).train.to(args.device)
    starts = range(0, min(64 * args.batches, len(train) - 63), 64)  # full batches only
    batches = [(train.x[i:i + 64], train.y[i:i + 64]) for i in starts]
    rows = [(m, False) for m in method_names()] + [("rslad", True), ("ciard", True)]
    base = run("pgd_at", False, batches, args.device)
    print(f"{'method':<14} {'img/s':>8} {'vs PGD-AT':>10}")
    for method, igdm in rows:
        ips = base if (method, igdm) == ("pgd_at", False) else run(method, igdm, batches,
                                                                     args.device)
        name = method + ("+igdm" if igdm else "")
        print(f"{name:<14} {ips:8.1f} {ips / base:9.2f}x")


if __name__ == "__main__":
    main()
