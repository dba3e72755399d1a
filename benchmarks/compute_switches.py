"""Images/s of ``ablate``'s CIARD training step under the compute switches, against fp32.

The step is :func:`ablate.core.step.train_step` (10-step PGD with the clean-teacher KL
objective, the CIARD loss with push term and auto λ, the student's SGD step; ITT off), on the
two settings of ``step_throughput.py``: ``digits`` (small CNNs, 1x8x8, batch 64) and ``cifar``
(ResNet-18 student, ResNet-56 and WRN-34-10 teachers, 3x32x32, ``--cifar-batch``). Each
variant gets its own copy of the models, prepared as ``compute:`` prepares them
(:func:`ablate.core.compute.prepare`); variants are timed in turns, step by step, so load from
other processes hits them alike. ``--compile`` adds compiled variants (their compilation is
excluded from the timing by the warm-up steps).

Run: ``python benchmarks/compute_switches.py [--device cuda] [--compile] [--skip-cifar]``
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from dataclasses import dataclass

import torch
from step_throughput import Setting, cifar_setting, digits_setting, sync

from ablate.core.catalog import CiardParams
from ablate.core.compute import memory_format, prepare
from ablate.core.step import train_step

VARIANTS = {  # name -> (amp, channels_last, compile)
    "fp32": ("none", False, False),
    "channels-last": ("none", True, False),
    "bf16": ("bf16", False, False),
    "bf16+channels-last": ("bf16", True, False),
}
COMPILED = {
    "fp32+compile": ("none", False, True),
    "bf16+channels-last+compile": ("bf16", True, True),
}


@dataclass
class Variant:
    amp: str
    student: torch.nn.Module
    clean_teacher: torch.nn.Module
    robust_teacher: torch.nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor


def make_variant(s: Setting, amp: str, channels_last: bool, compile: bool) -> Variant:
    models = [copy.deepcopy(m) for m in (s.student, s.clean_teacher, s.robust_teacher)]
    for m in models:
        prepare(m, channels_last=channels_last, compile=compile)
    opt = torch.optim.SGD(models[0].parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    return Variant(amp, *models, opt, s.x.contiguous(memory_format=memory_format(channels_last)))


def step(v: Variant, s: Setting, params: dict) -> None:
    train_step(method="ciard", params=params, state={}, student=v.student,
               clean_teacher=v.clean_teacher, robust_teacher=v.robust_teacher, x=v.x, y=s.y,
               optimizer=v.optimizer, eps=s.eps, step_size=s.step_size, steps=s.steps,
               amp=v.amp)


def measure(s: Setting, variants: dict[str, tuple], steps: int, warmup: int,
            device: torch.device) -> dict[str, float]:
    """Images/s of each variant over ``steps`` timed steps, in turns, after ``warmup`` each."""
    params = CiardParams().model_dump()
    built = {name: make_variant(s, *spec) for name, spec in variants.items()}
    torch.manual_seed(0)
    for v in built.values():
        for _ in range(warmup):
            step(v, s, params)
    elapsed = dict.fromkeys(built, 0.0)
    for i in range(steps):
        order = list(built) if i % 2 == 0 else list(reversed(built))
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            step(built[name], s, params)
            sync(device)
            elapsed[name] += time.perf_counter() - t0
    return {name: steps * s.x.shape[0] / t for name, t in elapsed.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cifar-batch", type=int, default=32)
    ap.add_argument("--digits-steps", type=int, default=20)
    ap.add_argument("--cifar-steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time compiled variants")
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    variants = {**VARIANTS, **(COMPILED if args.compile else {})}
    print(f"torch {torch.__version__} | device {device} | threads {torch.get_num_threads()} | "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    plan = [(digits_setting(device), args.digits_steps)]
    if not args.skip_cifar:
        plan.append((cifar_setting(device, args.cifar_batch), args.cifar_steps))
    print(f"\n{'setting':<8} | {'variant':<27} | {'img/s':>8} | vs fp32")
    print("-" * 60)
    for s, steps in plan:
        t0 = time.perf_counter()
        rates = measure(s, variants, steps, args.warmup, device)
        for name, rate in rates.items():
            print(f"{s.name:<8} | {name:<27} | {rate:>8.1f} | {rate / rates['fp32']:.2f}x",
                  flush=True)
        print(f"{s.name}: batch {s.x.shape[0]}, {steps} timed steps per variant, "
              f"{time.perf_counter() - t0:.0f} s in all", flush=True)


if __name__ == "__main__":
    main()
