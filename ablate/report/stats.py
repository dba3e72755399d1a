"""Statistics over seeds (mean, 95% t-interval, paired t-test) and the Pareto front: what the
grid table, the confirm stage and a search's summary compute from finished runs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import t as student_t

NAN = float("nan")


def seed_stats(values: Sequence[float]) -> dict[str, float]:
    """n, mean, std (sample, ddof=1), and the 95% t-interval ci_low/ci_high of the mean.
    n == 0 -> mean/std/ci NaN; n == 1 -> std and ci NaN."""
    n = len(values)
    mean = math.fsum(values) / n if n else NAN
    if n < 2:
        return {"n": n, "mean": mean, "std": NAN, "ci_low": NAN, "ci_high": NAN}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def paired_test(row: Sequence[float], baseline: Sequence[float]) -> dict[str, float]:
    """Paired t-test over seeds (same seed = same data order and init): n, diff (mean of
    row - baseline), diff_ci_low/diff_ci_high (95% t-interval of the mean difference), t, p
    (two-sided). Fewer than 2 pairs -> t, p, ci NaN (diff still the mean if n == 1). Zero variance
    of the differences: all diffs 0 -> t = 0, p = 1; else t = +-inf, p = 0."""
    s = seed_stats([r - b for r, b in zip(row, baseline, strict=True)])
    out = {"n": s["n"], "diff": s["mean"], "diff_ci_low": s["ci_low"],
           "diff_ci_high": s["ci_high"], "t": NAN, "p": NAN}
    if s["n"] < 2:
        return out
    if s["std"] == 0:  # the t statistic is 0/0 or x/0: take its limit instead of NaN
        t_inf = math.copysign(math.inf, s["mean"])
        out["t"], out["p"] = (0.0, 1.0) if s["mean"] == 0 else (t_inf, 0.0)
        return out
    t = s["mean"] / (s["std"] / math.sqrt(s["n"]))
    out["t"], out["p"] = t, float(2 * student_t.sf(abs(t), s["n"] - 1))
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (both coordinates maximised)."""
    def dominated(i: int) -> bool:
        a = points[i]
        return any(b[0] >= a[0] and b[1] >= a[1] and b != a for b in points)

    return [i for i in range(len(points)) if not dominated(i)]


