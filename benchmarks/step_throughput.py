"""Throughput (images/s) of the CIARD training step: ``ablate``'s step against a baseline.

What is measured
----------------
One full CIARD training step per batch (docs/ciard.md): a 10-step PGD inner maximisation, the
forward passes the loss needs, the student loss (Eq. 7) with the push term and the auto λ, the
student SGD step and, with ITT on, the robust teacher's SGD step on CE(t'(x*), y) (Eq. 8). Two
settings:

- ``digits``: student ``small_cnn`` (width 8), both teachers ``small_cnn`` (width 32), 1x8x8 inputs,
  batch 64, ε = 0.2, step 0.05;
- ``cifar``: student ResNet-18, clean teacher ResNet-56, robust teacher WRN-34-10, synthetic
  3x32x32 inputs (``ablate.core.data.synthetic_cifar``), a small batch (default 8) so it runs on
  CPU, ε = 8/255, step 2/255.

Each is run with ITT off (robust teacher frozen) and on (robust teacher updated).

Why the two differ
------------------
Both sides run the *same* PGD attack (``ablate.core.attacks.attack`` with the method's objective)
and the same loss functions from ``ablate.core.losses``; the difference measured is only in the
forward/backward passes around the attack (docs/ciard.md). The baseline follows the released CIARD
code's pass structure: it also runs the robust teacher on clean inputs, t'(x), whose output no
loss uses; it runs the clean teacher on x* with autograd enabled, building a graph nobody
backpropagates; and it always runs t'(x*) in train mode with a graph, even while the teacher is
frozen. ``ablate.core.step.train_step`` skips t'(x), computes the clean teacher without a graph,
and keeps t'(x*) graph-free (eval mode) while the teacher is frozen. Both run t(x) and t(x*) as
two batches (one concatenated batch would change t(x) by ~1e-6 whenever the push term is on).

Before timing, one step of each is checked to give the same student loss (see
:func:`check_same_math`), so the comparison is of the same math.

Run: ``python benchmarks/step_throughput.py [--device cuda] [--skip-cifar] ...``
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.core.attacks import attack
from ablate.core.catalog import CiardParams
from ablate.core.data import load_digits, synthetic_cifar
from ablate.core.losses import auto_lambda, kl, push_loss, soft_targets
from ablate.core.methods import get_method
from ablate.core.models import build_model
from ablate.core.step import train_step

STUDENT_LR, TEACHER_LR = 0.1, 1e-4  # released code: student SGD 0.1, teacher 1e-4 (momentum 0.1)


@dataclass
class Setting:
    """Models, one batch and the attack parameters of one benchmark setting."""

    name: str
    student: nn.Module
    clean_teacher: nn.Module
    robust_teacher: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    eps: float
    step_size: float
    steps: int = 10


@dataclass
class Models:
    """A private copy of the three models plus their optimizers, so each run starts equal."""

    student: nn.Module
    clean_teacher: nn.Module
    robust_teacher: nn.Module
    optimizer: torch.optim.Optimizer
    teacher_optimizer: torch.optim.Optimizer


def fresh_models(setting: Setting) -> Models:
    student = copy.deepcopy(setting.student)
    # The clean teacher's parameters keep requires_grad=True, as in ablate's trainer and the
    # released code: it is never stepped, but autograd records its passes unless told not to.
    clean_teacher = copy.deepcopy(setting.clean_teacher).eval()
    robust_teacher = copy.deepcopy(setting.robust_teacher)
    opt = torch.optim.SGD(student.parameters(), lr=STUDENT_LR, momentum=0.9, weight_decay=2e-4)
    t_opt = torch.optim.SGD(robust_teacher.parameters(), lr=TEACHER_LR, momentum=0.1,
                            weight_decay=2e-4)
    return Models(student, clean_teacher, robust_teacher, opt, t_opt)


# ------------------------------------------------------------------------------------------------
# The two steps
# ------------------------------------------------------------------------------------------------


def ours_step(m: Models, s: Setting, params: dict[str, Any], itt: bool) -> float:
    """``ablate``'s step; returns the student loss."""
    out = train_step(
        method="ciard", params=params, state={}, student=m.student,
        clean_teacher=m.clean_teacher, robust_teacher=m.robust_teacher, x=s.x, y=s.y,
        optimizer=m.optimizer, teacher_optimizer=m.teacher_optimizer, update_teacher=itt,
        objective=None, eps=s.eps, step_size=s.step_size, steps=s.steps, start="normal",
    )
    return out["loss"]


def baseline_step(m: Models, s: Setting, params: dict[str, Any], itt: bool,
                  robust_teacher_train_mode: bool = True) -> float:
    """Same math, released-code pass structure (every pass it runs, in its order)."""
    p, student, t, rt = params, m.student, m.clean_teacher, m.robust_teacher
    x, y, red = s.x, s.y, params["kl_reduction"]
    student.train()
    rt.train(robust_teacher_train_mode)
    m.optimizer.zero_grad()
    m.teacher_optimizer.zero_grad()
    s_nat = student(x)
    with torch.no_grad():
        t_nat = t(x)
        _rt_nat = rt(x)  # released code: computed, never used by any loss
    student.eval()
    x_adv = attack(get_method("ciard").objective, student, t, x, y,
                   eps=s.eps, step_size=s.step_size, steps=s.steps, start="normal")
    student.train()
    rt.train(robust_teacher_train_mode)
    s_adv = student(x_adv)
    rt_adv = rt(x_adv)  # graph built whether or not the teacher is updated
    t_adv = t(x_adv)  # released code: clean-teacher pass under autograd (graph never used)
    kl_clean = kl(s_nat, soft_targets(t_nat), reduction=red)
    kl_robust = kl(s_adv, soft_targets(rt_adv.detach()), reduction=red)
    push = push_loss(s_adv, t_adv.detach(), y, student_temp=p["push_student_temp"],
                     teacher_temp=p["push_teacher_temp"], reduction=red)
    lam = p["lam"]
    if lam == "auto":
        lam = auto_lambda(kl_clean.item(), kl_robust.item(), push.item())
    loss = p["alpha"] * kl_clean + p["beta"] * kl_robust - lam * push
    loss.backward()
    m.optimizer.step()
    if itt:
        F.cross_entropy(rt_adv, y).backward()
        m.teacher_optimizer.step()
    return float(loss.detach())


StepFn = Callable[[Models, Setting, dict[str, Any], bool], float]


def check_same_math(s: Setting, params: dict[str, Any], device: torch.device) -> None:
    """Assert ours and the baseline give the same student loss on the first batch (ITT off).

    Two mode differences of the released order are neutralised for this check only:
    - the baseline's robust teacher runs in train mode (BatchNorm on batch statistics), ours in
      eval mode while frozen, so the check runs the baseline's robust teacher in eval mode;
    - the baseline runs s(x) in train mode *before* the attack, which moves the student's BN
      running statistics that the eval-mode attack then reads, so x* would differ; the check sets
      the student's BN momentum to 0 (running statistics stay put) on both sides.
    What remains is the same math in a different pass structure, equal up to float rounding.
    """
    losses = []
    for fn in (ours_step, baseline_step):
        m = fresh_models(s)
        for mod in m.student.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.momentum = 0.0
        torch.manual_seed(1234)
        if fn is baseline_step:
            losses.append(baseline_step(m, s, params, False, robust_teacher_train_mode=False))
        else:
            losses.append(fn(m, s, params, False))
    ours, base = losses
    tol = 1e-4 if device.type == "cpu" else 2e-3  # CUDA convs may use TF32
    assert abs(ours - base) <= tol * max(1.0, abs(base)), (
        f"{s.name}: ours loss {ours:.8f} != baseline loss {base:.8f}")
    print(f"  check {s.name}: same student loss on batch 1 (ours {ours:.6f}, "
          f"baseline {base:.6f})", flush=True)


# ------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(s: Setting, params: dict[str, Any], itt: bool, steps: int, warmup: int,
                 device: torch.device, autocast: bool, label: str) -> tuple[float, float]:
    """(ours, baseline) images/s over ``steps`` timed steps each, after ``warmup`` steps each.

    The two implementations alternate step by step (ours first on even steps, the baseline first
    on odd ones) and each step is timed on its own, so load from other processes on a shared
    machine hits both sides alike and the ratio stays meaningful.
    """
    fns: dict[str, StepFn] = {"ours": ours_step, "baseline": baseline_step}
    models = {k: fresh_models(s) for k in fns}
    elapsed = dict.fromkeys(fns, 0.0)
    torch.manual_seed(0)
    ctx = (torch.autocast(device.type, dtype=torch.bfloat16) if autocast
           else torch.autocast(device.type, enabled=False))
    with ctx:
        for _ in range(warmup):
            for k, fn in fns.items():
                fn(models[k], s, params, itt)
        for i in range(steps):
            for k in (("ours", "baseline") if i % 2 == 0 else ("baseline", "ours")):
                sync(device)
                t0 = time.perf_counter()
                fns[k](models[k], s, params, itt)
                sync(device)
                elapsed[k] += time.perf_counter() - t0
            if steps < 10 or (i + 1) % (steps // 3) == 0:
                print(f"    {label}: step {i + 1}/{steps} (ours {elapsed['ours']:.1f} s, "
                      f"baseline {elapsed['baseline']:.1f} s so far)", flush=True)
    n = steps * s.x.shape[0]
    return n / elapsed["ours"], n / elapsed["baseline"]


# ------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------


def digits_setting(device: torch.device, batch: int = 64) -> Setting:
    torch.manual_seed(0)
    data = load_digits().train
    x, y = data.x[:batch].to(device), data.y[:batch].to(device)
    return Setting(
        name="digits",
        student=build_model("small_cnn", num_classes=10, in_channels=1, width=8).to(device),
        clean_teacher=build_model("small_cnn", num_classes=10, in_channels=1, width=32).to(device),
        robust_teacher=build_model("small_cnn", num_classes=10, in_channels=1, width=32)
        .to(device),
        x=x, y=y, eps=0.2, step_size=0.05,
    )


def cifar_setting(device: torch.device, batch: int) -> Setting:
    torch.manual_seed(0)
    data = synthetic_cifar(n_train=batch, n_val=1, n_test=1).train
    return Setting(
        name="cifar",
        student=build_model("resnet18", num_classes=10, in_channels=3).to(device),
        clean_teacher=build_model("resnet56", num_classes=10, in_channels=3).to(device),
        robust_teacher=build_model("wrn34_10", num_classes=10, in_channels=3).to(device),
        x=data.x.to(device), y=data.y.to(device), eps=8 / 255, step_size=2 / 255,
    )


def to_channels_last(s: Setting) -> Setting:
    cl = torch.channels_last
    for mod in (s.student, s.clean_teacher, s.robust_teacher):
        mod.to(memory_format=cl)
    s.x = s.x.contiguous(memory_format=cl)
    return s


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--cifar-batch", type=int, default=8)
    ap.add_argument("--digits-steps", type=int, default=30)
    ap.add_argument("--cifar-steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch CPU threads (default: all cores)")
    ap.add_argument("--channels-last", action="store_true", help="CUDA: channels-last models/data")
    ap.add_argument("--bf16", action="store_true", help="CUDA: bf16 autocast for both steps")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    if (args.channels_last or args.bf16) and device.type != "cuda":
        raise SystemExit("--channels-last and --bf16 are CUDA-only flags")
    torch.set_num_threads(args.threads)
    params = CiardParams().model_dump()
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} | device {dev_name} | threads {torch.get_num_threads()} | "
          f"batch digits 64, cifar {args.cifar_batch} | channels_last {args.channels_last} | "
          f"bf16 {args.bf16}", flush=True)

    plan: list[tuple[Callable[[], Setting], int]] = [(lambda: digits_setting(device),
                                                      args.digits_steps)]
    if not args.skip_cifar:
        plan.append((lambda: cifar_setting(device, args.cifar_batch), args.cifar_steps))

    rows: list[tuple[str, str, float, float]] = []
    t_start = time.perf_counter()
    for make, steps in plan:
        s = make()
        if args.channels_last:
            s = to_channels_last(s)
        print(f"[{s.name}] batch {s.x.shape[0]}, input {tuple(s.x.shape[1:])}, "
              f"PGD {s.steps} steps, {steps} timed steps after {args.warmup} warm-up", flush=True)
        check_same_math(s, params, device)
        for itt in (False, True):
            tag = "on" if itt else "off"
            ours, base = images_per_s(s, params, itt, steps, args.warmup, device, args.bf16,
                                      f"{s.name} ITT {tag}")
            rows.append((s.name, tag, ours, base))
            print(f"  {s.name} ITT {tag}: ours {ours:.1f} img/s, baseline {base:.1f} img/s",
                  flush=True)

    print()
    header = f"{'setting':<8} | {'ITT':<3} | {'ours img/s':>10} | {'baseline img/s':>14} | ratio"
    print(header)
    print("-" * len(header))
    for name, tag, ours, base in rows:
        print(f"{name:<8} | {tag:<3} | {ours:>10.1f} | {base:>14.1f} | {ours / base:.2f}x")
    print(f"\ntotal time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
