"""The CIFAR-10 training path on one device, without CIFAR or the real teachers: what a trial
of the paper preset does on a GPU, from the files on disk to the test metrics.

1. Writes a CIFAR-10 in torchvision's pickled layout (``cifar-10-batches-py``), with images made
   from :func:`ablate.core.data.synthetic_cifar`'s class patterns (learnable, uint8), and
   randomly initialised teacher checkpoints of the preset's architectures (ResNet-56 clean,
   WRN-34-10 robust) as plain state dicts.
2. Loads ``search_spaces/base/cifar10_paper.yaml`` with overrides pointing at them, reads the
   data through the real loader (restricted unpickler, stratified hold-out), moves it to the
   device and checks it stays uint8 there (1 byte per pixel).
3. Trains ``--epochs`` epochs of CIARD with the preset's ResNet-18 student (PGD-10, ITT on),
   printing each epoch's images/s, TFLOP/s and MFU, then tests the best checkpoint (PGD-20 on
   the test split: PGD-20 with the TRADES settings and CW∞).

    python benchmarks/cifar_device_path.py --device cuda --amp bf16 --channels-last
    python benchmarks/cifar_device_path.py --device cpu --per-file 40 --n-test 100  # smoke

At the full size an epoch takes about 3.5 minutes on an H200 (the preset's batch of 64 is
launch-bound: docs/gpus-and-clusters.md); ``--per-file 1000 --n-test 1000`` checks the path in
about a minute there (measured: 210-225 images/s, 3.4 GiB of GPU memory at the peak). The
teachers are random, so accuracies stay near chance: this measures the path and its speed, not
learning.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate.build import build_data, build_spec, build_trainer, prepare_teachers  # noqa: E402
from ablate.config import load_config  # noqa: E402
from ablate.core.data import synthetic_cifar  # noqa: E402

PRESET = Path(__file__).resolve().parents[1] / "search_spaces" / "base" / "cifar10_paper.yaml"


def write_cifar10(root: Path, per_file: int, n_test: int) -> None:
    """Five training files of ``per_file`` images and one test file of ``n_test``."""
    data = synthetic_cifar(n_train=5 * per_file, n_val=1, n_test=n_test, seed=0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        pixels = (x * 255).round().to(torch.uint8).reshape(len(x), -1).numpy()
        entry = {"batch_label": name, "labels": y.tolist(), "data": pixels,
                 "filenames": [f"{name}_{i}.png" for i in range(len(x))]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    x, y = data.train.x, data.train.y
    for i in range(5):
        part = slice(i * per_file, (i + 1) * per_file)
        dump(f"data_batch_{i + 1}", x[part], y[part])
    dump("test_batch", data.test.x, data.test.y)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{k}" for k in range(10)]}, f)


def overrides(args: argparse.Namespace, work: Path) -> list[str]:
    val = max(10, min(5000, args.per_file // 2))
    return [f"data.root={work / 'data'}", f"data.val_size={val}",
            f"teachers.clean.checkpoint={work / 'clean.pt'}",
            f"teachers.robust.checkpoint={work / 'robust.pt'}",
            f"optim.epochs={args.epochs}", f"itt.freeze_epochs={args.freeze}",
            f"device={args.device}", f"compute.amp={args.amp}",
            f"compute.channels_last={str(args.channels_last).lower()}",
            f"compute.compile={str(args.compile).lower()}",
            "eval.attacks=[pgd_trades,cw_inf]", f"eval.val_subset={min(1000, val)}",
            *args.overrides]


def write_teachers(cfg, work: Path) -> None:
    """Random weights in the preset's architectures, saved as plain state dicts."""
    torch.manual_seed(0)
    for role, spec in (("clean", cfg.teachers.clean), ("robust", cfg.teachers.robust)):
        net = build_spec(spec, num_classes=10, in_channels=3)
        torch.save(net.state_dict(), work / f"{role}.pt")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--per-file", type=int, default=10_000, help="images per training file")
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--freeze", type=int, default=1, help="ITT starts after this epoch")
    ap.add_argument("--amp", default="bf16", choices=["none", "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("overrides", nargs="*", help="config overrides after the benchmark's own, "
                    "e.g. student.arch=small_cnn for a quick look at the path")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> None:
    t0 = time.perf_counter()
    write_cifar10(work / "data", args.per_file, args.n_test)
    cfg = load_config(PRESET, overrides(args, work))
    write_teachers(cfg, work)
    print(f"wrote CIFAR-10 layout ({5 * args.per_file} + {args.n_test} images) and teachers "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    data = build_data(cfg).to(device)
    train = data.train
    assert train.pixels.dtype == torch.uint8 and train.device.type == device.type, train
    mb = train.pixels.numel() * train.pixels.element_size() / 2**20
    print(f"loaded {len(train)} train / {len(data.val)} val / {len(data.test)} test on "
          f"{train.device} as {train.pixels.dtype} ({mb:.0f} MiB of training pixels) in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    clean, robust = prepare_teachers(cfg, data, device)
    trainer = build_trainer(cfg, data, clean, robust, device)
    for _ in range(cfg.optim.epochs):
        m = trainer.run_epoch()
        mfu = f"{100 * m['perf/mfu']:.1f}%" if "perf/mfu" in m else "n/a"
        print(f"epoch {int(m['epoch'])}: {m['perf/epoch_s']:.1f} s, {m['perf/img_per_s']:.0f} "
              f"img/s, {m['perf/tflops']:.1f} TFLOP/s, MFU {mfu}; loss "
              f"{m['train/loss']:.3f}, val clean {100 * m['val/clean_acc']:.1f}% PGD-10 "
              f"{100 * m['val/robust_acc']:.1f}%", flush=True)
    t0 = time.perf_counter()
    test = trainer.test()
    print(f"test ({time.perf_counter() - t0:.1f} s): " + ", ".join(
        f"{k} {100 * v:.1f}%" for k, v in sorted(test.items()) if k.endswith(("_acc", "_wr"))))
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
