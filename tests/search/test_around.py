"""The around-grid: rows generated from a best config and a search space, written from a search
parent run in a real MLflow store (no Ray: the run is made the way a search makes it) and loaded
back as a normal grid file."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from ablate.cli import main
from ablate.config import (
    ExperimentConfig,
    Param,
    config_hash,
    dump_yaml,
    effective_config,
    load_grid,
    load_search_spec,
)
from ablate.search import SearchJob, around_grid
from ablate.search.around import OPTIMUM, around_rows, get_path
from ablate.tracking import Tracker
from tests.helpers import SPEC, run_bad, write

SPACE = {
    "method.alpha": Param(type="float", low=0.1, high=1.0),
    "method.beta": Param(type="float", low=0.1, high=1.0),
    "method.lam": Param(type="float", low=1e-3, high=1.0, log=True),
    "push_temp": Param(type="float", low=1.0, high=8.0,
                       paths=["method.push_student_temp", "method.push_teacher_temp"]),
    "itt.freeze_epochs": Param(type="int", low=0, high=4),
    "optim.lr": Param(type="categorical", choices=[0.05, 0.1, 0.2]),
}


def best_tree() -> dict:
    cfg = ExperimentConfig.model_validate(copy.deepcopy(SPEC["base"])).model_dump(mode="json")
    cfg["method"].update(alpha=0.3, beta=0.7, lam=0.05, push_student_temp=1.0,
                         push_teacher_temp=1.0)
    cfg["optim"].update(epochs=4, lr=0.1)
    cfg["itt"].update(freeze_epochs=2)
    return cfg


def write_spec(tmp: Path) -> Path:
    return write(tmp / "s.yaml", SPEC)


def test_rows_move_one_knob_each_and_drop_what_trains_the_same() -> None:
    best = best_tree()
    rows = around_rows(best, SPACE)
    by_name = {r["name"]: r["overrides"] for r in rows}
    assert rows[0] == {"name": OPTIMUM, "overrides": {}}
    assert by_name["push off"] == {"method.push": False}
    assert by_name["ITT off"] == {"itt.enabled": False}
    assert by_name["α↔β swapped"] == {"method.alpha": 0.7, "method.beta": 0.3}
    assert by_name["method.alpha=0.1 (low)"] == {"method.alpha": 0.1}
    assert by_name["method.beta=1 (high)"] == {"method.beta": 1.0}
    assert math.isclose(by_name["method.lam ×0.1"]["method.lam"], 0.005)  # log scale: decades
    assert math.isclose(by_name["method.lam ×10"]["method.lam"], 0.5)
    # Both paths of a shared knob move together; the bound it already sits on is no row.
    assert by_name["push_temp=8 (high)"] == {"method.push_student_temp": 8.0,
                                             "method.push_teacher_temp": 8.0}
    assert "push_temp=1 (low)" not in by_name
    assert by_name["itt.freeze_epochs=0 (low)"] == {"itt.freeze_epochs": 0}
    # freeze at 4 = the last epoch: ITT never starts, the same run as "ITT off": dropped.
    assert "itt.freeze_epochs=4 (high)" not in by_name
    assert by_name["optim.lr=0.05"] == {"optim.lr": 0.05} and "optim.lr=0.1" not in by_name
    # Every row is one valid config, all different from each other.
    keys = set()
    for r in rows:
        tree = copy.deepcopy(best)
        for path, value in r["overrides"].items():
            head, _, last = path.rpartition(".")
            get_path(tree, head)[last] = value
        keys.add(config_hash(effective_config(ExperimentConfig.model_validate(tree))))
    assert len(keys) == len(rows) == 14


def search_parent(tracker: Tracker, tmp: Path, best: dict, confirm: str | None) -> str:
    overrides = [] if confirm is None else [f"confirm.seeds={confirm}"]
    spec = load_search_spec(write_spec(tmp), overrides)
    run = tracker.start(spec.name, "search-x", params=SearchJob(spec).parent_params(),
                        tags={"kind": "search", "spec_hash": spec.digest()})
    (tmp / "best_config.yaml").write_text(dump_yaml(best))
    tracker.log_artifact(run, tmp / "best_config.yaml")
    tracker.end(run)
    return run


def test_the_generated_grid_is_a_grid_file_that_loads_and_reruns(workdir: Path, capsys) -> None:
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
    best = best_tree()
    run = search_parent(tracker, workdir, best, confirm="[3, 4]")
    path, found = around_grid(tracker, "tiny-search", workdir)  # by experiment name
    assert found == run and path.parent == workdir / "runs" / "around"
    grid = load_grid(path)  # what `ablate grid FILE` does
    assert grid.baseline == OPTIMUM and grid.seeds == [3, 4]  # the confirm stage's seeds
    # The space comes back from the run's params, keys in MLflow's (sorted) order.
    space = {k: Param.model_validate(v) for k, v in sorted(SPEC["space"].items())}
    assert [r.name for r in grid.rows] == [r["name"] for r in around_rows(best, space)]
    assert grid.cell_config(OPTIMUM, 3).method.alpha == best["method"]["alpha"]
    # The CLI: generate, log the file in the search's run, plan it (key=value overrides work).
    assert main(["grid", "--around", run, "seeds=[0,1]", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"rerun: ablate grid {path}" in out and "x 2 seeds" in out
    logged = tracker.download(run, f"around/{path.name}", workdir / "dl")
    assert yaml.safe_load(Path(logged).read_text()) == yaml.safe_load(path.read_text())
    # Names print as text, not YAML escapes.
    assert "itt.teacher_lr ×0.1" in out and "itt.teacher_lr ×0.1" in path.read_text()
    assert "\\xD7" not in out and "ITT off" in out
    # Overrides come before the rows: 2 epochs with the freeze at 2 leave ITT inert, so its
    # rows train the optimum again and are dropped, not refused.
    assert main(["grid", "--around", run, "base.optim.epochs=2", "seeds=[0]", "--dry-run"]) == 0
    short = load_grid(path)
    assert short.base.optim.epochs == 2 and short.seeds == [0]
    names = [r.name for r in short.rows]
    assert "push off" in names and not [n for n in names if "ITT" in n or "teacher_lr" in n]


def test_around_refuses_what_is_not_a_finished_search(workdir: Path, capsys) -> None:
    err = run_bad(workdir, capsys, ["grid", "--around", "nope"])
    assert "no MLflow store" in err
    err = run_bad(workdir, capsys, ["grid"])
    assert "--around" in err
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}")
    other = tracker.start("x", "grid-run", tags={"kind": "grid"})
    assert main(["grid", "--around", other]) == 2
    assert "is not a search's parent run" in capsys.readouterr().err
    pending = tracker.start("tiny-search", "s", tags={"kind": "search", "confirm": "running"})
    assert main(["grid", "--around", pending]) == 2
    assert "confirm stage of search run" in capsys.readouterr().err
    with pytest.raises(Exception, match="no best_config.yaml"):
        spec = load_search_spec(write_spec(workdir))
        bare = tracker.start(spec.name, "s", params=SearchJob(spec).parent_params(),
                             tags={"kind": "search"})
        around_grid(tracker, bare, workdir)
