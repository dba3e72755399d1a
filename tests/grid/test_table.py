"""Grid statistics and tables, each checked against an independent computation (statistics,
textbook t quantiles, scipy.stats.ttest_rel / ttest_1samp)."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats
from scipy.stats import ttest_1samp, ttest_rel

from ablate.grid.table import aggregate, table_markdown
from ablate.report import paired_test, seed_stats, write_table

T_975_2 = 4.302653  # textbook two-sided 95% critical values of Student's t, 2 and 3 dof
T_975_3 = 3.182446


def test_seed_stats_matches_statistics_and_textbook_t() -> None:
    values = [1.0, 2.0, 4.0]
    s = seed_stats(values)
    mean, std = statistics.mean(values), statistics.stdev(values)
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(mean, rel=1e-12)
    assert s["std"] == pytest.approx(std, rel=1e-12)
    half = T_975_2 * std / math.sqrt(3)
    assert s["ci_low"] == pytest.approx(mean - half, abs=1e-5)
    assert s["ci_high"] == pytest.approx(mean + half, abs=1e-5)


def test_seed_stats_one_and_no_values() -> None:
    one = seed_stats([0.7])
    assert one["n"] == 1 and one["mean"] == 0.7
    assert all(math.isnan(one[k]) for k in ("std", "ci_low", "ci_high"))
    none = seed_stats([])
    assert none["n"] == 0
    assert all(math.isnan(none[k]) for k in ("mean", "std", "ci_low", "ci_high"))


def test_paired_test_matches_ttest_rel_and_manual_ci() -> None:
    row, base = [52.0, 55.5, 50.25, 58.0], [50.0, 51.0, 50.5, 53.0]
    res = paired_test(row, base)
    ref = ttest_rel(row, base)
    assert res["n"] == 4
    assert res["t"] == pytest.approx(ref.statistic, rel=1e-10)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-8)
    diffs = [r - b for r, b in zip(row, base, strict=True)]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    assert res["diff"] == pytest.approx(mean, rel=1e-12)
    assert res["diff_ci_low"] == pytest.approx(mean - T_975_3 * sd / 2, abs=1e-5)
    assert res["diff_ci_high"] == pytest.approx(mean + T_975_3 * sd / 2, abs=1e-5)
    # a paired test is a one-sample test on the differences; the sign flips with the order
    assert res["p"] == pytest.approx(ttest_1samp(diffs, 0.0).pvalue, rel=1e-8)
    assert paired_test(base, row)["t"] == pytest.approx(-ref.statistic, rel=1e-10)


def test_paired_test_edge_cases() -> None:
    one = paired_test([3.0], [1.0])
    assert one["n"] == 1 and one["diff"] == 2.0
    assert all(math.isnan(one[k]) for k in ("t", "p", "diff_ci_low", "diff_ci_high"))
    assert math.isnan(paired_test([], [])["diff"])
    up = paired_test([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])  # every seed exactly +2
    assert up["t"] == math.inf and up["p"] == 0.0 and up["diff"] == 2.0
    down = paired_test([1.0, 2.0], [3.0, 4.0])
    assert down["t"] == -math.inf and down["p"] == 0.0
    same = paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same["t"] == 0.0 and same["p"] == 1.0 and same["diff"] == 0.0


# 3 rows x 3 seeds: B's seed 1 failed, C's seed 2 never ran, and the baseline's seed 1 finished
# without "robust" (so C pairs with it on seed 0 only for that metric)
VALUES = {
    ("A", 0): (0.90, 0.40), ("A", 1): (0.92, None), ("A", 2): (0.91, 0.41),
    ("B", 0): (0.85, 0.45), ("B", 2): (0.88, 0.47),
    ("C", 0): (0.93, 0.38), ("C", 1): (0.96, 0.39),
}
ROWS, SEEDS, METRICS = ["A", "B", "C"], [0, 1, 2], ["clean", "robust"]
PAPER = {"A": {"clean": 91.5, "robust": 40.25}}


def grid_cells() -> list[dict]:
    cells = [{"row": r, "seed": s, "status": "finished", "clean": c, "robust": rob}
             for (r, s), (c, rob) in VALUES.items()]
    cells.append({"row": "B", "seed": 1, "status": "failed", "clean": 0.10, "robust": 0.05})
    return cells


def grid_table() -> list[dict]:
    return aggregate(grid_cells(), rows=ROWS, baseline="A", seeds=SEEDS, metrics=METRICS,
                     paper=PAPER)


def pct(row: str, seeds: list[int], metric: int) -> list[float]:
    return [100 * VALUES[(row, s)][metric] for s in seeds]


def test_aggregate_counts_means_and_pairs_on_common_seeds() -> None:
    table = grid_table()
    assert [t["row"] for t in table] == ROWS
    a, b, c = table
    assert [t["seeds_finished"] for t in table] == [3, 2, 2]
    assert all(t["seeds_asked"] == 3 for t in table)
    assert a["clean_mean"] == pytest.approx(91.0)
    assert b["clean_mean"] == pytest.approx(86.5)  # the failed seed's 0.10 is not counted
    assert b["clean_std"] == pytest.approx(statistics.stdev([85.0, 88.0]))
    assert c["robust_mean"] == pytest.approx(38.5)
    assert a["robust_mean"] == pytest.approx(40.5)  # the missing metric is not a 0
    # the baseline against itself
    assert a["clean_diff"] == 0.0 and math.isnan(a["clean_p"])
    assert a["clean_paper"] == 91.5 and a["robust_paper"] == 40.25
    assert b["clean_paper"] is None
    # B pairs with A on seeds 0 and 2 only, C on seeds 0 and 1 (clean) and 0 (robust)
    for row, got, common in (("B", b, [0, 2]), ("C", c, [0, 1])):
        ref = ttest_rel(pct(row, common, 0), pct("A", common, 0))
        assert got["clean_p"] == pytest.approx(ref.pvalue, rel=1e-8)
        diff = statistics.mean(pct(row, common, 0)) - statistics.mean(pct("A", common, 0))
        assert got["clean_diff"] == pytest.approx(diff, rel=1e-9)
        d = np.subtract(pct(row, common, 0), pct("A", common, 0))
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        assert (got["clean_diff_ci_low"], got["clean_diff_ci_high"]) == pytest.approx(
            (d.mean() - half, d.mean() + half), rel=1e-9)
    ref = ttest_rel(pct("B", [0, 2], 1), pct("A", [0, 2], 1))
    assert b["robust_p"] == pytest.approx(ref.pvalue, rel=1e-8)
    assert c["robust_diff"] == pytest.approx(38.0 - 40.0) and math.isnan(c["robust_p"])


def test_table_markdown_layout() -> None:
    table = grid_table()
    md = table_markdown(table, metrics=METRICS, baseline="A", labels={"clean": "Clean acc."})
    lines = md.splitlines()
    n = 2 + len(table)
    assert all(line.startswith("|") for line in lines[:n])
    assert lines[n] == "" and len(lines) == n + 2 and "paired t-test" in lines[n + 1]
    assert "Clean acc. (mean ± std)" in lines[0] and "robust (mean ± std)" in lines[0]
    row_a, row_b, row_c = lines[2:n]
    assert "baseline" in row_a and "91.50" in row_a and "40.25" in row_a
    assert "| 3 |" in row_a and "2/3 (1 missing)" in row_b and "2/3 (1 missing)" in row_c
    assert "91.00 ± 1.00" in row_a and "[88.52, 93.48]" in row_a  # 91 -+ 4.302653 / sqrt(3)
    assert "86.50 ± 2.12" in row_b and "-4.00 [" in row_b and "] (p=" in row_b
    assert "-2.00 (p=–)" in row_c  # a single common seed: a difference but no test


def test_write_table_round_trips(tmp_path: Path) -> None:
    table = grid_table()
    md = table_markdown(table, metrics=METRICS, baseline="A")
    paths = write_table(table, md, tmp_path / "out", stem="grid")
    assert [p.name for p in paths] == ["grid.md", "grid.csv", "grid.parquet"]
    assert all(p.is_file() for p in paths)
    assert paths[0].read_text() == md
    parquet = pq.read_table(paths[2])
    assert parquet.num_rows == len(table)
    assert parquet.column("row").to_pylist() == ROWS
    assert parquet.column("clean_mean").to_pylist() == pytest.approx([91.0, 86.5, 94.5])
    with paths[1].open(newline="") as f:
        rows = list(csv.reader(f))
    assert len(paths[1].read_text().splitlines()) == len(table) + 1
    assert rows[0] == list(table[0])
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["clean_p"] == "" and first["clean_paper"] == "91.5"  # NaN empty, values kept
    assert dict(zip(rows[0], rows[2], strict=True))["clean_paper"] == ""  # None empty


def test_aggregate_skips_nan_metrics() -> None:
    cells = [{"row": "A", "seed": s, "status": "finished", "acc": v}
             for s, v in ((0, 0.5), (1, float("nan")), (2, 0.7))]
    (a,) = aggregate(cells, rows=["A"], baseline="A", seeds=[0, 1, 2], metrics=["acc"])
    assert a["seeds_finished"] == 3 and a["acc_mean"] == pytest.approx(60.0)


def test_table_markdown_goes_metric_major_beyond_three_metrics() -> None:
    cells = [dict(c, w=c["clean"], x=c["clean"]) for c in grid_cells()]
    metrics = [*METRICS, "w", "x"]
    table = aggregate(cells, rows=ROWS, baseline="A", seeds=SEEDS, metrics=metrics, paper=PAPER)
    lines = table_markdown(table, metrics=metrics, baseline="A",
                           labels={"clean": "Clean acc."}).splitlines()
    assert lines[0] == ("| metric | row | seeds | mean ± std | 95% CI | "
                        "Δ vs baseline [95% CI] (p) | paper |")
    body = lines[2:2 + len(metrics) * len(ROWS)]
    assert [ln.split(" | ")[0:2] for ln in body[:3]] == [["| Clean acc.", r] for r in ROWS]
    assert "91.00 ± 1.00" in body[0] and "baseline" in body[0] and "91.50" in body[0]
    assert "| robust | B | 2/3 (1 missing) |" in body[4]
    assert lines[2 + len(body)] == "" and "paired t-test" in lines[-1]
