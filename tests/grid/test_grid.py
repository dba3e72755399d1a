"""`ablate grid` and `ablate report`: bad grid files exit 2 naming the problem; a real grid on
digits (local Ray, real MLflow) logs one parent and a child per cell with test metrics and the
table; an interrupted grid resumes the missing cells only; `report` rebuilds the table."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import torch

from ablate.build import build_data, build_net, build_trainer
from ablate.cli import main
from ablate.config import ExperimentConfig, GridSpec, apply_overrides, load_grid, resolve_spec
from ablate.core.errors import ConfigError
from ablate.core.limits import MAX_CELLS
from tests.helpers import (
    GRID,
    TINY,
    assert_interrupted,
    edited,
    grid_runs,
    interrupt_after_first_trial,
    run_bad,
    steps,
    write,
)

MAX_ROWS = MAX_CELLS - 1  # one seed: with the duplicate, exactly MAX_CELLS rows


@pytest.mark.parametrize("raw, needle", [
    (edited(rows=[GRID["rows"][0], GRID["rows"][0]]), "duplicate row name 'no push'"),
    (edited(baseline="paper"), "baseline 'paper' is not a row"),
    (edited(rows=[{"name": "typo", "overrides": {"method.pussh": False}}], baseline="typo"),
     "row 'typo' (rows.0.overrides): field `method.pussh`: unknown key"),
    (edited(rows=[{"name": "bad", "overrides": {"optim.lr": -1}}], baseline="bad"),
     "field `optim.lr`"),
    (edited(seeds=[]), "field `seeds`"),
    (edited(seeds=[1, 1]), "distinct"),
    (edited(rows=[{"name": "t", "overrides": {"teachers.clean.kwargs.width": 4}}], baseline="t"),
     "cannot differ between rows"),
    (edited(rows=[{"name": "p", "paper": {"pgd": 50.0}}], baseline="p"), "rows.0.paper"),
    (edited(metrics=["clean_acc", "pgd_acc"]), "field `metrics`: Value error, unknown metric"),
    (edited(metrics=["autoattack_acc"]), "needs 'autoattack' in the base's eval.attacks"),
    # a row that is a copy of another in effect: ITT can never start in 2 epochs
    (edited(rows=[{"name": "w/o ITT", "overrides": {"itt.enabled": False}},
                  {"name": "w/ ITT", "overrides": {"itt.freeze_epochs": 2}}], baseline="w/o ITT"),
     "field `rows.1`: row 'w/ ITT' trains the same effective config as row 'w/o ITT' "
     "(itt.freeze_epochs=2 >= optim.epochs=2: ITT never starts"),
    # push temperatures of a row without push change nothing
    (edited(rows=[{"name": "a", "overrides": {"method.push": False}},
                  {"name": "b", "overrides": {"method.push": False,
                                              "method.push_student_temp": 2.0}}], baseline="a"),
     "row 'b' trains the same effective config as row 'a' (the settings they differ in have"),
])
def test_bad_grid_is_one_line_naming_the_problem(tmp_path: Path, raw: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_grid(write(tmp_path / "g.yaml", raw))
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("rows, seeds", [(1000, 1000), (2, 5001), (10001, 1)])
def test_a_grid_past_the_cell_cap_is_refused_at_once(workdir: Path, capsys, monkeypatch,
                                                      rows: int, seeds: int) -> None:
    """rows x seeds over MAX_CELLS is one line naming the cap, from the lengths of the lists:
    no row is validated and no cell made (a 10^6-cell grid answers in well under a second)."""
    def no_cells(*args: object) -> None:
        raise AssertionError("a cell was made before the grid was refused")

    monkeypatch.setattr(GridSpec, "cell_config", no_cells)
    path = write(workdir / "g.yaml", edited(rows=[{"name": f"r{i}"} for i in range(rows)],
                                            baseline="r0", seeds=list(range(seeds))))
    start = time.perf_counter()
    err = run_bad(workdir, capsys, ["grid", str(path), "--dry-run"])
    assert time.perf_counter() - start < 5.0  # measured: 0.1-0.3 s on a shared 2-core box
    assert f"{rows} rows x {seeds} seeds = {rows * seeds:,} cells" in err, err
    assert f"at most {MAX_CELLS:,} cells (MAX_CELLS" in err and "fields `rows` and `seeds`" in err
    assert not ray.is_initialized()


def test_a_grid_at_the_cell_cap_is_accepted() -> None:
    """The cap itself is allowed: GridSpec checks rows x seeds > MAX_CELLS, not >=."""
    raw = edited(rows=[{"name": "a"}, {"name": "b"}], baseline="a",
                 seeds=list(range(MAX_CELLS // 2)))
    assert len(GridSpec.model_validate(raw).seeds) == MAX_CELLS // 2
    with pytest.raises(ValueError, match="a grid has at most"):
        GridSpec.model_validate(raw | {"seeds": list(range(MAX_CELLS // 2 + 1))})


def test_a_duplicate_among_the_most_rows_a_grid_may_have_is_named(tmp_path: Path) -> None:
    """At the cap (10,000 rows, one seed) the duplicate, last, is still found and named in
    seconds (a Counter over the names, not rows.count() per row)."""
    rows = [{"name": f"r{i}"} for i in range(MAX_ROWS)] + [{"name": f"r{MAX_ROWS - 1}"}]
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"duplicate row name 'r{MAX_ROWS - 1}'"):
        load_grid(write(tmp_path / "g.yaml", edited(rows=rows, baseline="r0", seeds=[0])))
    assert time.perf_counter() - start < 10.0


def test_bad_grid_exits_2_before_anything_starts(workdir: Path, capsys) -> None:
    path = write(workdir / "g.yaml", edited(baseline="nope"))
    assert "baseline" in run_bad(workdir, capsys, ["grid", str(path)])
    err = run_bad(workdir, capsys, ["grid", "no_such_grid"])
    assert "no spec named 'no_such_grid'" in err and "ablation_table7_digits" in err
    assert not ray.is_initialized()


def test_the_shipped_table7_grid_has_the_papers_numbers() -> None:
    grid = load_grid(resolve_spec("ablation_table7"))
    assert len(grid.rows) == 4 and grid.rows[3].paper["pgd_trades_wr"] == 71.70
    assert grid.metrics == ["pgd_trades_acc", "clean_acc", "pgd_trades_wr"]


def test_itt_disabled_never_updates_the_robust_teacher() -> None:
    cfg = ExperimentConfig.model_validate(apply_overrides(TINY, ["itt.enabled=false"]))
    data = build_data(cfg)
    clean, robust = (build_net(getattr(cfg.teachers, r), data).eval() for r in ("clean", "robust"))
    trainer = build_trainer(cfg, data, clean, robust, torch.device("cpu"))
    before = copy.deepcopy(trainer.robust_teacher.state_dict())
    trainer.run_epoch()
    trainer.run_epoch()  # past freeze_epochs=1: would be updated with ITT on
    assert trainer.teacher_optimizer is None
    after = trainer.robust_teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_grid_logs_cells_and_the_table_and_report_rebuilds_it(workdir: Path, capsys) -> None:
    grid = edited(overrides={"eval.attacks": ["fgsm", "transfer_cw_inf"]},
                  metrics=["pgd_sat_acc", "clean_acc", "pgd_sat_wr", "fgsm_acc"])
    assert main(["grid", str(write(workdir / "g.yaml", grid)), "--heartbeat", "0.5"]) == 0
    out = capsys.readouterr().out
    client, parent, children = grid_runs(workdir)
    assert parent.info.status == "FINISHED" and len(children) == 4
    # progress: teachers per epoch, a heartbeat while cells run, the parent run's URL at the end
    assert "clean teacher epoch   2/2" in out and "robust teacher epoch   1/1" in out
    assert re.search(r"\] \d running, \d done, 0 failed of 4; ", out), out  # no ASHA here
    exp = parent.info.experiment_id
    assert (f"/#/experiments/{exp}/runs?workflowType=machine_learning&viewStateShareKey="
            f"{parent.info.run_id}") in out.splitlines()[-1]
    assert {c.info.run_name for c in children} == {"no-push-s0", "no-push-s1", "push-s0",
                                                   "push-s1"}
    assert set(children[0].data.params) == {"method.push", "row", "seed", "method"}
    cells = {(c.data.tags["row"], int(c.data.tags["seed"])) for c in children}
    assert cells == {(r, s) for r in ("no push", "push") for s in (0, 1)}
    for c in children:
        assert c.info.status == "FINISHED" and c.data.params["seed"] == c.data.tags["seed"]
        assert 0 <= c.data.metrics["test/pgd_sat_acc"] <= 1
        assert "test/robust_acc" not in c.data.metrics  # one name for one attack
        assert c.data.params["method.push"] == str(c.data.tags["row"] == "push")
        # push diagnostics exist exactly for the cells with a push term
        assert ("train/run_push_active_frac" in c.data.metrics) == (c.data.tags["row"] == "push")
        m = c.data.metrics  # the final protocol ran on every cell
        assert 0 <= m["test/fgsm_acc"] <= m["test/clean_acc"]
        assert m["test/transfer_cw_inf_wr"] == pytest.approx(
            (m["test/clean_acc"] + m["test/transfer_cw_inf_acc"]) / 2)
        checkpoint = Path(c.data.tags["checkpoint"])
        assert (checkpoint / "trainer.pt").is_file() and (checkpoint / "config.yaml").is_file()
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"grid_table.md", "grid_table.csv", "grid_table.parquet"} <= names
    table = pq.read_table(client.download_artifacts(parent.info.run_id,
                                                    "grid_table.parquet")).to_pylist()
    assert [r["row"] for r in table] == ["no push", "push"]
    push = [c.data.metrics["test/clean_acc"] for c in children if c.data.tags["row"] == "push"]
    assert table[1]["clean_acc_mean"] == pytest.approx(100 * sum(push) / 2)
    assert table[0]["clean_acc_paper"] == 90.0 and table[0]["seeds_finished"] == 2
    # The terminal gets one block per metric within 120 columns; the files get everything.
    start = out.index("PGD_SAT (%)")
    console = out[start:out.index("grid_table.md in parent run", start)].splitlines()
    assert max(len(line) for line in console) <= 120
    row = next(line for line in console if line.strip().startswith("push "))
    assert f"{table[1]['pgd_sat_acc_mean']:.2f} ± " in row
    assert "baseline" in next(line for line in console if line.strip().startswith("no push"))
    markdown = Path(client.download_artifacts(parent.info.run_id, "grid_table.md")).read_text()
    assert "| no push |" in markdown
    # the push column: the mean over seeds of each cell's run-level |J|/B, "–" without push
    active = [c.data.metrics["train/run_push_active_frac"] for c in children
              if c.data.tags["row"] == "push"]
    assert table[1]["push_active"] == pytest.approx(sum(active) / 2)
    assert table[0]["push_active"] is None and "| push |" in markdown.replace("| push | 2 |", "")
    assert f"J {100 * table[1]['push_active']:.1f}% of samples" in markdown
    assert "uninformative with fewer than 3 seeds" in out  # 2 seeds

    assert main(["report", "tiny-grid"]) == 0  # from MLflow alone, no training
    rebuilt = capsys.readouterr().out
    assert "PGD_SAT (%)" in rebuilt and rebuilt.strip() in out
    assert table[0]["fgsm_acc_mean"] is not None and "FGSM" in out

    # A cell's child run is a target of `ablate eval` through its checkpoint tag.
    cell = children[0].info.run_id
    assert main(["eval", cell, "--attacks", "pgd_sat"]) == 0
    assert "PGD_SAT" in capsys.readouterr().out
    assert "test/pgd_sat_acc" in client.get_run(cell).data.metrics


def test_interrupted_grid_resumes_the_missing_cells_only(workdir: Path) -> None:
    path = write(workdir / "g.yaml", edited(seeds=[0, 1, 2]))
    cmd = [sys.executable, "-m", "ablate.cli", "grid", str(path)]
    env = dict(os.environ, ABLATE_CACHE=str(workdir / "cache"))
    interrupt_after_first_trial(cmd, workdir, env)
    client, parent, children = grid_runs(workdir)
    assert_interrupted(client, parent, children)
    before = {c.data.tags["trial_id"]: steps(client, c) for c in children
              if c.info.status == "FINISHED"}
    assert before and len(before) < 6

    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=workdir,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    client, parent, children = grid_runs(workdir)
    assert parent.info.status == "FINISHED" and len(children) == 6
    assert all(c.info.status == "FINISHED" for c in children)
    for c in children:
        assert steps(client, c) == [1, 2]  # every epoch once (1-based), none trained twice
        if c.data.tags["trial_id"] in before:
            assert steps(client, c) == before[c.data.tags["trial_id"]]
    assert re.search(r"^  push +3 ", done.stdout, re.MULTILINE)  # the table, all 3 seeds


def test_a_grid_whose_every_cell_fails_is_not_finished(workdir: Path, capsys) -> None:
    grid = edited(rows=GRID["rows"][:1], seeds=[0], overrides={"optim.lr": 1e30})
    assert main(["grid", str(write(workdir / "g.yaml", grid))]) == 1
    out = capsys.readouterr().out
    assert "error: all 1 trials failed, so there is no result" in out and "| no push |" not in out
    _, parent, children = grid_runs(workdir)
    assert parent.info.status == "FAILED" and [c.info.status for c in children] == ["FAILED"]
