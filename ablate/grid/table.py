"""Ablation-grid statistics over seeds (mean, 95% interval, paired t-test against the baseline)
and the results table (Markdown, CSV, Parquet), with the push-set notes a search's table shares."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ablate import names
from ablate.report import NAN, paired_test, push_cell, seed_stats


def aggregate(cells: Sequence[Mapping[str, Any]], *, rows: Sequence[str], baseline: str,
              seeds: Sequence[int], metrics: Sequence[str],
              paper: Mapping[str, Mapping[str, float]] | None = None) -> list[dict[str, Any]]:
    """One dict per row (in `rows` order): seeds_finished, seeds_asked, push_active and
    push_empty (means over the finished seeds that logged them, fractions; None without a push
    term) and, per metric m (a fraction in the cells, a percentage here), m_values (per seed),
    m_mean/_std/_ci_low/_ci_high, m_diff/_diff_ci_low/_diff_ci_high/_p (paired against the
    baseline over the seeds both finished: the mean difference, its 95% t-interval and the
    two-sided p) and m_paper (paper[row][m] or None)."""
    finished: dict[str, dict[int, Mapping[str, Any]]] = {r: {} for r in rows}
    for c in cells:
        if c.get("status") == "finished" and c["row"] in finished and c["seed"] in seeds:
            finished[c["row"]][c["seed"]] = c

    def percent(row: str, m: str) -> dict[int, float]:
        # a finished run may still lack a metric (or have NaN, e.g. a diverged run): not a value
        vals = {s: c.get(m) for s, c in finished[row].items()}
        return {s: 100 * v for s, v in vals.items() if v is not None and not math.isnan(v)}

    table = []
    for r in rows:
        out: dict[str, Any] = {"row": r, "seeds_finished": len(finished[r]),
                               "seeds_asked": len(seeds)}
        for key in names.PUSH_KEYS:
            logged = [c[key] for c in finished[r].values() if c.get(key) is not None]
            out[key] = math.fsum(logged) / len(logged) if logged else None
        for m in metrics:
            vals, base = percent(r, m), percent(baseline, m)
            s = seed_stats(list(vals.values()))
            common = [k for k in seeds if k in vals and k in base]
            test = paired_test([vals[k] for k in common], [base[k] for k in common])
            out.update({f"{m}_values": [vals[k] for k in sorted(vals)],
                        f"{m}_mean": s["mean"], f"{m}_std": s["std"], f"{m}_ci_low": s["ci_low"],
                        f"{m}_ci_high": s["ci_high"],
                        f"{m}_diff": 0.0 if r == baseline else test["diff"],
                        f"{m}_diff_ci_low": NAN if r == baseline else test["diff_ci_low"],
                        f"{m}_diff_ci_high": NAN if r == baseline else test["diff_ci_high"],
                        f"{m}_p": NAN if r == baseline else test["p"],
                        f"{m}_paper": (paper or {}).get(r, {}).get(m)})
        table.append(out)
    return table


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None or math.isnan(x) else format(x, fmt)


def table_markdown(table: Sequence[Mapping[str, Any]], *, metrics: Sequence[str], baseline: str,
                   labels: Mapping[str, str] | None = None) -> str:
    """Markdown table: per row and metric the mean ± std, 95% CI, Δ vs baseline [95% CI] (p)
    and the paper's value; then a footnote on the statistics. Up to three metrics sit side by side
    (one line per row); more go one block per metric (the paper's attack-major Tables 3-6)."""
    label = {m: (labels or {}).get(m, m) for m in metrics}
    stats = ["(mean ± std)", "95% CI", "Δ vs baseline [95% CI] (p)", "paper"]
    push = any(t.get("push_empty") is not None for t in table)
    if len(metrics) <= 3:
        header = ["row", "seeds", *(["push"] if push else []),
                  *(f"{label[m]} {s}" if s.startswith("(") else s
                    for m in metrics for s in stats)]
        body = [[_row_name(t), _seeds(t), *([push_cell(t)] if push else []),
                 *(c for m in metrics for c in _cells(t, m, baseline))] for t in table]
    else:
        header = ["metric", "row", "seeds", *(["push"] if push else []), "mean ± std",
                  *stats[1:]]
        body = [[label[m], _row_name(t), _seeds(t), *([push_cell(t)] if push else []),
                 *_cells(t, m, baseline)] for m in metrics for t in table]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    note = ("Mean ± sample std over seeds (percent); 95% CI: t-interval of the mean; Δ: paired "
            f"difference to the baseline row ({baseline}) over the seeds both finished, with the "
            "t-interval of the mean difference and p from a two-sided paired t-test over seeds; "
            "– = not available.")
    if push:
        note += (" push: mean share of each batch in the push set J (clean teacher wrong on "
                 "x*) over training, and the share of batches with J = ∅, in which the push "
                 "term is exactly 0 (– = no push term).")
    return "\n".join([*lines, "", note]) + "\n"


TERMINAL_COLUMNS = 120  # the console table's widest line, with row names up to 30 characters


def table_console(table: Sequence[Mapping[str, Any]], *, metrics: Sequence[str], baseline: str,
                  labels: Mapping[str, str] | None = None) -> str:
    """The table for a terminal: one block per metric, each row's mean ± std over its seeds,
    Δ vs the baseline row with its 95% interval and p, and the paper's value; the 95% CIs of
    the means and the push diagnostics are in the full table (:func:`table_markdown`)."""
    label = {m: (labels or {}).get(m, m) for m in metrics}
    width = min(30, max([len(str(t["row"])) for t in table] + [3]))
    lines = []
    for m in metrics:
        lines += ["", f"{label[m]} (%)", f"  {'row':<{width}}  {'seeds':>5}  {'mean ± std':>13}  "
                  f"{'Δ vs ' + baseline[:20]:<30}  {'p':>7}  {'paper':>6}"]
        for t in table:
            mean, std, p = t[f"{m}_mean"], t[f"{m}_std"], t[f"{m}_p"]
            d, lo, hi = t[f"{m}_diff"], t[f"{m}_diff_ci_low"], t[f"{m}_diff_ci_high"]
            delta = ("baseline" if t["row"] == baseline else "–" if math.isnan(d) else
                     f"{_num(d, '+.2f')}" + ("" if math.isnan(lo) else
                                            f" [{_num(lo, '+.2f')}, {_num(hi, '+.2f')}]"))
            p_text = "" if t["row"] == baseline or math.isnan(p) else (
                "<0.001" if p < 0.001 else f"{p:.3f}")
            ms = "–" if math.isnan(mean) else f"{_num(mean)} ± {_num(std)}"
            name = str(t["row"])
            name = name if len(name) <= width else name[:width - 1] + "…"
            lines.append(f"  {name:<{width}}  {_seeds_short(t):>5}  {ms:>13}  {delta:<30}  "
                         f"{p_text:>7}  {_num(t[f'{m}_paper']):>6}")
    return "\n".join(lines[1:]) + "\n"


def _seeds_short(t: Mapping[str, Any]) -> str:
    done, asked = t["seeds_finished"], t["seeds_asked"]
    return str(done) if done >= asked else f"{done}/{asked}"


def _row_name(t: Mapping[str, Any]) -> str:
    return str(t["row"]).replace("|", "\\|")


def _seeds(t: Mapping[str, Any]) -> str:
    done, asked = t["seeds_finished"], t["seeds_asked"]
    return str(done) if done >= asked else f"{done}/{asked} ({asked - done} missing)"


def _cells(t: Mapping[str, Any], m: str, baseline: str) -> list[str]:
    """mean ± std, 95% CI, Δ vs baseline [95% CI] (p), paper: one metric of one table row."""
    mean, std, lo, hi = (t[f"{m}_{k}"] for k in ("mean", "std", "ci_low", "ci_high"))
    p, d_lo, d_hi = t[f"{m}_p"], t[f"{m}_diff_ci_low"], t[f"{m}_diff_ci_high"]
    p_text = "p<0.001" if p < 0.001 else f"p={_num(p, '.3f')}"
    d_ci = "" if math.isnan(d_lo) else f" [{_num(d_lo, '+.2f')}, {_num(d_hi, '+.2f')}]"
    return [
        "–" if math.isnan(mean) else f"{_num(mean)} ± {_num(std)}",
        "–" if math.isnan(lo) else f"[{_num(lo)}, {_num(hi)}]",
        "baseline" if t["row"] == baseline else
        "–" if math.isnan(t[f"{m}_diff"]) else
        f"{_num(t[f'{m}_diff'], '+.2f')}{d_ci} ({p_text})",
        _num(t[f"{m}_paper"]),
    ]


