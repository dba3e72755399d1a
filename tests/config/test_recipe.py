"""The trial recipe: a relative data.root is made absolute for the Ray trials, which run in
their own working directories (found with CIFAR: every trial failed with the default root)."""

from __future__ import annotations

import copy
from pathlib import Path

from ablate.cli import main
from ablate.config import Recipe
from tests.helpers import GRID, TINY, grid_runs, write, write_fake_cifar10


def test_rooted_makes_a_relative_root_absolute_and_keeps_an_absolute_one(tmp_path) -> None:
    relative = Recipe({**TINY, "data": {"name": "cifar10", "root": "data"}}, {})
    assert relative.rooted(tmp_path).base["data"]["root"] == str(tmp_path / "data")
    assert relative.base["data"]["root"] == "data"  # the original is not changed
    absolute = Recipe({**TINY, "data": {"name": "cifar10", "root": "/srv/cifar"}}, {})
    assert absolute.rooted(tmp_path).base["data"]["root"] == "/srv/cifar"
    default = Recipe({k: v for k, v in TINY.items() if k != "data"}, {})
    assert default.rooted(tmp_path).config({}).data.root == str(tmp_path / "data")


def test_a_grid_on_cifar_with_the_default_relative_root_trains(workdir: Path, capsys) -> None:
    write_fake_cifar10(str(workdir / "data"))
    base = copy.deepcopy(TINY) | {"data": {"name": "cifar10"}, "optim": {"epochs": 1,
                                                                           "lr": 0.1}}
    grid = copy.deepcopy(GRID) | {"base": base, "seeds": [0], "rows": GRID["rows"][:1],
                                  "baseline": GRID["rows"][0]["name"]}
    assert main(["grid", str(write(workdir / "g.yaml", grid))]) == 0, capsys.readouterr()
    _, parent, children = grid_runs(workdir)
    assert parent.info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED"]
