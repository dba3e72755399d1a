"""The confirm stage: the selection rule against an independent computation (scipy), and a real
search with a confirm stage (local Ray, SQLite MLflow, digits) whose runs, winner, tests and
best config are checked from the store."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from ablate import names
from ablate.cli import main
from ablate.config import load_search_spec
from ablate.core.errors import ConfigError
from ablate.search.confirm import (
    BASE_ROW,
    _distinguishable,
    confirm_grid,
    confirm_markdown,
    select,
)
from ablate.search.trials import param_columns
from tests.helpers import SPEC, store, write


def lower_bound(values: list[float]) -> float:
    x = np.asarray(values)
    return float(x.mean() - stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def test_the_winner_has_the_highest_lower_bound_not_the_highest_mean() -> None:
    values = {"a": {0: 0.70, 1: 0.60, 2: 0.80},  # highest mean, noisy
              "b": {0: 0.68, 1: 0.69, 2: 0.70},  # lower mean, steady
              "c": {0: 0.40, 1: 0.42, 2: 0.41}}
    ranked = select(values, ["a", "b", "c"])
    assert [r["candidate"] for r in ranked] == ["b", "a", "c"]
    for r in ranked:
        vals = list(values[r["candidate"]].values())
        assert r["lcb"] == pytest.approx(lower_bound(vals))
        assert r["mean"] == pytest.approx(np.mean(vals)) and r["n"] == 3
    a, c = ranked[1], ranked[2]  # winner − candidate, paired over the same seeds
    want = stats.ttest_rel([values["b"][s] for s in (0, 1, 2)], [values["a"][s] for s in (0, 1, 2)])
    assert a["p"] == pytest.approx(want.pvalue) and a["diff"] == pytest.approx(-0.01)
    assert c["p"] == pytest.approx(stats.ttest_rel([.68, .69, .70], [.40, .42, .41]).pvalue)
    assert c["diff"] == pytest.approx(0.28)
    assert ranked[0]["diff"] == 0 and math.isnan(ranked[0]["p"])
    # The summary says the sign in words: the winner won on its interval, not its mean.
    line = _distinguishable(a, 3)
    assert line.startswith("-1.00 points (the runner-up has the higher mean")
    assert "not distinguishable" in line
    assert "runner-up" not in _distinguishable(c, 3) and _distinguishable(c, 3).startswith("+28")
    table = confirm_markdown(ranked, {k: {names.OBJECTIVE: 0.7} for k in values}, 3)
    assert "winner − row" in table and "| -1.00 |" in table and "| 28.00 |" in table


def test_ties_go_to_the_higher_mean_then_the_search_rank() -> None:
    # Same spread, so the same half-width: equal lower bounds only with equal means.
    same = {"x": {0: 0.5, 1: 0.7}, "y": {0: 0.5, 1: 0.7}}
    assert [r["candidate"] for r in select(same, ["y", "x"])] == ["y", "x"]
    assert [r["candidate"] for r in select(same, ["x", "y"])] == ["x", "y"]
    # Equal lower bounds (both -inf, one seed each): the higher mean wins.
    one = {"x": {0: 0.6}, "y": {0: 0.8}}
    assert [r["candidate"] for r in select(one, ["x", "y"])] == ["y", "x"]


def test_missing_seeds_count_only_what_finished() -> None:
    values = {"full": {0: 0.60, 1: 0.61, 2: 0.62},
              "two": {0: 0.70, 2: 0.74},  # seed 1 failed: a wide 2-seed interval
              "one": {1: 0.90},  # one seed: no interval, cannot be confirmed
              "none": {}}
    ranked = select(values, ["none", "one", "two", "full"])
    assert [r["candidate"] for r in ranked] == ["full", "two", "one", "none"]
    assert ranked[1]["lcb"] == pytest.approx(lower_bound([0.70, 0.74]))
    assert ranked[1]["n"] == 2 and ranked[2]["lcb"] == -math.inf and ranked[3]["n"] == 0
    # Paired over the seeds both have: (0, 2) for "two" against "full".
    want = stats.ttest_rel([0.70, 0.74], [0.60, 0.62])
    assert ranked[1]["p"] == pytest.approx(want.pvalue)
    assert math.isnan(ranked[2]["p"])  # one common seed: no test


def test_confirm_seeds_are_unseen_by_the_search(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", SPEC)
    default = load_search_spec(path, ["confirm={}"])
    assert default.base.seed == 0 and default.confirm is not None
    assert default.confirm.seeds == [1, 2, 3]
    shifted = load_search_spec(path, ["confirm={}", "base.seed=2"])
    assert shifted.confirm is not None and shifted.confirm.seeds == [0, 1, 3]
    with pytest.raises(ConfigError, match=r"field `confirm.seeds`: 0 is the seed the search "
                       r"trains with \(base.seed\)"):
        load_search_spec(path, ["confirm.seeds=[0, 1]"])


def test_confirm_is_left_out_of_the_search_hash(tmp_path: Path) -> None:
    plain = load_search_spec(write(tmp_path / "s.yaml", SPEC))
    confirmed = load_search_spec(tmp_path / "s.yaml", ["confirm.top_k=2", "confirm.seeds=[3,4]"])
    assert confirmed.confirm is not None and confirmed.confirm.seeds == [3, 4]
    assert plain.digest() == confirmed.digest()  # the same search, confirmed afterwards


def test_the_base_config_is_a_candidate_row_or_an_extra_one(tmp_path: Path) -> None:
    spec = load_search_spec(write(tmp_path / "s.yaml", SPEC), ["confirm.with_base=true"])
    base = {"method.alpha": spec.base.method.alpha, "itt.teacher_lr": spec.base.itt.teacher_lr,
            "optim.lr": spec.base.optim.lr}
    other = {**base, "method.alpha": 0.123}
    columns = param_columns(spec.space)
    trials = [{"trial": i, **{columns[k]: v for k, v in p.items()}}
              for i, p in enumerate([other, base])]
    grid, _, row = confirm_grid(spec, trials)
    assert row == "#2 trial 1" and [r.name for r in grid.rows] == ["#1 trial 0", "#2 trial 1"]
    grid, _, row = confirm_grid(spec, trials[:1])
    assert row == BASE_ROW and grid.rows[-1].name == BASE_ROW and grid.rows[-1].overrides == {}


def test_a_search_with_a_confirm_stage_tests_only_the_winner(workdir: Path, capsys) -> None:
    spec = copy.deepcopy(SPEC) | {"num_samples": 3, "confirm": {"top_k": 2, "seeds": [1, 2],
                                                                "with_base": True}}
    spec["scheduler"] = {"name": "none"}
    spec["base"]["optim"]["epochs"] = 2
    assert main(["search", str(write(workdir / "s.yaml", spec))]) == 0
    out = capsys.readouterr().out
    assert "confirmed winner: #" in out and "paired p = " in out
    assert "winner − the base config, seeds [1, 2]: val W " in out

    client, exp = store(workdir)
    runs = client.search_runs([exp])
    (search,) = [r for r in runs if r.data.tags.get("kind") == "search"]
    (stage,) = [r for r in runs if r.data.tags.get("kind") == "confirm"]
    cells = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == stage.info.run_id]
    assert stage.data.tags["mlflow.parentRunId"] == search.info.run_id
    assert search.info.status == stage.info.status == "FINISHED"
    assert search.data.tags["confirm"] == "done" and len(cells) == 6  # 2 candidates + base
    # The rule applied to the logged validation values picks the logged winner.
    values: dict[str, dict[int, float]] = {}
    for c in cells:
        values.setdefault(c.data.tags["row"], {})[int(c.data.tags["seed"])] = (
            c.data.metrics["val/best_w_acc"])
    base = values.pop(BASE_ROW)  # trained beside the candidates, never one of them
    order = sorted(values, key=lambda name: int(name.split()[0][1:]))
    winner = select(values, order)[0]["candidate"]
    assert search.data.tags["confirm_winner"] == winner
    assert search.data.metrics["confirm/lcb"] == pytest.approx(
        lower_bound(list(values[winner].values())))
    assert search.data.metrics["confirm/base_diff"] == pytest.approx(
        np.mean([values[winner][s] - base[s] for s in (1, 2)]))
    # Only the winner's and the base's cells were tested; the parent's test is the winner's mean.
    tested = [c for c in cells if "test/clean_acc" in c.data.metrics]
    assert {c.data.tags["row"] for c in tested} == {winner, BASE_ROW} and len(tested) == 4
    tested = [c for c in tested if c.data.tags["row"] == winner]
    assert search.data.metrics["test/clean_acc"] == pytest.approx(
        np.mean([c.data.metrics["test/clean_acc"] for c in tested]))
    # best_config.yaml is the winner's configuration.
    best = yaml.safe_load(Path(client.download_artifacts(
        search.info.run_id, "best_config.yaml", str(workdir))).read_text())
    trial = search.data.tags["best_trial"]
    (trial_run,) = [r for r in runs if r.data.tags.get("trial_id") == trial]
    assert best["method"]["alpha"] == pytest.approx(float(trial_run.data.params["method.alpha"]),
                                                    rel=1e-5)  # the param: 6 digits
    assert winner.endswith(f"trial {trial_run.data.tags['trial_number']}")

    # An around-grid of the confirmed winner nests in the search's run too, and `ablate report`
    # shows the search, the confirm stage and the around-grid together.
    assert main(["grid", "--around", search.info.run_id, "seeds=[0]", "--heartbeat", "0"]) == 0
    capsys.readouterr()
    (around,) = [r for r in client.search_runs([exp]) if r.data.tags.get("kind") == "grid"]
    assert around.data.tags["mlflow.parentRunId"] == search.info.run_id
    assert around.info.status == "FINISHED"
    assert main(["report", search.info.run_id]) == 0
    out = capsys.readouterr().out
    assert "Confirm stage: validation W-acc" in out and f"Around-grid {around.info.run_id}" in out
    assert out.index("Confirm stage") < out.index("\n  optimum ") and "push off" in out
