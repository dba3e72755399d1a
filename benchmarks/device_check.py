"""What one accelerator does for CIARD: step throughput and MFU per student architecture, and
the aggregate throughput of 1, 2 and 4 small trials packed on it. ``device_check.sh`` runs it.

1. The CIARD training step (:func:`ablate.core.step.train_step`: 10-step PGD with the
   clean-teacher KL objective, the CIARD loss, the student's SGD step; teachers frozen) with a
   ResNet-18, ResNet-56 or WRN-34-10 student and the CIFAR presets' teachers (ResNet-56 clean,
   WRN-34-10 robust), on synthetic 3x32x32 batches, in fp32 and in bf16 + channels-last
   (+ compile with ``--compile``). FLOPs per image are counted with FlopCounterMode
   (:mod:`ablate.core.flop_counter`); MFU = achieved FLOP/s ÷ the device's bf16 peak
   (:data:`ablate.core.compute.TENSOR_PEAKS`; none on a CPU).
2. Packing: N worker processes, each training a small CIFAR trial (small CNN student of width
   32 and teachers of width 64, batch 128, bf16 + channels-last) for ``--pack-seconds``,
   started together on the same device; the aggregate images/s against one alone (the
   fractional ``resources.gpu`` of a search, e.g. 0.25 = 4 trials per GPU).

    python benchmarks/device_check.py [--device cuda] [--batch 128] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

import torch

from ablate.core.catalog import CiardParams
from ablate.core.compute import memory_format, peak_flops, prepare
from ablate.core.flop_counter import count_flops
from ablate.core.models import build_model
from ablate.core.step import train_step

STUDENTS = ("resnet18", "resnet56", "wrn34_10")
EPS, STEP = 8 / 255, 2 / 255


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def models(student: str, clean: str, robust: str, device: torch.device) -> list:
    torch.manual_seed(0)
    return [build_model(a, num_classes=10, in_channels=3).to(device)
            for a in (student, clean, robust)]


def stepper(nets: list, batch: int, device: torch.device, amp: str, channels_last: bool,
            compile: bool):
    nets = [prepare(copy.deepcopy(n), channels_last=channels_last, compile=compile)
            for n in nets]
    x = torch.rand(batch, 3, 32, 32, device=device).contiguous(
        memory_format=memory_format(channels_last))
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(nets[0].parameters(), lr=0.1, momentum=0.9)
    params = CiardParams().model_dump()

    def step() -> None:
        train_step(method="ciard", params=params, state={}, student=nets[0],
                   clean_teacher=nets[1], robust_teacher=nets[2], x=x, y=y, optimizer=opt,
                   eps=EPS, step_size=STEP, steps=10, amp=amp)
    return step


def images_per_s(step, batch: int, device: torch.device, warmup: int, seconds: float) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < seconds:
        step()
        sync(device)
        n += 1
    return n * batch / (time.perf_counter() - start)


def architectures(args: argparse.Namespace, device: torch.device) -> None:
    variants = [("fp32", "none", False, False), ("bf16+cl", "bf16", True, False)]
    if args.compile:
        variants.append(("bf16+cl+compile", "bf16", True, True))
    print(f"{'student':<9} | {'variant':<16} | {'GFLOP/img':>9} | {'img/s':>8} | "
          f"{'TFLOP/s':>8} | MFU")
    for student in args.students:
        nets = models(student, "resnet56", "wrn34_10", device)
        flops = count_flops(stepper(nets, 2, device, "none", False, False),
                            shapes_only=device.type == "cpu") / 2
        for name, amp, cl, comp in variants:
            rate = images_per_s(stepper(nets, args.batch, device, amp, cl, comp), args.batch,
                                device, args.warmup, args.seconds)
            peak = peak_flops(device, "bf16")
            mfu = f"{100 * rate * flops / peak:.1f}%" if peak else "n/a"
            print(f"{student:<9} | {name:<16} | {flops / 1e9:>9.1f} | {rate:>8.1f} | "
                  f"{rate * flops / 1e12:>8.2f} | {mfu}", flush=True)


def worker(args: argparse.Namespace, device: torch.device) -> None:
    """One packed trial: print its images/s as JSON."""
    torch.manual_seed(0)
    nets = [build_model("small_cnn", num_classes=10, in_channels=3, width=w).to(device)
            for w in (32, 64, 64)]
    step = stepper(nets, args.batch, device, "bf16", True, False)
    print(json.dumps({"img_per_s": images_per_s(step, args.batch, device, args.warmup,
                                                args.pack_seconds)}))


def packing(args: argparse.Namespace) -> None:
    print(f"\npacked small-CIFAR trials (small CNNs, width 32 and 64, batch "
          f"{args.batch}, bf16+cl, {args.pack_seconds:g} s each) on {args.device}:")
    single = None
    for n in args.pack:
        cmd = [sys.executable, __file__, "--worker", "--device", args.device,
               "--batch", str(args.batch), "--warmup", str(args.warmup),
               "--pack-seconds", str(args.pack_seconds), "--threads", str(args.threads)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["img_per_s"]
                 for p in procs]
        total = sum(rates)
        single = single or total
        print(f"  {n} trial(s): {total:8.1f} img/s in all ({total / single:.2f}x one alone)",
              flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="timing per variant")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--pack", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--pack-seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--students", nargs="+", default=list(STUDENTS), choices=STUDENTS)
    ap.add_argument("--skip-architectures", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if args.worker:
        return worker(args, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} | {name} | batch {args.batch} | "
          f"bf16 peak {peak_flops(device, 'bf16') or 'unknown'}", flush=True)
    if not args.skip_architectures:
        architectures(args, device)
    if args.pack:
        packing(args)


if __name__ == "__main__":
    main()
