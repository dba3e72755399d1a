"""Final-evaluation attack suite (docs/evaluation.md): clean, FGSM, PGD_SAT, PGD_TRADES, CW∞,
Square, AutoAttack and black-box transfer, all L∞ at radius ε on inputs in [0, 1].

The white-box attacks are objectives for the one PGD loop in :mod:`ablate.core.attacks`; step
sizes are fractions of ε so the protocol carries over from CIFAR (ε = 8/255) to digits (ε = 0.2).
Square and AutoAttack come from ``pyautoattack``. Every attack runs under its own forked, seeded
RNG, so results are reproducible and the caller's global RNG is left untouched.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.core.accuracy import correct, eval_mode
from ablate.core.attacks import Objective, Start, pgd
from ablate.core.catalog import ATTACK_LABELS, ATTACKS, check_attacks
from ablate.core.console import Log, clock

__all__ = ["adversarial_examples", "cw_margin_loss", "run_suite",
           "suite_metrics", "suite_table"]


CW_KAPPA = 50.0
SQUARE_QUERIES = 100
PROGRESS_S = 10.0  # at most one progress line per attack this often


class Progress:
    """Lines ``NAME: DONE/TOTAL images, ELAPSED, ETA ...`` for a long attack, at most every
    :data:`PROGRESS_S` seconds (a short attack prints none)."""

    def __init__(self, name: str, total: int, log: Log | None) -> None:
        self.name, self.total, self.log = name, total, log
        self.start = self.last = time.perf_counter()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if self.log is None or now - self.last < PROGRESS_S or done >= self.total:
            return
        self.last = now
        left = (now - self.start) / max(done, 1) * (self.total - done)
        self.log(f"  {self.name}: {done}/{self.total} images, {clock(now - self.start)}, "
                 f"ETA {clock(left)}")


_AA_BATCH = re.compile(r"^(\S+) - (\d+)/(\d+) - ")


class _AutoAttackLines(logging.Handler):
    """pyautoattack's own progress (logger ``auto-attack``, DEBUG): each sub-attack's result
    line, and its batches with the sub-attack's ETA at most every :data:`PROGRESS_S`."""

    def __init__(self, log: Log) -> None:
        super().__init__(logging.DEBUG)
        self.out, self.last = log, 0.0
        self.sub: tuple[str, float] = ("", 0.0)  # the sub-attack running and when it began

    def emit(self, record: logging.LogRecord) -> None:
        text, now = record.getMessage(), time.perf_counter()
        batch = _AA_BATCH.match(text)
        if batch is None:  # 'robust accuracy after APGD-CE: ...', 'initial accuracy', ...
            self.out(f"  autoattack: {text}")
            return
        name, done, total = batch.group(1), int(batch.group(2)), int(batch.group(3))
        if name != self.sub[0]:
            self.sub = (name, now)
        if now - self.last >= PROGRESS_S and done < total:
            self.last = now
            left = (now - self.sub[1]) / done * (total - done)
            self.out(f"  autoattack: {name} batch {done}/{total}, ETA of {name} {clock(left)}")


@contextmanager
def _autoattack_progress(log: Log | None) -> Iterator[None]:
    if log is None:
        yield
        return
    logger, handler = logging.getLogger("auto-attack"), _AutoAttackLines(log)
    saved = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # to our log only, once
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@dataclass(frozen=True)
class _PGDSpec:
    steps: int
    step_frac: float  # step size as a fraction of ε
    start: Start
    loss: str  # "ce" or "cw"


# docs/evaluation.md at ε = 8/255: PGD_SAT step 2/255 = ε/4; PGD_TRADES step 0.003 =
# 0.095625·ε; CW step 2/255.
_WHITE_BOX: dict[str, _PGDSpec] = {
    "fgsm": _PGDSpec(1, 1.0, "none", "ce"),
    "pgd_sat": _PGDSpec(20, 0.25, "uniform", "ce"),
    "pgd_trades": _PGDSpec(20, 0.003 / (8 / 255), "uniform", "ce"),
    "cw_inf": _PGDSpec(30, 0.25, "none", "cw"),
}
_TRANSFER: dict[str, str] = {"transfer_pgd_trades": "pgd_trades", "transfer_cw_inf": "cw_inf"}


def cw_margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = CW_KAPPA) -> torch.Tensor:
    """Per-sample CW∞ loss −max(z_y − max_{j≠y} z_j + κ, 0), to be maximised."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    # Mask the true class with -inf so the max runs over j ≠ y only.
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return -torch.clamp(z_y - others.max(1).values + kappa, min=0.0)


def _objective(model: nn.Module, y: torch.Tensor, loss: str) -> Objective:
    # Sums, not means: each sample's gradient is then independent of the batch it sits in.
    if loss == "cw":
        return lambda x_adv: cw_margin_loss(model(x_adv), y).sum()
    return lambda x_adv: F.cross_entropy(model(x_adv), y, reduction="sum")


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Fork the CPU (and any initialised CUDA) RNG, seed it, and restore it on exit."""
    # pyautoattack reseeds the CPU and CUDA generators itself; forking every initialised device
    # keeps those reseeds from leaking to the caller.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        # Not torch.manual_seed: on a GPU host with CUDA not yet initialised it would queue a
        # CUDA reseed that fires later, outside the fork.
        torch.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.manual_seed_all(seed)
        yield


def _device(model: nn.Module, x: torch.Tensor) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else x.device


def _batched(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
             y: torch.Tensor, batch_size: int,
             progress: Callable[[int], None] | None = None) -> torch.Tensor:
    chunks = []
    for i in range(0, len(x), batch_size):
        chunks.append(fn(x[i:i + batch_size], y[i:i + batch_size]))
        if progress is not None:
            progress(i + len(chunks[-1]))
    return torch.cat(chunks) if chunks else x.clone()


def adversarial_examples(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
    surrogate: nn.Module | None = None, seed: int = 0, batch_size: int = 256,
    log: Log | None = None,
) -> torch.Tensor:
    """x_adv of attack ``name`` (docs/evaluation.md) on ``model``; transfer attacks craft on
    ``surrogate``. ``log``: progress lines of a long attack (:class:`Progress`; AutoAttack's
    sub-attacks and batches).

    Models are put in eval mode and restored; the attack runs under a forked RNG seeded by ``seed``.
    """
    check_attacks([name])
    progress = Progress(name, len(x), log)
    if name in _TRANSFER:
        if surrogate is None:
            raise ValueError(f"attack {name!r} needs a surrogate model (the robust teacher)")
        # Black-box transfer: the evaluated model is never queried while crafting.
        model, name = surrogate, _TRANSFER[name]
    with eval_mode(model), _seeded(seed):
        if name in _WHITE_BOX:
            s = _WHITE_BOX[name]
            return _batched(lambda xb, yb: pgd(_objective(model, yb, s.loss), xb, eps=eps,
                                               step_size=s.step_frac * eps, steps=s.steps,
                                               start=s.start), x, y, batch_size, progress)
        device = _device(model, x)
        if name == "square":
            from pyautoattack.square import SquareAttack  # heavy import, only when used

            # resc_schedule=True rescales the square-size schedule to the 100-query budget, as
            # torchattacks' Square (the released evaluation) does by default; without it the
            # squares stay large and robust accuracy reads up to ~14 points higher on digits.
            sq = SquareAttack(model, p_init=0.8, n_queries=SQUARE_QUERIES, eps=eps, norm="Linf",
                              n_restarts=1, seed=seed, verbose=False, device=device,
                              resc_schedule=True)
            with torch.no_grad():
                return _batched(lambda xb, yb: sq.perturb(xb, yb).detach(), x, y, batch_size,
                                progress)
        from pyautoattack import AutoAttack

        adv = AutoAttack(model, eps=eps, norm="Linf", version="standard", device=device,
                         seed=seed)
        with _autoattack_progress(log):
            x_adv, _ = adv.run_standard_evaluation(x, y, batch_size=batch_size)
        return x_adv.detach()


def run_suite(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attacks: Sequence[str] = ATTACKS,
    eps: float, w: float = 0.5, surrogate: nn.Module | None = None,
    autoattack_subset: int | None = None, seed: int = 0, batch_size: int = 256,
    log: Callable[[str], None] | None = None,
    on_adv: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None,
    done: Mapping[str, Mapping[str, float]] | None = None,
    on_result: Callable[[str, dict[str, float]], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Clean and per-attack robust / W-R accuracy (fractions) of ``model`` on (x, y)
    (docs/evaluation.md).

    W-R = w·clean + (1−w)·robust. AutoAttack runs on the first ``autoattack_subset`` samples
    (None: all); its "clean" and "n" refer to that subset. ``on_adv(name, x_adv, y)`` sees
    each attack's examples (e.g. to score the teachers on the student's PGD examples).
    ``done``: results of attacks that already ran (a stopped evaluation), kept, not run again;
    ``on_result(name, result)`` sees each attack's result the moment it finishes (clean first).
    """
    # Validate everything up front so a typo never costs a long AutoAttack run first.
    check_attacks(attacks)
    needs_surrogate = [a for a in attacks if a in _TRANSFER]
    if needs_surrogate and surrogate is None:
        raise ValueError(f"attack(s) {needs_surrogate} need a surrogate model (the robust teacher)")
    n = len(y)
    with eval_mode(model):
        clean_hits = correct(model, x, y, batch_size)
    results: dict[str, dict[str, float]] = {"clean": {"acc": clean_hits / max(n, 1), "n": n}}
    if on_result is not None:
        on_result("clean", results["clean"])
    for i, name in enumerate(attacks):
        if done and name in done:
            results[name] = dict(done[name])
            continue
        if log is not None and len(attacks) > 1:
            log(f"{name} ({i + 1}/{len(attacks)}) ...")
        xs, ys, hits = x, y, clean_hits
        if name == "autoattack" and autoattack_subset is not None and autoattack_subset < n:
            xs, ys = x[:autoattack_subset], y[:autoattack_subset]
            with eval_mode(model):
                hits = correct(model, xs, ys, batch_size)
        start = time.perf_counter()
        x_adv = adversarial_examples(name, model, xs, ys, eps=eps, surrogate=surrogate,
                                     seed=seed, batch_size=batch_size, log=log)
        with eval_mode(model):
            robust = correct(model, x_adv, ys, batch_size) / max(len(ys), 1)
        seconds = time.perf_counter() - start  # correct() syncs the device, so this is honest
        if on_adv is not None:
            on_adv(name, x_adv, ys)
        clean = hits / max(len(ys), 1)
        results[name] = {"clean": clean, "robust": robust, "w_r": w * clean + (1 - w) * robust,
                         "n": len(ys), "seconds": seconds}
        if log is not None:
            log(f"{name}: robust {100 * robust:.2f}% clean {100 * clean:.2f}% "
                f"(n={len(ys)}, {seconds:.1f}s)")
        if on_result is not None:
            on_result(name, results[name])
    return results


def suite_metrics(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Flat metrics: clean_acc, <attack>_acc (robust), <attack>_wr, and autoattack_n."""
    out = {"clean_acc": float(results["clean"]["acc"])}
    for name in ATTACKS:
        if name in results:
            out[f"{name}_acc"] = float(results[name]["robust"])
            out[f"{name}_wr"] = float(results[name]["w_r"])
            if name == "autoattack":
                out["autoattack_n"] = float(results[name]["n"])
    return out


def suite_table(results: Mapping[str, Mapping[str, float]], *, title: str = "") -> str:
    """Markdown table | Attack | Clean | Robust | W-R | n | in percent (CIARD Tables 3–6 layout)."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| Attack | Clean | Robust | W-R | n |", "|---|---:|---:|---:|---:|"]
    for name in ATTACKS:
        if name in results:
            r = results[name]
            lines.append(f"| {ATTACK_LABELS[name]} | {100 * r['clean']:.2f} "
                         f"| {100 * r['robust']:.2f} | {100 * r['w_r']:.2f} | {int(r['n'])} |")
    total = int(results["clean"]["n"])
    if "autoattack" in results and int(results["autoattack"]["n"]) < total:
        lines += ["", f"AutoAttack on the first {int(results['autoattack']['n'])} of {total} "
                      "test samples."]
    return "\n".join(lines)
