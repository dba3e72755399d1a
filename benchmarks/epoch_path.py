"""The epoch path against its step (issue 29): images/s of the bare training step and of a
trial's whole epoch at the same batch size, and where the difference goes.

- **step**: :func:`ablate.core.step.step_tensors` over batches already on the device, with the
  trainer's own models, optimizers and method state (sync-free: the means and the divergence
  flag stay on the device; one read at the end), the epoch's number of images.
- **epoch path**: what a trial does per epoch (:meth:`Trainer.run` with a checkpoint
  directory): batches drawn and augmented, the steps, the epoch means, validation (clean +
  PGD-k on the validation subset, with the teachers' accuracies), the best-epoch copy and the
  resumable checkpoint; images/s = training images ÷ the epoch's wall time. The first epoch also
  counts FLOPs (once per run), so the steady-state figure is the median of the later epochs.
- **parts**: each non-step part timed alone, per epoch, with its share of the epoch path.

The models keep the config's architectures with random weights (no teacher training): this
measures the path, not learning. ``--profile`` adds torch.profiler's top operators of one epoch.

    python benchmarks/epoch_path.py                        # Fashion-MNIST (else digits), CPU
    python benchmarks/epoch_path.py --config search_spaces/base/digits.yaml
    python benchmarks/epoch_path.py --device cuda --cifar 2000 compute.amp=bf16 \
        compute.channels_last=true compute.cuda_graph=true  # the paper preset, synthetic CIFAR
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cifar_device_path import write_cifar10  # noqa: E402

from ablate.build import build_data, build_net, build_trainer  # noqa: E402
from ablate.config import load_config  # noqa: E402
from ablate.core.catalog import DATASETS  # noqa: E402
from ablate.core.data import augment_crop_flip, iterate_batches  # noqa: E402
from ablate.core.errors import DatasetMissingError  # noqa: E402
from ablate.core.fashion_mnist import find_files  # noqa: E402
from ablate.core.graphs import WARMUP_STEPS, GraphedStep  # noqa: E402
from ablate.core.methods import get_method  # noqa: E402
from ablate.core.step import Divergence, StepMeans, step_tensors  # noqa: E402

BASE = Path(__file__).resolve().parents[1] / "search_spaces" / "base"


def default_config() -> Path:
    """Fashion-MNIST where its files are (data.root or Debian's package), else digits."""
    try:
        find_files("data", DATASETS["fashion_mnist"].system_dirs)
        return BASE / "fmnist.yaml"
    except DatasetMissingError:
        return BASE / "digits.yaml"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_trainer(args: argparse.Namespace, work: Path):
    over = [f"device={args.device}", f"optim.epochs={args.epochs}"]
    if args.cifar:  # the paper preset on CIFAR-10's layout of synthetic images
        write_cifar10(work / "data", args.cifar, 100)
        over += [f"data.root={work / 'data'}", f"data.val_size={max(10, args.cifar // 2)}",
                 "eval.val_subset=1000",  # random teachers: the files are never read
                 f"teachers.clean.checkpoint={work / 'clean.pt'}",
                 f"teachers.robust.checkpoint={work / 'robust.pt'}"]
    over += args.overrides
    if args.train_subset:
        over.append(f"data.train_subset={args.train_subset}")
    cfg = load_config(args.config, over)
    data = build_data(cfg)
    torch.manual_seed(1)
    device = torch.device(args.device)
    clean = build_net(cfg.teachers.clean, data).to(device).eval()
    robust = build_net(cfg.teachers.robust, data).to(device).eval()
    return cfg, build_trainer(cfg, data, clean, robust, device)


def step_rate(trainer, n_images: int) -> float:
    """Images/s of the bare step on a copy of the trainer (its state at the end of the run),
    captured as a CUDA graph when the trainer's step is."""
    graphed, trainer.graphed = trainer.graphed, None  # a captured graph cannot be copied
    t = copy.deepcopy(trainer)
    trainer.graphed = graphed
    step = step_tensors
    if graphed is not None:
        graph = GraphedStep()
        step = lambda **kw: graph(0, **kw)  # noqa: E731
    batches = [(x.contiguous(memory_format=t.memory_format), y) for x, y in
               iterate_batches(t.data.train, t.batch_size, shuffle=False)]
    batches = [b for b in batches if len(b[0]) == t.batch_size] or batches
    e = max(t.epoch - 1, 0)  # the phase of the epoch just run
    params = get_method(t.method).epoch_params(t.params, e)
    update = t.teacher_optimizer is not None and e >= t.freeze_epochs
    means, divergence = StepMeans(), Divergence(t.device)

    def run(n: int) -> None:
        for i in range(n):
            x, y = batches[i % len(batches)]
            means.add(step(
                method=t.method, params=params, state=t.state, student=t.student,
                clean_teacher=t.clean_teacher, robust_teacher=t.robust_teacher, x=x, y=y,
                optimizer=t.optimizer, teacher_optimizer=t.teacher_optimizer,
                update_teacher=update, divergence=divergence, **t.step_kw))

    run(2 if graphed is None else WARMUP_STEPS + 2)  # warm-up (and the capture)
    steps = max(2, n_images // t.batch_size)
    sync(t.device)
    start = time.perf_counter()
    run(steps)
    means.read()
    divergence.check(t.method)
    return steps * t.batch_size / (time.perf_counter() - start)


def parts(trainer, work: Path) -> dict[str, float]:
    """Seconds per epoch of each part of the epoch path besides the steps, timed alone."""
    t, out = trainer, {}
    sync(t.device)

    def timed(name: str, fn) -> None:  # noqa: ANN001
        start = time.perf_counter()
        fn()
        sync(t.device)
        out[name] = time.perf_counter() - start

    def batches() -> None:
        g = torch.Generator().manual_seed(0)
        for x, _ in iterate_batches(t.data.train, t.batch_size, shuffle=True, generator=g):
            if t.data.augment:
                x = augment_crop_flip(x, generator=g)
            x.contiguous(memory_format=t.memory_format)

    timed("batches (draw, augment)", batches)
    timed("validation", t.validate)
    timed("best-epoch copy", lambda: (copy.deepcopy(t.student.state_dict()),
                                      t.teacher_drifts and copy.deepcopy(
                                          t.robust_teacher.state_dict())))
    timed("checkpoint save", lambda: t.save(work))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", type=Path, default=None, help="experiment YAML (default: "
                    "search_spaces/base/fmnist.yaml where Fashion-MNIST is installed, else "
                    "digits.yaml)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=6, help="epochs of the epoch path (≥ 2): "
                    "the first, then one timed against the bare step each")
    ap.add_argument("--train-subset", type=int, default=None, help="training images per epoch")
    ap.add_argument("--cifar", type=int, default=None, metavar="PER_FILE", help="the paper "
                    "preset (cifar10_paper.yaml) on synthetic CIFAR-10 files of PER_FILE images")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="torch.profiler of one more epoch")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.batch_size=256")
    args = ap.parse_args(argv)
    args.config = args.config or (BASE / "cifar10_paper.yaml" if args.cifar
                                  else default_config())
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        measure(args, Path(work))


def measure(args: argparse.Namespace, work: Path) -> None:
    cfg, trainer = make_trainer(args, work)
    n = len(trainer.data.train)
    print(f"{args.config.name} on {args.device}: {n} training images, batch "
          f"{cfg.optim.batch_size}, {cfg.student.arch} student, {cfg.method.name}, "
          f"PGD-{cfg.attack.steps}, validation on {len(trainer.val)} images "
          f"(PGD-{cfg.eval.val_steps}), {torch.get_num_threads()} threads", flush=True)
    first = time.perf_counter()
    next(trainer.run(work))  # epoch 1 also counts the step's FLOPs: not timed against the step
    print(f"  epoch 1: {time.perf_counter() - first:.2f} s (with the FLOP count)", flush=True)
    # Then epoch and bare step in turns, on the same images in the same phase: a shared
    # machine's load drifts, and only pairs taken together compare.
    rows = []
    for _ in range(args.epochs - 1):
        sync(trainer.device)
        start = time.perf_counter()
        metrics = next(trainer.run(work))
        sync(trainer.device)
        epoch_s = time.perf_counter() - start
        steps_s = n / step_rate(trainer, n)
        rows.append((steps_s, metrics["perf/epoch_s"], epoch_s))
        print(f"  epoch {trainer.epoch}: {epoch_s:.2f} s, its training loop "
              f"{metrics['perf/epoch_s']:.2f} s; the bare step {steps_s:.2f} s", flush=True)
    steps_s, loop_s, epoch_s = (statistics.median(r[k] for r in rows) for k in range(3))
    loop_ratio = statistics.median(r[0] / r[1] for r in rows)
    epoch_ratio = statistics.median(r[0] / r[2] for r in rows)
    table = parts(trainer, work)
    print(f"\nmedians of {len(rows)} pairs:")
    print(f"step           {n / steps_s:9.1f} img/s  ({steps_s:.2f} s for the epoch's images)")
    print(f"training loop  {n / loop_s:9.1f} img/s  ({loop_s:.2f} s: batches, steps, means; "
          f"the trial's perf/img_per_s)  {100 * loop_ratio:5.1f} % of the step "
          "(target ≥ 90%)")
    print(f"whole epoch    {n / epoch_s:9.1f} img/s  ({epoch_s:.2f} s: + validation, best copy, "
          f"checkpoint)  {100 * epoch_ratio:5.1f} % of the step")
    print("\nwhere the whole epoch's time goes (parts timed alone):")
    print(f"  {'steps (the bare step)':<26} {steps_s:7.2f} s  {100 * steps_s / epoch_s:5.1f} %")
    for name, part in table.items():
        print(f"  {name:<26} {part:7.2f} s  {100 * part / epoch_s:5.1f} %")
    rest = epoch_s - steps_s - sum(table.values())
    print(f"  {'rest (noise, means, reads)':<26} {rest:7.2f} s  {100 * rest / epoch_s:5.1f} %")
    if args.profile:
        profile(trainer)


def profile(trainer) -> None:  # noqa: ANN001
    trainer.epochs += 1
    with tempfile.TemporaryDirectory() as tmp, torch.profiler.profile() as prof:
        next(trainer.run(tmp))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
