"""What a search or grid will cost, before it starts: FLOPs, and time on this machine (a probe)
or on a GPU of a stated peak. ``--dry-run`` prints it (:mod:`ablate.cost.estimate`).

The FLOPs per image come from :mod:`ablate.core.flops` (torch's FlopCounterMode on a real
training step and validation pass of the config's models). One run of ``E`` epochs with the
robust teacher updated from epoch ``f`` (ITT; none without it) costs

    N_train · ((E − u) · F_step + u · F_step+ITT) + E · N_val · F_val,    u = max(0, E − f)

with ``N_train`` the training images per epoch (digits: from the data; CIFAR-10/100: 50,000
minus ``data.val_size``, never loaded), ``N_val`` the validation images (``eval.val_subset``
or the whole hold-out). A grid is its rows × seeds runs, each to the end. A search is
``num_samples`` runs; without early stopping each runs ``R = optim.epochs`` epochs (the upper
bound); with ``scheduler: asha`` the expectation is over where a trial stops
(:func:`asha_stops`). Teacher training and the final test of the selected checkpoints are not
included.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ablate.config import ExperimentConfig
from ablate.core.catalog import DATASETS
from ablate.core.errors import ConfigError

if TYPE_CHECKING:
    from ablate.core.flops import ImageFlops, Throughput

# Measured (benchmarks/device_check.py, one H200, torch 2.11): the CIARD step of the CIFAR
# presets (ResNet-18 student, ResNet-56 clean and WRN-34-10 robust teachers, PGD-10) at batch
# 128 reaches 2.4% of the bf16 peak in fp32 and 2.2% in bf16: it is bound by kernel launches
# (the thin ResNet-56 runs forward and backward in every PGD step), not by arithmetic. At batch
# 512: 6.5% fp32, 9.1% bf16. A cost at 35%, a typical figure for large dense models, would be
# 15x too low.
MFU_DEFAULT = 0.025
# The assumptions of a time printed without --probe or --peak-tflops, stated beside it. A GPU:
# the bf16 dense peak of an H100/H200. A CPU: per trial, what --probe measured for the digits and
# Fashion-MNIST steps on 2 cores (2-11 GFLOP/s: small convolutions are far from a CPU's peak).
ASSUMED_GPU_TFLOPS = 989.0
ASSUMED_CPU_GFLOPS = 4.0
COUNT_IMAGES = 2  # images of the counted step and validation pass
# Config paths whose value changes the work of a step (beyond itt.freeze_epochs, which the
# estimate follows); a search that varies one is counted at the base's value.
COMPUTE_PATHS = ("student", "teachers", "data", "attack.steps", "attack.objective",
                 "attack.clean_pass_first", "method.name", "method.push", "igdm",
                 "eval.val_steps", "eval.val_subset", "itt.enabled", "optim.epochs")
ZERO_SKIPS = ("method.alpha", "method.beta", "method.lam")  # a 0 drops a term's passes


# --- options (the CLI flags) ------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """How FLOPs become time: a probe of this machine, and/or a stated GPU peak and MFU."""

    probe: bool = False
    peak_tflops: float | None = None
    mfu: float = MFU_DEFAULT


def timing_options(*, dry_run: bool, probe: bool, peak_tflops: float | None,
                   mfu: float | None) -> Timing:
    """The timing flags, refused (exit 2) where they do nothing."""
    given = [flag for flag, value in (("--probe", probe), ("--peak-tflops", peak_tflops),
                                      ("--mfu", mfu)) if value]
    if given and not dry_run:
        raise ConfigError(f"{given[0]} only applies to --dry-run (the estimate it prints)")
    if mfu is not None and peak_tflops is None:
        raise ConfigError("--mfu needs --peak-tflops (the peak it is a fraction of)")
    return Timing(probe=probe, peak_tflops=peak_tflops, mfu=MFU_DEFAULT if mfu is None else mfu)


def tflops_arg(text: str) -> float:
    """argparse type of ``--peak-tflops``: a peak in TFLOP/s."""
    value = float(text)
    if not 0 < value <= 1e6:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1e6] TFLOP/s")
    return value


def mfu_arg(text: str) -> float:
    """argparse type of ``--mfu``: a fraction of the peak, 0.35 or 35%."""
    percent = text.strip().endswith("%")
    value = float(text.strip().rstrip("%")) / (100 if percent else 1)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in (0, 1] (e.g. 0.35 or "
                                         "35%)")
    return value


def with_flush(line: str) -> None:
    """Print a progress line at once (the estimate's log)."""
    print(line, flush=True)


# --- arithmetic -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compute:
    """FLOPs split by the kind of work, which a probe times at different speeds."""

    train: float = 0.0  # training steps, robust teacher not updated
    train_itt: float = 0.0  # training steps with the ITT teacher update
    val: float = 0.0  # per-epoch validation

    @property
    def total(self) -> float:
        return self.train + self.train_itt + self.val

    def __add__(self, other: Compute) -> Compute:
        return Compute(self.train + other.train, self.train_itt + other.train_itt,
                       self.val + other.val)

    def __mul__(self, k: float) -> Compute:
        return Compute(self.train * k, self.train_itt * k, self.val * k)

    __rmul__ = __mul__


def total(parts: Iterable[Compute]) -> Compute:
    out = Compute()
    for part in parts:
        out = out + part
    return out


def run_compute(per: ImageFlops, *, epochs: int, freeze: int | None, train_images: int,
                val_images: int) -> Compute:
    """One run of ``epochs`` epochs, the teacher updated in every epoch ``e >= freeze``
    (``None``: never): ``N_train·((E−u)·F_step + u·F_step+ITT) + E·N_val·F_val``."""
    itt = max(0, epochs - freeze) if freeze is not None else 0
    return Compute(train=train_images * (epochs - itt) * per.train,
                   train_itt=train_images * itt * per.train_itt,
                   val=epochs * val_images * per.val)


def asha_stops(grace: int, eta: float, max_epochs: int) -> list[tuple[int, float]]:
    """Where trials stop under successive halving: ``(epoch, fraction of trials)`` pairs.

    The rungs are ``r_k = g·η^k`` below ``R`` (``k = 0 .. K−1``); a trial reports once per
    epoch, so it is judged at epoch ``⌈r_k⌉``. Every trial reaches ``r_0 = g``; at each rung a
    fraction ``1/η`` of those that reached it goes on; the survivors of the last rung run to
    ``R``. So ``η^-k·(1 − 1/η)`` of the trials stop at ``⌈r_k⌉`` and ``η^-K`` reach ``R``:

        E[epochs per trial] = Σ_{k<K} η^-k (1 − η^-1) ⌈g η^k⌉ + η^-K R

    (quickstart: g 2, η 2, R 12: rungs 2, 4, 8, 4.5 epochs per trial). This is the
    expectation of synchronous halving. Ray's ASHA is asynchronous: a trial is judged against
    the trials that reached its rung before it (the first one always goes on), so it promotes
    somewhat more than ``1/η`` (the quickstart search trains 76 trial-epochs, not 72).
    ``g >= R``: no rung, every trial runs ``R`` epochs.
    """
    stops: list[tuple[int, float]] = []
    alive, k = 1.0, 0
    while grace * eta ** k < max_epochs:
        epoch = min(max_epochs, math.ceil(grace * eta ** k - 1e-9))
        stops.append((epoch, alive * (1 - 1 / eta)))
        alive /= eta
        k += 1
    stops.append((max_epochs, alive))
    return stops


def expected_epochs(grace: int, eta: float, max_epochs: int) -> float:
    """Expected epochs per trial under successive halving (:func:`asha_stops`)."""
    return sum(epoch * p for epoch, p in asha_stops(grace, eta, max_epochs))


# --- formatting -------------------------------------------------------------------------------

_UNITS = [("FLOP", 1.0), ("kFLOP", 1e3), ("MFLOP", 1e6), ("GFLOP", 1e9), ("TFLOP", 1e12),
          ("PFLOP", 1e15), ("EFLOP", 1e18), ("ZFLOP", 1e21), ("YFLOP", 1e24)]


def flop_unit(value: float) -> tuple[str, float]:
    """The largest unit in which ``value`` is at least 1."""
    unit = _UNITS[0]
    for name, scale in _UNITS:
        if value >= scale:
            unit = (name, scale)
    return unit


def number(value: float) -> str:
    """Two significant digits below 10 (no exponent), three below 1000, then whole numbers
    with thousands separators."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.3g}"
    if value <= 0:
        return "0"
    return f"{value:.{max(1, 1 - math.floor(math.log10(value)))}f}"


def format_flops(value: float, unit: tuple[str, float] | None = None) -> str:
    """``1.1 EFLOP``; ``unit`` to write several values in the same one."""
    name, scale = unit or flop_unit(value)
    return f"{number(value / scale)} {name}"


def format_hours(seconds: float, prefix: str = "") -> str:
    """``12 h``, or minutes or seconds below an hour (``prefix``: ``GPU-`` for GPU-h)."""
    if seconds >= 3600:
        return f"{number(seconds / 3600)} {prefix}h"
    if seconds >= 60:
        return f"{number(seconds / 60)} {prefix}min"
    return f"{number(seconds)} {prefix}s"


# --- counting the configs ---------------------------------------------------------------------


def split_sizes(cfg: ExperimentConfig) -> tuple[int, int]:
    """(training images per epoch, validation images per epoch) of the config."""
    d, official = cfg.data, DATASETS[cfg.data.name].train_images
    if official is not None:  # the hold-out of a known training set: nothing to load
        val = int(d.val_size) if d.val_size >= 1 else int(round(d.val_size * official))
        train = official - val
    else:  # a bundled or generated set, as its loader splits it (small: digits, synthetic)
        from ablate.build import build_data

        data = build_data(cfg)
        train, val = len(data.train), len(data.val)
    if d.train_subset is not None:
        train = min(train, d.train_subset)
    subset = cfg.eval.val_subset
    return train, val if subset is None else min(subset, val)


def itt_freeze(cfg: ExperimentConfig) -> int | None:
    """The first epoch in which the robust teacher is updated, or None when it never is."""
    return cfg.itt.freeze_epochs if cfg.method.itt and cfg.itt.enabled else None


def compute_key(cfg: ExperimentConfig) -> str:
    """Configs with the same key have the same step (the freeze epoch aside)."""
    d = cfg.model_dump(mode="json", exclude={"name", "seed", "device"})
    d["data"] = d["data"]["name"]
    d["optim"] = d["optim"]["batch_size"]  # per-image FLOPs do not depend on it; the probe does
    d["itt"] = cfg.itt.enabled
    d["eval"] = cfg.eval.val_steps
    for role in ("clean", "robust"):
        d["teachers"][role].pop("checkpoint", None)
        d["teachers"][role].pop("train", None)
    return json.dumps(d, sort_keys=True)


def _counting_config(cfg: ExperimentConfig, *, plain: bool) -> ExperimentConfig:
    """The config with ITT reachable in its second epoch (so both steps exist), and for
    counting (``plain``) without mixed precision, channels-last or compilation."""
    update: dict[str, Any] = {"optim": cfg.optim.model_copy(update={"epochs": 2})}
    if itt_freeze(cfg) is not None:
        update["itt"] = cfg.itt.model_copy(update={"freeze_epochs": 1})
    if plain and hasattr(cfg, "compute"):
        update["compute"] = type(cfg.compute)()
    return cfg.model_copy(update=update)


@dataclass
class Counter:
    """Counts (and probes) configs, building each teacher architecture once; counts are
    cached by :func:`compute_key`."""

    shapes_only: bool = True
    counts: dict[str, ImageFlops] = field(default_factory=dict)
    probes: dict[str, dict[str, Throughput]] = field(default_factory=dict)
    seconds: float = 0.0
    _teachers: dict[str, Any] = field(default_factory=dict)

    def _trainer(self, cfg: ExperimentConfig, device: Any, train_images: int) -> Any:
        import torch

        from ablate.build import build_net, build_trainer
        from ablate.core.data import Dataset
        from ablate.core.flops import tiny_split

        info = DATASETS[cfg.data.name]
        shape = (info.channels, info.side, info.side)
        train = tiny_split(shape, train_images)
        small = tiny_split(shape, COUNT_IMAGES)
        data = Dataset(info.name, train, small, small, info.classes, augment=info.augment)
        teachers = []
        for role in ("clean", "robust"):
            spec = getattr(cfg.teachers, role)
            key = f"{device}:{spec.model_dump_json(include={'arch', 'kwargs', 'normalize'})}"
            if key not in self._teachers:
                self._teachers[key] = build_net(spec, data).to(device)
            teachers.append(self._teachers[key])
        # build_trainer copies the robust teacher, so the shared one is never updated; the
        # clean one is only read.
        return build_trainer(cfg, data, teachers[0], teachers[1], torch.device(device))

    def count(self, cfg: ExperimentConfig) -> ImageFlops:
        key = compute_key(cfg)
        if key not in self.counts:
            import torch

            from ablate.core.flops import trainer_flops

            start = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                trainer = self._trainer(_counting_config(cfg, plain=True), "cpu", COUNT_IMAGES)
                self.counts[key] = trainer_flops(trainer, shapes_only=self.shapes_only)
            self.seconds += time.perf_counter() - start
        return self.counts[key]

    def probe(self, cfg: ExperimentConfig) -> dict[str, Throughput]:
        """Images/s of real training steps of the config's models at its batch size on its
        device: ``train`` (teacher frozen) and, where ITT changes the step, ``train_itt``."""
        key = compute_key(cfg)
        if key not in self.probes:
            import torch

            from ablate.build import resolve_device
            from ablate.core.flops import time_steps

            per = self.count(cfg)
            device = resolve_device(cfg.device)
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                trainer = self._trainer(_counting_config(cfg, plain=False), str(device),
                                        cfg.optim.batch_size)
                out = {"train": time_steps(trainer)}
                if per.itt_differs:
                    out["train_itt"] = time_steps(trainer, itt=True)
            self.probes[key] = out
            del trainer
        return self.probes[key]


def probe_seconds(compute: Compute, per: ImageFlops, probe: dict[str, Throughput]) -> float:
    """Seconds for ``compute`` at the probed speeds; validation at the speed of the frozen-
    teacher step (FLOP/s), which is close for these mostly-convolution passes."""
    rate = per.train * probe["train"].images_per_s
    rate_itt = (per.train_itt * probe["train_itt"].images_per_s if "train_itt" in probe
                else rate)
    return (compute.train + compute.val) / rate + compute.train_itt / rate_itt


# --- the estimate lines -----------------------------------------------------------------------
