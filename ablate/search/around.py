"""``ablate grid --around SEARCH_RUN``: a one-at-a-time ablation grid around a search's best
configuration (the confirmed winner when the search had a confirm stage).

Each row moves one knob of the search space away from the optimum: the push term and ITT off,
α and β swapped, a log-scale knob (λ, a learning rate) ×0.1 and ×10, any other number to each
bound of its range, a categorical to each other choice. Rows that train the same effective
config as the optimum or as an earlier row are dropped. Every cell is tested and paired with the
optimum row over seeds (the grid table), so the table says which knobs matter at the optimum.
The generated grid is a normal grid file: ``ablate grid FILE`` reruns it.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ablate import names
from ablate.config import (
    ExperimentConfig,
    Param,
    apply_overrides,
    config_hash,
    dump_yaml,
    effective_config,
    read_yaml,
    set_path,
)
from ablate.core.errors import ConfigError
from ablate.search.trials import SearchFacts, literal
from ablate.tracking import Tracker

OPTIMUM = "optimum"
DEFAULT_SEEDS = [0, 1, 2]


def get_path(tree: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def _moves(key: str, p: Param, value: Any) -> list[tuple[str, Any]]:
    """(label, new value) for one knob at ``value``."""
    if p.type == "categorical":
        return [(f"{key}={c}", c) for c in p.choices or [] if c != value]
    if not isinstance(value, int | float) or isinstance(value, bool):
        return []
    if p.log and value > 0:
        moved = [("×0.1", value * 0.1), ("×10", value * 10)]
        if p.type == "int":
            moved = [(label, max(1, round(v))) for label, v in moved]
        return [(f"{key} {label}", v) for label, v in moved]
    bounds = [(p.low, "low"), (p.high, "high")]
    cast = int if p.type == "int" else float
    return [(f"{key}={cast(b):g} ({side})", cast(b)) for b, side in bounds
            if b is not None and not math.isclose(cast(b), value)]


def around_rows(best: dict[str, Any], space: dict[str, Param]) -> list[dict[str, Any]]:
    """The grid rows (name, overrides) around ``best`` (an experiment config as plain data),
    the optimum first. Only rows whose effective config differs from every earlier row's."""
    method = best.get("method", {})
    candidates: list[tuple[str, dict[str, Any]]] = [(OPTIMUM, {})]
    if method.get("push") is True:
        candidates.append(("push off", {"method.push": False}))
    if best.get("itt", {}).get("enabled", True):
        candidates.append(("ITT off", {"itt.enabled": False}))
    if {"method.alpha", "method.beta"} <= set(space) and method["alpha"] != method["beta"]:
        candidates.append(("α↔β swapped", {"method.alpha": method["beta"],
                                           "method.beta": method["alpha"]}))
    for key, p in space.items():
        paths = p.paths or [key]
        for label, value in _moves(key, p, get_path(best, paths[0])):
            candidates.append((label, {path: value for path in paths}))
    rows, seen = [], set()
    for name, overrides in candidates:
        tree = _with(best, overrides)
        try:
            key = config_hash(effective_config(ExperimentConfig.model_validate(tree)))
        except ValueError:  # a move the config refuses (e.g. outside a field's range)
            continue
        if key not in seen:
            seen.add(key)
            rows.append({"name": name, "overrides": overrides})
    return rows


def _with(best: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    tree = copy.deepcopy(best)
    for path, value in overrides.items():
        set_path(tree, path, value)
    return tree


def around_grid(tracker: Tracker, target: str, workdir: Path,
                overrides: Sequence[str] = ()) -> tuple[Path, str]:
    """Write the around-grid of the search parent run ``target`` (a run id, or an experiment
    name for its newest search) to ``workdir/runs/around/``, with the grid ``overrides``
    (``base.optim.epochs=4``, ``seeds=[0]``) applied before the rows are made, so a row that
    the overrides make a copy of another is dropped; returns the file and the search's parent
    run id."""
    info = _search_run(tracker, target)
    facts = SearchFacts.from_run(info)
    with tempfile.TemporaryDirectory() as tmp:
        best_file = tracker.download_if_present(info["run_id"], names.BEST_CONFIG, tmp)
        if best_file is None:
            raise ConfigError(f"run {info['run_id']}: no {names.BEST_CONFIG} (the search did not "
                              "finish, or its confirm stage did not choose a winner)")
        best = read_yaml(best_file)
    params = info["params"]
    seeds = literal(params.get(names.param(names.PARAMS_SEARCH, "confirm.seeds"),
                               "None")) or DEFAULT_SEEDS
    cpu, gpu = (params.get(names.param(names.PARAMS_SEARCH, "resources", k), default)
                for k, default in (("cpu", 1), ("gpu", 0)))
    # The search's MLflow experiment: the UI nests runs only within one experiment.
    grid = apply_overrides({
        "name": facts.name, "base": best, "baseline": OPTIMUM, "seeds": seeds,
        "resources": {"cpu": float(cpu), "gpu": float(gpu)},
        "paper_note": f"none: a one-at-a-time grid around search run {info['run_id']}"},
        list(overrides))
    if not isinstance(grid.get("base"), dict):
        raise ConfigError(f"--around {target}: `base` must stay a mapping")
    grid["rows"] = around_rows(grid["base"], facts.space)
    path = workdir / "runs" / "around" / f"{facts.name}-{info['run_id'][:8]}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(grid), encoding="utf-8")
    return path, info["run_id"]


def _search_run(tracker: Tracker, target: str) -> dict[str, Any]:
    info = tracker.resolve_run(target, (names.KIND_SEARCH,), f"--around {target}")
    if info["tags"].get(names.KIND) != names.KIND_SEARCH:
        raise ConfigError(f"--around {target}: run {info['run_id']} is not a search's parent "
                          f"run (kind {info['tags'].get(names.KIND, 'unknown')!r})")
    state = info["tags"].get(names.CONFIRM, names.CONFIRM_DONE)
    if state != names.CONFIRM_DONE:  # its best_config.yaml is not the confirmed winner (yet)
        raise ConfigError(f"--around {target}: the confirm stage of search run "
                          f"{info['run_id']} is {state}; finish it first (the search's "
                          "command with --resume)")
    return info

