"""What one accelerator does for CIARD: step throughput and MFU per student architecture, and
the aggregate throughput of 1, 2 and 4 small trials packed on it. ``device_check.sh`` runs it.

1. The CIARD training step (10-step PGD with the clean-teacher KL objective, the CIARD loss,
   the student's SGD step; teachers frozen) with a ResNet-18, ResNet-56 or WRN-34-10 student
   and the CIFAR presets' teachers (ResNet-56 clean, WRN-34-10 robust), on synthetic 3x32x32
   batches, in fp32 and in bf16 + channels-last (+ compile with ``--compile``), each three ways:
   ``eager`` (:func:`~ablate.core.step.train_step`: the loss checked and every output read back
   each step, as before issue 29), ``sync-free`` (:func:`~ablate.core.step.step_tensors` with
   the means and the divergence flag on the device, read once at the end, as the trainer runs
   it) and ``graphed`` (:class:`~ablate.core.graphs.GraphedStep`, CUDA only). FLOPs per image
   are counted with FlopCounterMode (:mod:`ablate.core.flop_counter`); MFU = achieved FLOP/s ÷
   the device's bf16 peak (:data:`ablate.core.compute.TENSOR_PEAKS`; none on a CPU).
   ``--graph-check`` runs 20 captured steps against 20 eager ones from the same weights and seed.
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
from ablate.core.graphs import GraphedStep
from ablate.core.models import build_model
from ablate.core.step import Divergence, StepMeans, step_tensors, train_step

STUDENTS = ("resnet18", "resnet56", "wrn34_10")
MODES = ("eager", "sync-free", "graphed")
EPS, STEP = 8 / 255, 2 / 255


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def models(student: str, clean: str, robust: str, device: torch.device) -> list:
    torch.manual_seed(0)
    return [build_model(a, num_classes=10, in_channels=3).to(device)
            for a in (student, clean, robust)]


def stepper(nets: list, batch: int, device: torch.device, amp: str, channels_last: bool,
            compile: bool, mode: str = "eager", seed: int = 0):
    """One CIARD step per call, the ``mode`` way (eager, sync-free or graphed); the returned
    function's ``finish()`` reads the sync-free means (what a trainer does once an epoch)."""
    nets = [prepare(copy.deepcopy(n), channels_last=channels_last, compile=compile)
            for n in nets]
    g = torch.Generator(device).manual_seed(seed)
    x = torch.rand(batch, 3, 32, 32, device=device, generator=g).contiguous(
        memory_format=memory_format(channels_last))
    y = torch.randint(0, 10, (batch,), device=device, generator=g)
    opt = torch.optim.SGD(nets[0].parameters(), lr=0.1, momentum=0.9)
    kw = dict(method="ciard", params=CiardParams().model_dump(), state={}, student=nets[0],
              clean_teacher=nets[1], robust_teacher=nets[2], x=x, y=y, optimizer=opt,
              eps=EPS, step_size=STEP, steps=10, amp=amp)
    means, divergence = StepMeans(), Divergence(device)
    graphed = GraphedStep() if mode == "graphed" else None

    def step() -> dict:
        if mode == "eager":
            return train_step(**kw)
        out = (graphed(0, divergence=divergence, **kw) if graphed is not None
               else step_tensors(divergence=divergence, **kw))
        means.add(out)
        return out

    def finish() -> None:
        if mode != "eager":
            means.read()
            divergence.check("ciard")

    step.finish, step.student = finish, nets[0]
    return step


def images_per_s(step, batch: int, device: torch.device, warmup: int, seconds: float) -> float:
    """Steps for ``seconds``; the device is synchronised every 10 steps only (what the step
    itself reads back is its own: the eager step reads every output)."""
    for _ in range(warmup):
        step()
    sync(device)
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < seconds:
        step()
        n += 1
        if n % 10 == 0:
            sync(device)
    getattr(step, "finish", lambda: None)()
    sync(device)
    return n * batch / (time.perf_counter() - start)


def architectures(args: argparse.Namespace, device: torch.device) -> None:
    variants = [("fp32", "none", False, False), ("bf16+cl", "bf16", True, False)]
    if args.compile:
        variants.append(("bf16+cl+compile", "bf16", True, True))
    modes = [m for m in args.modes if m != "graphed" or device.type == "cuda"]
    print(f"{'student':<9} | {'variant':<16} | {'step':<9} | {'GFLOP/img':>9} | {'img/s':>8} | "
          f"{'TFLOP/s':>8} | MFU")
    for student in args.students:
        nets = models(student, "resnet56", "wrn34_10", device)
        flops = count_flops(stepper(nets, 2, device, "none", False, False),
                            shapes_only=device.type == "cpu") / 2
        for name, amp, cl, comp in variants:
            for mode in modes if not comp else ["sync-free"]:
                rate = images_per_s(stepper(nets, args.batch, device, amp, cl, comp, mode),
                                    args.batch, device, args.warmup, args.seconds)
                peak = peak_flops(device, "bf16")
                mfu = f"{100 * rate * flops / peak:.1f}%" if peak else "n/a"
                print(f"{student:<9} | {name:<16} | {mode:<9} | {flops / 1e9:>9.1f} | "
                      f"{rate:>8.1f} | {rate * flops / 1e12:>8.2f} | {mfu}", flush=True)


def graph_check(args: argparse.Namespace, device: torch.device, steps: int = 20) -> None:
    """The captured step against the eager one: same weights, batch and seed, ``steps`` steps
    each (the first 3 of the graphed run are its eager warm-up); the losses and the student's
    weights compared, and both timed."""
    nets = models("resnet18", "resnet56", "wrn34_10", device)
    amp = "bf16" if device.type == "cuda" else "none"
    runs = {}
    for mode in ("sync-free", "graphed"):
        step = stepper(nets, args.batch, device, amp, True, False, mode)
        torch.manual_seed(1)
        if device.type == "cuda":
            torch.cuda.manual_seed(1)
        sync(device)
        start = time.perf_counter()
        losses = [step()["loss"].clone() for _ in range(steps)]
        sync(device)
        weights = torch.cat([p.detach().float().flatten() for p in step.student.parameters()])
        runs[mode] = (torch.stack(losses).float(), weights, time.perf_counter() - start)
    (l_e, w_e, t_e), (l_g, w_g, t_g) = runs["sync-free"], runs["graphed"]
    rel_loss = ((l_g - l_e).abs() / l_e.abs().clamp_min(1e-12)).max().item()
    rel_w = ((w_g - w_e).norm() / w_e.norm()).item()
    print(f"\ngraph check (resnet18, batch {args.batch}, {amp}, {steps} steps from the same "
          f"weights and seed): max relative loss difference {rel_loss:.2e}, relative weight "
          f"difference {rel_w:.2e}; eager {steps * args.batch / t_e:.0f} img/s, graphed "
          f"{steps * args.batch / t_g:.0f} img/s (capture included)", flush=True)


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
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--skip-architectures", action="store_true")
    ap.add_argument("--graph-check", action="store_true", help="captured vs eager, 20 steps "
                    "(CUDA only)")
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
    if args.graph_check and device.type == "cuda":
        graph_check(args, device)
    if args.pack:
        packing(args)


if __name__ == "__main__":
    main()
