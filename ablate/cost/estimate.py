"""The ``--dry-run`` cost lines of a search or a grid (:func:`search_estimate`,
:func:`grid_estimate`): the arithmetic of :mod:`ablate.cost` on the FLOPs counted for each
config, the ASHA expectation, and the time on this machine (``--probe``) or at a stated peak.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ablate.config import ExperimentConfig, GridSpec, SearchSpec
from ablate.cost.model import (
    ASSUMED_CPU_GFLOPS,
    ASSUMED_GPU_TFLOPS,
    COMPUTE_PATHS,
    COUNT_IMAGES,
    MFU_DEFAULT,
    ZERO_SKIPS,
    Compute,
    Counter,
    Timing,
    asha_stops,
    expected_epochs,
    flop_unit,
    format_flops,
    format_hours,
    itt_freeze,
    number,
    probe_seconds,
    run_compute,
    split_sizes,
    total,
    with_flush,
)

if TYPE_CHECKING:
    from ablate.core.flops import ImageFlops, Throughput


def _per_image(per: ImageFlops, cfg: ExperimentConfig, train: int, val: int) -> str:
    step = format_flops(per.train)
    if per.itt_differs:
        f = cfg.itt.freeze_epochs
        step += f" ({format_flops(per.train_itt)} while ITT updates the teacher, epoch >= {f})"
    return (f"training step {step}, validation {format_flops(per.val)} "
            f"(PGD-{cfg.eval.val_steps}); {train:,} training and {val:,} validation images "
            "per epoch")


def _probe_text(cfg: ExperimentConfig, per: ImageFlops, probe: dict[str, Throughput]) -> str:
    parts = []
    for kind, label in (("train", "teacher frozen"), ("train_itt", "ITT")):
        if kind in probe:
            t = probe[kind]
            flops = per.train if kind == "train" else per.train_itt
            parts.append(f"{number(t.images_per_s)} img/s {label} "
                         f"({format_flops(flops * t.images_per_s)}/s)")
    return f"batch {cfg.optim.batch_size}: " + ", ".join(parts)


def _time_parts(timing: Timing, expected: float, upper: float | None,
                probe_s: tuple[float, float | None] | None, probe_what: str,
                device: str, cfg: ExperimentConfig) -> list[str]:
    """Time: GPU-hours at a peak and/or hours at the probed speed; else how to get them."""
    out = []
    if timing.peak_tflops is not None:
        rate = timing.peak_tflops * 1e12 * timing.mfu
        bound = f" ({format_hours(upper / rate, 'GPU-')} upper bound)" if upper else ""
        amp = getattr(getattr(cfg, "compute", None), "amp", "none")
        out.append(f"≈ {format_hours(expected / rate, 'GPU-')}{bound} at "
                   f"{timing.peak_tflops:g} TFLOP/s × {timing.mfu * 100:g}% MFU"
                   + (" (the config trains in fp32: compute.amp=none)" if amp == "none"
                      else ""))
    if probe_s is not None:
        seconds, upper_s = probe_s
        bound = f" ({format_hours(upper_s)} upper bound)" if upper_s is not None else ""
        out.append(f"≈ {format_hours(seconds)}{bound} on this machine at the probed speed, one "
                   f"trial at a time ({device}; {probe_what})")
    if not out and not timing.probe:
        out = _assumed_time(expected, upper, cfg)
    return out


def _assumed_time(expected: float, upper: float | None, cfg: ExperimentConfig) -> list[str]:
    """Time without --probe or --peak-tflops: on the device the config would train on here,
    at an assumed speed that is stated, and the flags that replace the assumption."""
    if _device_type(cfg) == "cuda":
        rate, unit = ASSUMED_GPU_TFLOPS * 1e12 * MFU_DEFAULT, "GPU-"
        why = (f"assumed: {ASSUMED_GPU_TFLOPS:g} TFLOP/s, an H100/H200's bf16 peak, × "
               f"{MFU_DEFAULT * 100:g}% MFU, what the CIFAR step measured on an H200")
    else:
        rate, unit = ASSUMED_CPU_GFLOPS * 1e9, "CPU "
        why = (f"assumed: {ASSUMED_CPU_GFLOPS:g} GFLOP/s per trial on CPU, what --probe "
               "measured for the digits and Fashion-MNIST steps on 2 cores")
    bound = f" ({format_hours(upper / rate, unit)} upper bound)" if upper else ""
    return [f"≈ {format_hours(expected / rate, unit)}{bound}, one trial at a time ({why})",
            "time: --probe times real training steps here; --peak-tflops T [--mfu M, default "
            f"{MFU_DEFAULT:g}] gives GPU-hours at your GPU's peak"]


def _device_type(cfg: ExperimentConfig) -> str:
    from ablate.build import resolve_device

    try:
        return resolve_device(cfg.device).type
    except Exception:  # device=cuda on a machine without one: the run would train on a GPU
        return "cuda"


def _with_time(lines: list[str], parts: list[str]) -> list[str]:
    """The first time part joins the headline (``...; ≈ N GPU-h at ...``); a hint or a second
    part gets its own line."""
    if parts and parts[0].startswith("≈"):
        lines[0] += "; " + parts.pop(0)
    return lines + ["  " + part for part in parts]


def _device_name(cfg: ExperimentConfig) -> str:
    import torch

    from ablate.build import resolve_device

    device = resolve_device(cfg.device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu, {torch.get_num_threads()} threads"


def _searched_compute_keys(spec: SearchSpec) -> list[str]:
    out = []
    for key, param in spec.space.items():
        for path in spec.targets(key):
            hits = any(path == p or path.startswith(p + ".") for p in COMPUTE_PATHS)
            zero = path in ZERO_SKIPS and 0 in param.corners()
            if hits or zero:
                out.append(key)
                break
    return out


def _freeze_values(spec: SearchSpec) -> tuple[str, list[int]] | None:
    """The searched key that sets itt.freeze_epochs and the values it can take."""
    for key, param in spec.space.items():
        if "itt.freeze_epochs" in spec.targets(key):
            if param.type == "categorical":
                return key, [int(v) for v in param.choices or []]
            return key, list(range(math.ceil(param.low or 0), int(param.high or 0) + 1))
    return None


@dataclass(frozen=True)
class SearchFlops:
    """A search's compute: the upper bound (every trial to ``R``, the teacher updated from the
    earliest freeze epoch the space allows) and the expectation (over where ASHA stops a
    trial, and uniformly over a searched freeze epoch)."""

    per: ImageFlops
    train_images: int
    val_images: int
    upper: Compute
    expected: Compute
    stops: list[tuple[int, float]]  # (epoch, fraction of trials stopping there)
    freeze_key: str | None  # the space key that sets itt.freeze_epochs, if any
    freezes: list[int | None]  # the freeze epochs averaged over (None: no ITT)


def confirm_runs(spec: SearchSpec) -> int:
    """Runs of the confirm stage; with ``with_base`` an upper bound (the base config may be
    one of the candidates)."""
    if spec.confirm is None:
        return 0
    return (spec.confirm.top_k + spec.confirm.with_base) * len(spec.confirm.seeds)


def search_flops(spec: SearchSpec, counter: Counter) -> SearchFlops:
    cfg, n, big_r = spec.base, spec.num_samples, spec.base.optim.epochs
    train, val = split_sizes(cfg)
    per = counter.count(cfg)
    freeze = itt_freeze(cfg)
    searched = _freeze_values(spec) if freeze is not None else None
    freezes: list[int | None] = [freeze] if searched is None else list(searched[1])

    def run(epochs: int, f: int | None) -> Compute:
        return run_compute(per, epochs=epochs, freeze=f, train_images=train, val_images=val)

    earliest = min(freezes, key=lambda f: math.inf if f is None else f)
    sched = spec.scheduler
    stops = (asha_stops(sched.grace_period, sched.reduction_factor, big_r)
             if sched.name == "asha" else [(big_r, 1.0)])
    expected = (n / len(freezes)) * total(p * run(e, f) for f in freezes for e, p in stops)
    # The confirm stage: top_k configurations re-trained in full on each seed; their freeze
    # epochs are the search's picks, so counted like a trial's.
    k = confirm_runs(spec)
    expected = expected + (k / len(freezes)) * total(run(big_r, f) for f in freezes)
    return SearchFlops(per=per, train_images=train, val_images=val,
                       upper=(n + k) * run(big_r, earliest), expected=expected, stops=stops,
                       freeze_key=searched[0] if searched else None, freezes=freezes)


def search_estimate(spec: SearchSpec, timing: Timing, counter: Counter | None = None,
                    log: Callable[[str], None] | None = with_flush) -> list[str]:
    """The ``--dry-run`` lines of a search: FLOPs (upper bound, and the ASHA expectation),
    what they are made of, and time."""
    counter = counter or Counter()
    cfg, n, big_r, sched = spec.base, spec.num_samples, spec.base.optim.epochs, spec.scheduler
    s = search_flops(spec, counter)
    upper, expected, asha = s.upper, s.expected, sched.name == "asha"
    unit = flop_unit(upper.total)
    head = f"cost: ≈ {format_flops(upper.total, unit)} upper bound (no early stopping)"
    if asha:
        head += (f", ≈ {format_flops(expected.total, unit)} expected with ASHA (grace "
                 f"{sched.grace_period}, η {sched.reduction_factor:g})")
    elif expected != upper:
        head += f", ≈ {format_flops(expected.total, unit)} expected"
    lines = [head, f"  per image: {_per_image(s.per, cfg, s.train_images, s.val_images)}; "
             f"{n} trials of up to {big_r} epochs"
             + (f", then {confirm_runs(spec)} confirm runs of {big_r}" if spec.confirm else "")]
    if asha:
        rungs = ", ".join(f"1/{sched.reduction_factor ** k:g} on to {e}"
                          for k, (e, _) in enumerate(s.stops) if k)
        lines.append(
            f"  ASHA: every trial to epoch {s.stops[0][0]}{', ' + rungs if rungs else ''}: "
            f"{number(expected_epochs(sched.grace_period, sched.reduction_factor, big_r))} "
            f"of {big_r} epochs per trial expected (synchronous halving; Ray's asynchronous "
            "ASHA promotes a few more)")
    if s.freeze_key is not None:
        values = [f for f in s.freezes if f is not None]
        lines.append(f"  {s.freeze_key} is searched ({min(values)}..{max(values)}): the upper "
                     f"bound updates the teacher from epoch {min(values)}, the expectation "
                     "averages over the values uniformly")
    others = [k for k in _searched_compute_keys(spec) if k != s.freeze_key]
    if others:
        lines.append(f"  counted at the base's values, though they change the work of a "
                     f"step: {', '.join(others)}")
    lines.append(_counted_line(counter))
    probe_s, what = None, ""
    if timing.probe:
        if log:
            log("probing training steps here (--probe) ...")
        try:
            probe = counter.probe(cfg)
        except Exception as exc:  # a device that is not there, memory, ...: said, not fatal
            lines.append(f"  probe failed: {_why(exc)}")
        else:
            probe_s = (probe_seconds(expected, s.per, probe),
                       probe_seconds(upper, s.per, probe) if expected != upper else None)
            what = _probe_text(cfg, s.per, probe)
    return _with_time(lines, _time_parts(
        timing, expected.total, upper.total if expected != upper else None, probe_s, what,
        _device_name(cfg) if probe_s else "", cfg))


@dataclass(frozen=True)
class GridRow:
    name: str
    cfg: ExperimentConfig  # the row's cell config (first seed)
    per: ImageFlops
    compute: Compute  # all its seeds, each trained to the end


def grid_flops(grid: GridSpec, counter: Counter) -> list[GridRow]:
    out = []
    for r in grid.rows:
        cfg = grid.cell_config(r.name, grid.seeds[0])
        train, val = split_sizes(cfg)
        per = counter.count(cfg)
        run = run_compute(per, epochs=cfg.optim.epochs, freeze=itt_freeze(cfg),
                          train_images=train, val_images=val)
        out.append(GridRow(r.name, cfg, per, len(grid.seeds) * run))
    return out


def grid_estimate(grid: GridSpec, timing: Timing, counter: Counter | None = None,
                  log: Callable[[str], None] | None = with_flush) -> list[str]:
    """The ``--dry-run`` lines of a grid: every cell (row × seed) trained to the end."""
    counter = counter or Counter()
    seeds = len(grid.seeds)
    rows = grid_flops(grid, counter)
    whole = total(r.compute for r in rows)
    lines = [f"cost: ≈ {format_flops(whole.total)} for {len(rows) * seeds} cells ({len(rows)} "
             f"rows × {seeds} seeds), each trained to the end (no early stopping in a grid)"]
    train, val = split_sizes(grid.base)
    lines.append(f"  {train:,} training and {val:,} validation images per epoch; per image "
                 "and row:")
    for r in rows:
        step = format_flops(r.per.train)
        if r.per.itt_differs and itt_freeze(r.cfg) is not None:
            step += (f" / {format_flops(r.per.train_itt)} with ITT from epoch "
                     f"{r.cfg.itt.freeze_epochs}")
        lines.append(f"    {r.name!r}: step {step}, validation {format_flops(r.per.val)}, "
                     f"{r.cfg.optim.epochs} epochs: {format_flops(r.compute.total)} for "
                     f"{seeds} seeds")
    lines.append(_counted_line(counter))
    probe_s, what = None, ""
    if timing.probe:
        if log:
            log("probing training steps here (--probe) ...")
        seconds, texts = 0.0, []
        try:
            for r in rows:
                probe = counter.probe(r.cfg)
                seconds += probe_seconds(r.compute, r.per, probe)
                text = _probe_text(r.cfg, r.per, probe)
                if text not in texts:
                    texts.append(text)
        except Exception as exc:  # a device that is not there, memory, ...: said, not fatal
            lines.append(f"  probe failed: {_why(exc)}")
        else:
            probe_s, what = (seconds, None), "; ".join(texts)
    return _with_time(lines, _time_parts(
        timing, whole.total, None, probe_s, what,
        _device_name(grid.base) if probe_s else "", grid.base))


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def _counted_line(counter: Counter) -> str:
    return (f"  counted in {counter.seconds:.1f} s by FlopCounterMode on a real training step "
            f"and validation pass ({len(counter.counts)} config"
            f"{'s' if len(counter.counts) != 1 else ''}, {COUNT_IMAGES} images, CPU); "
            "teacher training and the final test are not included")
