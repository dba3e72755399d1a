"""A search's confirm stage (``confirm:`` in the spec, or ``--confirm``): the top-k
configurations by the search's validation objective are re-trained on several seeds, as a grid
nested in the search's parent run; the winner is the one with the highest lower bound of the
95% interval of its validation objective (not the one lucky run), and only the winner is tested,
on every seed. One seed's search can rank a config first by noise: on digits, three seeds of one
config spread by 1-2 points of W-acc, more than the top trials of a search differ by.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from ray import tune

from ablate import names
from ablate.config import (
    GridSpec,
    Row,
    SearchSpec,
    concurrency,
    config_hash,
    dump_yaml,
    effective_config,
)
from ablate.core.console import Log
from ablate.core.errors import BAD_INPUT
from ablate.grid import GridJob
from ablate.report import NAN, paired_test, seed_stats, test_line
from ablate.runtime import Options, run_job, storage_path
from ablate.search.summary import check_checkpoint, launch_test  # the trainable's, via summary
from ablate.search.trials import describe, param_columns, sampled_values
from ablate.tracking import Tracker

ALPHA = 0.05  # the paired test's level for "distinguishable from the runner-up"


def select(values: Mapping[str, Mapping[int, float]], order: Sequence[str]) -> list[dict[str, Any]]:
    """The candidates ranked by the confirm rule. ``values``: candidate -> seed -> validation
    objective; ``order``: the candidates in search rank. Each gets :func:`seed_stats` of its
    values and ``lcb``, the lower bound of the 95% t-interval of its mean (-inf with fewer than
    2 seeds: without an interval a candidate cannot be confirmed). Ranked by lcb, then mean,
    then search rank; the first is the winner. Each other candidate carries ``diff``, the
    winner's mean minus its own over the seeds both have (negative when the winner won on a
    tighter interval, not a higher mean), and ``p``, the paired t-test over those seeds."""
    ranked = []
    for rank, name in enumerate(order, start=1):
        vals = dict(values.get(name, {}))
        s = seed_stats([vals[k] for k in sorted(vals)])
        ranked.append({"candidate": name, "search_rank": rank, "values": vals, **s,
                       "lcb": s["ci_low"] if s["n"] >= 2 else -math.inf})
    ranked.sort(key=lambda r: (-r["lcb"], -(r["mean"] if r["n"] else -math.inf),
                               r["search_rank"]))
    win = ranked[0]["values"]
    for r in ranked:
        common = sorted(set(r["values"]) & set(win))
        test = paired_test([win[k] for k in common], [r["values"][k] for k in common])
        r["diff"], r["p"] = (0.0, NAN) if r is ranked[0] else (test["diff"], test["p"])
    return ranked


BASE_ROW = "base"  # the extra row of ``confirm.with_base`` when no candidate is the base config


def confirm_grid(spec: SearchSpec, ranked: Sequence[dict[str, Any]]
                 ) -> tuple[GridSpec, dict[str, dict[str, Any]], str | None]:
    """The grid of the stage: one row per distinct configuration among the best trials
    (``ranked``: trials table rows, best first), up to ``top_k``, on the confirm seeds; each
    row's search trial; and with ``confirm.with_base`` the row of the base config: a
    candidate's when one is the base config, else an extra row :data:`BASE_ROW`, which is
    trained and tested but cannot win."""
    assert spec.confirm is not None
    columns, rows, seen = param_columns(spec.space), [], {}
    candidates: dict[str, dict[str, Any]] = {}
    for trial in ranked:
        sampled = sampled_values(trial, columns)
        key = config_hash(effective_config(spec.trial_config(sampled)))
        if key in seen:  # the same config sampled twice: one row
            continue
        overrides = {p: v for k, v in sampled.items() for p in spec.targets(k)}
        rows.append(Row(name=f"#{len(rows) + 1} trial {trial['trial']}", overrides=overrides))
        seen[key] = rows[-1].name
        candidates[rows[-1].name] = trial
        if len(rows) == spec.confirm.top_k:
            break
    base_row = None
    if spec.confirm.with_base:
        base_row = seen.get(config_hash(effective_config(spec.base)), BASE_ROW)
        if base_row == BASE_ROW:
            rows.append(Row(name=BASE_ROW, overrides={}))
    grid = GridSpec(name=spec.name, base=spec.base, rows=rows, baseline=rows[0].name,
                    seeds=spec.confirm.seeds, resources=spec.resources,
                    max_concurrent=spec.max_concurrent, max_failures=spec.max_failures)
    return grid, candidates, base_row


@dataclass
class ConfirmJob(GridJob):
    """The stage as :func:`~ablate.runtime.run_job` runs it: a grid of candidates x seeds whose
    parent run is nested in the search's, validated only; summarised by :func:`select`."""

    search: SearchSpec | None = None
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)  # row -> trial row
    base_row: str | None = None  # the base config's row (confirm.with_base)
    kind: ClassVar[str] = names.KIND_CONFIRM
    test_at_end: ClassVar[bool] = False  # only the winner is tested, after the selection

    def plan(self, available: dict[str, float]) -> str:
        g = self.grid
        runs = len(g.rows) * len(g.seeds)
        extra = any(r.name == BASE_ROW for r in g.rows)
        base = ("" if self.base_row is None else " + the base config" if extra else
                f" (the base config is {self.base_row})")
        return (f"confirm stage of search {g.name}: {len(g.rows) - extra} candidates{base} x "
                f"{len(g.seeds)} seeds = {runs} runs of {g.base.optim.epochs} epochs, "
                f"validated only; {concurrency(g, available, trials=runs)} at a time")

    def summarize(self, results: tune.ResultGrid, tracker: Tracker, parent: str,
                  params: dict[str, Any]) -> None:
        summarize_confirm(self, results, tracker, parent, params)


def run_confirm(spec: SearchSpec, search_parent: str, ranked: list[dict[str, Any]],
                opts: Options, log: Log = print) -> int:
    """Run (or resume) the confirm stage of the search summarised in ``search_parent``; the
    search's parent run stays open until the stage ends. Returns the exit code."""
    if not ranked:
        log("confirm: no trial ended with a value, nothing to confirm")
        return 0
    grid, candidates, base_row = confirm_grid(spec, ranked)
    job = ConfirmJob(grid, log, nested_in=search_parent, search=spec, candidates=candidates,
                     base_row=base_row)
    tracker = Tracker(opts.tracking_uri)
    before = tracker.reopen(search_parent)
    tags = tracker.run_info(search_parent)["tags"]
    tracker.set_tags(search_parent, {names.CONFIRM: names.CONFIRM_RUNNING})
    path = f"{storage_path(opts.storage).rstrip('/')}/{grid.name}-{grid.digest()}"
    resume = opts.resume and tune.Tuner.can_restore(path)  # a stage that never started: new
    try:
        code = run_job(job, replace(opts, resume=resume, fresh=opts.fresh and not resume), log)
    except BAD_INPUT:  # a missing or damaged checkpoint: the search stays as it was
        if names.CONFIRM in tags:
            tracker.set_tags(search_parent, {names.CONFIRM: tags[names.CONFIRM]})
        tracker.end(search_parent, before)
        raise
    state = {0: names.CONFIRM_DONE, 130: names.CONFIRM_INTERRUPTED}.get(code,
                                                                       names.CONFIRM_FAILED)
    tracker.set_tags(search_parent, {names.CONFIRM: state})
    tracker.end(search_parent, {0: "FINISHED", 130: "KILLED"}.get(code, "FAILED"))
    return code


def _values(results: tune.ResultGrid) -> tuple[dict[str, dict[int, float]],
                                                 dict[tuple[str, int], tune.Checkpoint]]:
    values: dict[str, dict[int, float]] = {}
    checkpoints = {}
    for r in results:
        m, cfg = r.metrics or {}, r.config or {}
        v = m.get(names.OBJECTIVE)
        if r.error or v is None or math.isnan(v) or r.checkpoint is None:
            continue
        row, seed = cfg[names.ROW], int(cfg[names.SEED])
        values.setdefault(row, {})[seed] = float(v)
        checkpoints[(row, seed)] = r.checkpoint
    return values, checkpoints


def summarize_confirm(job: ConfirmJob, results: tune.ResultGrid, tracker: Tracker, stage: str,
                      params: dict[str, Any]) -> None:
    """Select the winner, test it on every seed it trained, log the table and the winner into
    the stage run and the search's parent run."""
    spec, grid, log = job.search, job.grid, job.log
    assert spec is not None
    values, checkpoints = _values(results)
    ranked = select(values, [r.name for r in grid.rows if r.name != BASE_ROW])
    win = ranked[0]
    if win["n"] == 0:
        log("confirm: no run of the stage ended with a value: no winner")
        return
    tested = [win["candidate"]] + ([job.base_row] if job.base_row not in (None, win[
        "candidate"]) else [])
    for row in tested:  # every checkpoint to test is intact before anything is logged
        for s in sorted(values.get(row, {})):
            check_checkpoint(checkpoints[(row, s)], f"confirm run {row!r} seed {s}")
    pending = {(row, s): launch_test({names.ROW: row, names.SEED: s}, checkpoints[(row, s)],
                                     params, spec.resources)
               for row in tested for s in sorted(values.get(row, {}))}
    base = base_comparison(values, job.base_row, win) if job.base_row else None
    markdown = confirm_markdown(ranked, job.candidates, len(grid.seeds), base)
    log(markdown)
    done = {key: run()[0] for key, run in pending.items()}
    tests = {s: t for (row, s), t in done.items() if row == win["candidate"]}
    mean = _mean_tests(tests)
    sampled = sampled_values(job.candidates[win["candidate"]], param_columns(spec.space))
    _log_outcome(job, ranked, tests, mean, sampled, markdown, tracker, stage)
    runner_up = ranked[1] if len(ranked) > 1 else None
    raw = job.candidates[grid.rows[0].name]
    log(f"confirmed winner: {win['candidate']} (val W {100 * win['mean']:.1f}% mean, lower "
        f"bound {100 * win['lcb']:.1f}%); the search's best single run was "
        f"{grid.rows[0].name}" + (" too" if win["candidate"] == grid.rows[0].name else
                                  f" (val W {100 * raw[names.OBJECTIVE]:.1f}%)"))
    if runner_up is not None:
        log(f"winner − runner-up {runner_up['candidate']}: "
            f"{_distinguishable(runner_up, len(grid.seeds))}")
    log(f"winner: {describe(sampled)}")
    log(f"test of the winner, mean over seeds {sorted(tests)}: {test_line(mean)}   best "
        f"config: {names.BEST_CONFIG} in the search's parent run")
    if base is not None:
        base_tests = {s: t for (row, s), t in done.items() if row == job.base_row}
        base.update(compare_tests(tests, base_tests or tests))
        log(base_line(base, job.base_row or "", win["candidate"]))
        _log_base(job, base, base_tests, tracker, stage)


def base_comparison(values: Mapping[str, Mapping[int, float]], base_row: str,
                    win: dict[str, Any]) -> dict[str, Any]:
    """The base config's validation objective over seeds (:func:`seed_stats`, as a row of the
    table) and the winner minus it: ``diff``, its 95% interval, ``p`` (paired over the seeds
    both have)."""
    vals = dict(values.get(base_row, {}))
    common = sorted(set(vals) & set(win["values"]))
    test = paired_test([win["values"][k] for k in common], [vals[k] for k in common])
    return {"candidate": base_row, "values": vals, **seed_stats([vals[k] for k in sorted(vals)]),
            "diff": test["diff"], "diff_ci_low": test["diff_ci_low"],
            "diff_ci_high": test["diff_ci_high"], "p": test["p"], "seeds": common}


def compare_tests(win: Mapping[int, Mapping[str, float]],
                    base: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """Winner minus base on the test split, per metric of the PGD_SAT line, paired by seed."""
    common = sorted(set(win) & set(base))
    return {f"test_{key}": paired_test([win[s][key] for s in common],
                                       [base[s][key] for s in common])
            for key in ("clean_acc", "pgd_sat_acc", "pgd_sat_wr")}


def base_line(base: dict[str, Any], row: str, winner: str) -> str:
    """The console line of winner − base: validation objective and test, with intervals."""
    def diff(d: Mapping[str, float]) -> str:
        ci = ("" if math.isnan(d["diff_ci_low"]) else
              f" [{100 * d['diff_ci_low']:+.2f}, {100 * d['diff_ci_high']:+.2f}]")
        p = "" if math.isnan(d["p"]) else f" p={d['p']:.3f}"
        return f"{100 * d['diff']:+.2f}{ci}{p}"

    if row == winner:
        return (f"the winner is the base config ({row}): on seeds {base['seeds']} no searched "
                "configuration was confirmed better than the spec's default")
    where = "the base config" + ("" if row == BASE_ROW else f" (= {row})")
    return (f"winner − {where}, seeds {base['seeds']}: val W {diff(base)}; test clean "
            f"{diff(base['test_clean_acc'])}, PGD_SAT {diff(base['test_pgd_sat_acc'])}, W-R "
            f"{diff(base['test_pgd_sat_wr'])} (points, 95% interval, paired t-test)")


def _log_base(job: ConfirmJob, base: dict[str, Any], tests: dict[int, dict[str, float]],
              tracker: Tracker, stage: str) -> None:
    """The base config's tests into its cells, winner − base into the stage and the search."""
    _log_tests(job, tracker, stage, job.base_row or "", tests)
    metrics = {names.CONFIRM_BASE_DIFF: base["diff"], names.CONFIRM_BASE_P: base["p"],
               names.CONFIRM_BASE_TEST_DIFF: base["test_pgd_sat_wr"]["diff"]}
    for run in (stage, job.nested_in):
        if run is not None:
            tracker.log_summary(run, {k: v for k, v in metrics.items() if not math.isnan(v)},
                                step=0)


def _log_tests(job: ConfirmJob, tracker: Tracker, stage: str, row: str,
               tests: dict[int, dict[str, float]]) -> list[str]:
    """Each seed's test of ``row`` into that cell's run; returns the runs."""
    assert job.search is not None
    cells = {(c["tags"].get(names.ROW), c["tags"].get(names.SEED)): c["run_id"]
             for c in tracker.children(stage)}
    runs = [(cells.get((row, str(seed))), test) for seed, test in tests.items()]
    for run, test in runs:
        if run is not None:
            tracker.log_summary(run, names.prefixed(names.TEST, test),
                                step=job.search.base.optim.epochs)
    return [run for run, _ in runs if run is not None]


def _distinguishable(runner_up: dict[str, Any], seeds: int) -> str:
    """The line's tail: the winner's mean minus the runner-up's, and the paired test. A negative
    difference is possible (the rule is the lower bound, not the mean) and is said in words."""
    p, diff = runner_up["p"], runner_up["diff"]
    lower = (" (the runner-up has the higher mean; the winner has the higher lower bound, i.e. "
             "less spread over the seeds)" if diff < 0 else "")
    if math.isnan(p):
        return f"{100 * diff:+.2f} points{lower}; no paired test (fewer than 2 seeds in common)"
    verdict = "distinguishable" if p < ALPHA else "not distinguishable"
    return (f"{100 * diff:+.2f} points{lower}, paired p = {p:.3f}: {verdict} at {ALPHA:g} "
            f"with {seeds} seeds")


def _mean_tests(tests: dict[int, dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(t) for t in tests.values()))
    return {k: math.fsum(t[k] for t in tests.values()) / len(tests) for k in sorted(keys)}


def confirm_markdown(ranked: Sequence[dict[str, Any]], trials: Mapping[str, dict[str, Any]],
                     seeds: int, base: dict[str, Any] | None = None) -> str:
    """The stage's table: validation objective (W-acc, %) of each candidate over the seeds,
    and of the base config (``base``, :func:`base_comparison`) when it is an extra row."""
    def pct(x: float) -> str:
        return "–" if x is None or math.isnan(x) or math.isinf(x) else f"{100 * x:.2f}"

    lines = ["| | candidate | search run | seeds | mean ± std | 95% interval | lower bound | "
             "winner − row | p |", "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(ranked):
        mark = "**winner**" if i == 0 else ""
        lines.append(
            f"| {mark} | {r['candidate']} | {pct(trials[r['candidate']][names.OBJECTIVE])} | "
            f"{r['n']}/{seeds} | {pct(r['mean'])} ± {pct(r['std'])} | "
            f"[{pct(r['ci_low'])}, {pct(r['ci_high'])}] | {pct(r['lcb'])} | "
            f"{'' if i == 0 else pct(r['diff'])} | "
            f"{'' if i == 0 or math.isnan(r['p']) else format(r['p'], '.3f')} |")
    if base is not None and base["candidate"] == BASE_ROW:  # Δ and p: winner − base here
        lines.append(
            f"| base config | {BASE_ROW} | – | {base['n']}/{seeds} | {pct(base['mean'])} ± "
            f"{pct(base['std'])} | [{pct(base['ci_low'])}, {pct(base['ci_high'])}] | – | "
            f"{pct(base['diff'])} | {'' if math.isnan(base['p']) else format(base['p'], '.3f')} |")
    return ("Confirm stage: validation W-acc (%) over seeds. Rule: the winner has the highest "
            "lower bound of the 95% interval of its mean (ties: the higher mean, then the search "
            "rank); `winner − row` is paired over the seeds both have\n\n"
            + "\n".join(lines) + "\n")


def _log_outcome(job: ConfirmJob, ranked: list[dict[str, Any]], tests: dict[int, dict[str, float]],
                 mean_test: dict[str, float], sampled: dict[str, Any], markdown: str,
                 tracker: Tracker, stage: str) -> None:
    spec, win, search = job.search, ranked[0], job.nested_in
    assert spec is not None and search is not None
    for run in _log_tests(job, tracker, stage, win["candidate"], tests):
        tracker.set_tags(run, {names.BEST: names.flag(True)})
    mean = names.prefixed(names.TEST, mean_test)
    summary = {**mean, names.CONFIRM_MEAN: win["mean"], names.CONFIRM_LCB: win["lcb"]}
    runner_up = ranked[1] if len(ranked) > 1 else None
    tags = {names.CONFIRM_WINNER: win["candidate"],
            names.BEST_TRIAL: job.candidates[win["candidate"]]["trial_id"],
            names.CONFIRM_P_RUNNER_UP: "" if runner_up is None else f"{runner_up['p']:.4g}"}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / names.CONFIRM_TABLE).write_text(markdown)
        (Path(tmp) / names.BEST_CONFIG).write_text(
            dump_yaml(spec.trial_config(sampled).model_dump(mode="json")), encoding="utf-8")
        for run in (stage, search):
            tracker.log_summary(run, summary, step=0)
            tracker.set_tags(run, tags)
            tracker.log_artifact(run, Path(tmp) / names.CONFIRM_TABLE)
        tracker.log_artifact(search, Path(tmp) / names.BEST_CONFIG)
