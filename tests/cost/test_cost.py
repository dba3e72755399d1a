"""The compute estimate of ``--dry-run`` (ablate.cost): the ASHA expectation against a
brute-force run of synchronous successive halving, totals against numbers done by hand, the
units, and the estimate lines of the CLI."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ablate.cli import main
from ablate.config import ExperimentConfig, GridSpec, SearchSpec
from ablate.core.errors import ConfigError
from ablate.core.flops import ImageFlops
from ablate.cost import MFU_DEFAULT, grid_estimate, mfu_arg, search_estimate, timing_options
from ablate.cost.estimate import grid_flops, search_flops
from ablate.cost.model import (
    Compute,
    Counter,
    asha_stops,
    expected_epochs,
    format_flops,
    format_hours,
    run_compute,
    split_sizes,
)
from tests.helpers import REPO, TINY, run_bad

QUICKSTART = str(REPO / "search_spaces/quickstart.yaml")


# --- ASHA ---------------------------------------------------------------------------------


def synchronous_halving(n: int, grace: int, eta: int, max_epochs: int, seed: int = 0) -> int:
    """Trial-epochs trained when n trials run side by side, epoch by epoch, and at every rung
    (grace·eta^k below max_epochs) all but the best 1/eta of those still running stop."""
    rng = np.random.default_rng(seed)
    quality = rng.permutation(n)  # a fixed, distinct score per trial
    rungs, r = set(), grace
    while r < max_epochs:
        rungs.add(r)
        r *= eta
    alive, trained = list(range(n)), 0
    for epoch in range(1, max_epochs + 1):
        trained += len(alive)
        if epoch in rungs:
            assert len(alive) % eta == 0, "choose n divisible by eta^rungs"
            alive = sorted(alive, key=lambda t: quality[t])[-(len(alive) // eta):]
    return trained


@pytest.mark.parametrize("n, grace, eta, max_epochs", [
    (16, 2, 2, 12),  # quickstart: rungs 2, 4, 8
    (27, 1, 3, 20),  # rungs 1, 3, 9
    (64, 20, 4, 300),  # rungs 20, 80
    (32, 3, 2, 50),  # rungs 3, 6, 12, 24, 48
    (8, 5, 2, 5),  # grace = max: no rung
    (9, 2, 3, 18),  # a rung at max (18) changes nothing
])
def test_asha_expectation_is_synchronous_halving(n: int, grace: int, eta: int,
                                                 max_epochs: int) -> None:
    assert n * expected_epochs(grace, eta, max_epochs) == pytest.approx(
        synchronous_halving(n, grace, eta, max_epochs))


def test_asha_stops() -> None:
    assert asha_stops(2, 2, 12) == [(2, 0.5), (4, 0.25), (8, 0.125), (12, 0.125)]
    assert expected_epochs(2, 2, 12) == 4.5
    assert asha_stops(20, 3, 10) == [(10, 1.0)]  # grace past the end: no early stopping
    stops = asha_stops(2, 1.5, 10)  # rungs 2, 3, 4.5, 6.75: judged at epochs 2, 3, 5, 7
    assert [e for e, _ in stops] == [2, 3, 5, 7, 10]
    assert sum(p for _, p in stops) == pytest.approx(1.0)


@pytest.mark.parametrize("grace, eta, max_epochs", [(2, 2, 12), (20, 3, 300), (1, 4, 100),
                                                    (3, 2.5, 40)])
def test_asha_rungs_are_rays(grace: int, eta: float, max_epochs: int) -> None:
    """The epochs at which trials may stop are the milestones of Ray's ASHA bracket."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    rays = sorted(math.ceil(m) for m, _ in _Bracket(grace, max_epochs, eta, 0)._rungs
                  if m < max_epochs)
    assert [e for e, _ in asha_stops(grace, eta, max_epochs)][:-1] == rays


# --- totals by hand -----------------------------------------------------------------------

PER = ImageFlops(train=10.0, train_itt=15.0, val=3.0)
TRAIN, VAL = 1168, 100  # digits: 1,797 − 359 test − 270 validation; eval.val_subset 100


class FixedCounter(Counter):
    """Counts every config as PER: the arithmetic alone."""

    def count(self, cfg: ExperimentConfig) -> ImageFlops:
        return PER


def base(**changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(TINY)
    cfg["optim"]["epochs"] = 6
    cfg["itt"]["freeze_epochs"] = 3
    for key, value in changes.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def search(**fields: Any) -> SearchSpec:
    return SearchSpec.model_validate({"name": "s", "base": base(), "num_samples": 4,
                                      "space": {"method.alpha": {"type": "float", "low": 0.1,
                                                                 "high": 1.0}}} | fields)


def test_split_sizes() -> None:
    cfg = ExperimentConfig.model_validate(TINY)
    assert split_sizes(cfg) == (TRAIN, VAL)
    assert split_sizes(cfg.model_copy(update={"eval": cfg.eval.model_copy(
        update={"val_subset": None})})) == (TRAIN, 270)
    cifar = ExperimentConfig.model_validate(
        {**TINY, "data": {"name": "cifar10", "val_size": 5000}, "eval": {"val_subset": 1000}})
    assert split_sizes(cifar) == (45_000, 1000)
    cifar = ExperimentConfig.model_validate({**TINY, "data": {"name": "cifar100",
                                                              "val_size": 0.1}, "eval": {}})
    assert split_sizes(cifar) == (45_000, 5000)


def test_run_compute_by_hand() -> None:
    # 6 epochs, teacher updated from epoch 3: 3 plain epochs, 3 with ITT
    run = run_compute(PER, epochs=6, freeze=3, train_images=TRAIN, val_images=VAL)
    assert run == Compute(train=TRAIN * 3 * 10, train_itt=TRAIN * 3 * 15, val=6 * VAL * 3)
    assert run.total == 89_400
    assert run_compute(PER, epochs=2, freeze=3, train_images=TRAIN, val_images=VAL).total == (
        TRAIN * 2 * 10 + 2 * VAL * 3)
    assert run_compute(PER, epochs=6, freeze=None, train_images=TRAIN,
                       val_images=VAL).total == 71_880


def test_search_total_by_hand() -> None:
    """4 trials, ASHA grace 1, η 2, R 6: half stop at epoch 1, a quarter at 2, an eighth at 4,
    an eighth run to 6. Per trial: 11,980 (1 epoch), 23,960 (2), 53,760 (4, one with ITT),
    89,400 (6, three with ITT)."""
    s = search_flops(search(scheduler={"name": "asha", "grace_period": 1,
                                       "reduction_factor": 2}), FixedCounter())
    assert s.upper.total == 4 * 89_400
    assert s.expected.total == pytest.approx(
        4 * (11_980 / 2 + 23_960 / 4 + 53_760 / 8 + 89_400 / 8))  # 119,500
    no_asha = search_flops(search(scheduler={"name": "none"}), FixedCounter())
    assert no_asha.upper == no_asha.expected
    # A confirm stage adds top_k x seeds full runs: 2 x 2 of 89,400.
    confirmed = search_flops(search(scheduler={"name": "asha", "grace_period": 1,
                                               "reduction_factor": 2},
                                    confirm={"top_k": 2, "seeds": [1, 2]}), FixedCounter())
    assert confirmed.upper.total == 8 * 89_400
    assert confirmed.expected.total == pytest.approx(s.expected.total + 4 * 89_400)


def test_search_with_a_searched_freeze_epoch_by_hand() -> None:
    """Freeze epoch in 2..4, no early stopping: the upper bound updates the teacher from epoch
    2 (95,240 a trial); the expectation averages epochs 2, 3, 4 (95,240, 89,400, 83,560)."""
    spec = search(num_samples=2, scheduler={"name": "none"},
                  space={"itt.freeze_epochs": {"type": "int", "low": 2, "high": 4}})
    s = search_flops(spec, FixedCounter())
    assert s.upper.total == 2 * 95_240
    assert s.expected.total == pytest.approx(2 * (95_240 + 89_400 + 83_560) / 3)
    assert s.freeze_key == "itt.freeze_epochs" and s.freezes == [2, 3, 4]
    lines = search_estimate(spec, timing_options(dry_run=True, probe=False, peak_tflops=None,
                                                 mfu=None), FixedCounter())
    # No --probe or --peak-tflops: time at the stated CPU assumption, 4 GFLOP/s a trial
    cpu = {"expected": 178_800 / 4e9, "upper": 190_480 / 4e9}
    assert lines[0] == ("cost: ≈ 190 kFLOP upper bound (no early stopping), ≈ 179 kFLOP "
                        f"expected; ≈ {format_hours(cpu['expected'], 'CPU ')} "
                        f"({format_hours(cpu['upper'], 'CPU ')} upper bound), one trial at a "
                        "time (assumed: 4 GFLOP/s per trial on CPU, what --probe measured for "
                        "the digits and Fashion-MNIST steps on 2 cores)")
    assert lines[-1].startswith("  time: --probe times real training steps here; --peak-tflops")


def test_grid_total_by_hand() -> None:
    grid = GridSpec.model_validate({
        "name": "g", "base": base(), "baseline": "w/o ITT", "seeds": [0, 1],
        "rows": [{"name": "w/o ITT", "overrides": {"itt.enabled": False}},
                 {"name": "w/ ITT", "overrides": {}}]})
    rows = grid_flops(grid, FixedCounter())
    assert [r.compute.total for r in rows] == [2 * 71_880, 2 * 89_400]
    timing = timing_options(dry_run=True, probe=False, peak_tflops=1e-9, mfu=0.5)
    lines = grid_estimate(grid, timing, FixedCounter())
    # 322,560 FLOP at 1e-9 TFLOP/s × 50% = 500 FLOP/s: 645 s
    assert lines[0] == ("cost: ≈ 323 kFLOP for 4 cells (2 rows × 2 seeds), each trained to "
                        "the end (no early stopping in a grid); ≈ 10.8 GPU-min at 1e-09 TFLOP/s "
                        "× 50% MFU (the config trains in fp32: compute.amp=none)")


def test_real_counts_of_a_tiny_config_equal_full_execution() -> None:
    """The shapes-only count (constant values, counted operations not computed) equals the
    count of a fully computed step and validation pass."""
    cfg = ExperimentConfig.model_validate(base(method={"lam": "auto"}))
    fast, full = Counter().count(cfg), Counter(shapes_only=False).count(cfg)
    assert fast == full and fast.itt_differs
    assert fast.train > 0 and fast.val > 0


# --- units and flags ------------------------------------------------------------------------


def test_units() -> None:
    assert format_flops(1.1e18) == "1.1 EFLOP"
    assert format_flops(4e17, ("EFLOP", 1e18)) == "0.40 EFLOP"
    assert format_flops(42.7e9) == "42.7 GFLOP"
    assert format_flops(999e12) == "999 TFLOP"
    assert format_flops(3.2e15) == "3.2 PFLOP"
    assert format_hours(2 * 3600) == "2.0 h" and format_hours(90, "GPU-") == "1.5 GPU-min"
    assert format_hours(5.8e-6 * 3600, "GPU-") == "0.021 GPU-s"
    assert mfu_arg("35%") == mfu_arg("0.35") == 0.35


def test_timing_flags_need_the_dry_run() -> None:
    with pytest.raises(ConfigError, match="--probe only applies to --dry-run"):
        timing_options(dry_run=False, probe=True, peak_tflops=None, mfu=None)
    with pytest.raises(ConfigError, match="--mfu needs --peak-tflops"):
        timing_options(dry_run=True, probe=False, peak_tflops=None, mfu=0.5)
    assert timing_options(dry_run=True, probe=False, peak_tflops=989, mfu=None).mfu == MFU_DEFAULT


# --- the CLI --------------------------------------------------------------------------------


def test_quickstart_dry_run_prints_the_estimate(workdir: Path, capsys) -> None:
    assert main(["search", QUICKSTART, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 120  # folded to fit a terminal
    out = " ".join(out.split())  # unfolded
    assert "upper bound (no early stopping), ≈ " in out
    assert "expected with ASHA (grace 2, η 2); ≈ " in out  # then the time, on CPU here
    assert "upper bound), one trial at a time (assumed: 4 GFLOP/s per trial on CPU" in out
    assert "4.5 of 12 epochs per trial expected" in out
    assert "1,168 training and 270 validation images per epoch" in out
    assert "time: --probe times real training steps here" in out


def test_grid_dry_run_prints_gpu_hours(workdir: Path, capsys) -> None:
    assert main(["grid", "ablation_table7_digits", "--dry-run", "--peak-tflops", "989",
                 "--mfu", "35%"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # unfolded
    assert "for 12 cells (4 rows × 3 seeds)" in out
    assert "GPU-s at 989 TFLOP/s × 35% MFU" in out


def test_probe_times_this_machine(workdir: Path, capsys) -> None:
    assert main(["search", QUICKSTART, "--dry-run", "--probe", "base.optim.batch_size=16"]) == 0
    out = capsys.readouterr().out
    assert "on this machine at the probed speed" in out and "batch 16: " in out
    assert "img/s teacher frozen" in out and "img/s ITT" in out


@pytest.mark.parametrize("args, needle", [
    (["--probe"], "--probe only applies to --dry-run"),
    (["--peak-tflops", "989"], "--peak-tflops only applies to --dry-run"),
    (["--dry-run", "--mfu", "0.3"], "--mfu needs --peak-tflops"),
    (["--dry-run", "--peak-tflops", "989", "--mfu", "2"], "not a fraction"),
    (["--dry-run", "--peak-tflops", "-1"], "--peak-tflops"),
])
def test_timing_flags_refused(workdir: Path, capsys, args: list[str], needle: str) -> None:
    assert needle in run_bad(workdir, capsys, ["search", QUICKSTART, *args])


def test_a_failed_probe_keeps_the_flops(workdir: Path, capsys) -> None:
    assert main(["search", QUICKSTART, "--dry-run", "--probe", "base.device=cuda"]) == 0
    out = capsys.readouterr().out
    if "cuda, but no CUDA device" not in out:
        pytest.skip("a GPU is here: the probe does not fail")
    assert "cost: ≈ " in out and "  probe failed: ConfigError: field `device`: cuda" in out
