"""Search specs: every bad spec is one clear ConfigError naming the field; good specs resolve
sampled values into valid experiment configs."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from ablate.config import (
    Resources,
    apply_overrides,
    check_resources,
    concurrency,
    config_hash,
    load_search_spec,
    set_path,
)
from ablate.core.errors import ConfigError
from ablate.search.job import make_sampler
from tests.helpers import TINY

SPEC: dict[str, Any] = {
    "name": "tiny-search",
    "base": TINY,
    "space": {
        "method.alpha": {"type": "float", "low": 0.1, "high": 1.0},
        "method.lam": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
        "temp": {"type": "float", "low": 1.0, "high": 8.0,
                 "paths": ["method.push_student_temp", "method.push_teacher_temp"]},
        "itt.freeze_epochs": {"type": "int", "low": 0, "high": 2},
        "method.kl_reduction": {"type": "categorical", "choices": ["batchmean", "mean"]},
    },
    "num_samples": 3,
}


def load(tmp_path: Path, spec: dict[str, Any], overrides: list[str] | None = None) -> Any:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_search_spec(path, overrides)


def edited(**changes: Any) -> dict[str, Any]:
    """SPEC with dotted-path changes (``None`` deletes the key)."""
    out = copy.deepcopy(SPEC)
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split("/")
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return out


def test_good_spec_writes_sampled_values_to_every_target_path(tmp_path: Path) -> None:
    spec = load(tmp_path, SPEC)
    cfg = spec.trial_config({"method.alpha": 0.3, "temp": 2.5, "itt.freeze_epochs": 2,
                             "method.lam": 0.01, "method.kl_reduction": "mean"})
    assert cfg.method.alpha == 0.3 and cfg.method.lam == 0.01
    assert cfg.method.push_student_temp == cfg.method.push_teacher_temp == 2.5
    assert cfg.itt.freeze_epochs == 2 and cfg.method.kl_reduction == "mean"
    assert cfg.optim.epochs == TINY["optim"]["epochs"]  # untouched fields come from the base


def test_sampled_values_are_set_as_values_not_reparsed_text(tmp_path: Path) -> None:
    """json.dumps(1e-05) is '1e-05', which YAML 1.1 reads back as a string: the old text round
    trip turned a sampled 1e-05 into '1e-05' wherever pydantic does not coerce (kwargs)."""
    from ablate.config import GridSpec, Recipe

    raw = edited(**{"space/student.kwargs.scale": {"type": "float", "low": 1e-6,
                                                   "high": 1e-4, "log": True}})
    raw["base"] = copy.deepcopy(TINY)
    raw["base"]["student"]["kwargs"]["scale"] = 1.0
    spec = load(tmp_path, raw)
    cfg = spec.trial_config({"student.kwargs.scale": 1e-05, "method.lam": 1e-05})
    assert cfg.student.kwargs["scale"] == 1e-05 and isinstance(cfg.student.kwargs["scale"],
                                                                 float)
    assert cfg.method.lam == 1e-05
    rows = [{"name": "a"}, {"name": "b", "overrides": {"student.kwargs.scale": 1e-05}}]
    grid = GridSpec.model_validate({"name": "g", "base": raw["base"], "baseline": "a",
                                    "seeds": [0], "rows": rows})
    assert grid.cell_config("b", 0).student.kwargs["scale"] == 1e-05
    recipe = spec.recipe()  # what the Ray workers receive: plain, picklable data
    assert pickle.loads(pickle.dumps(recipe)) == recipe
    assert recipe.config({"method.alpha": 0.25}) == spec.trial_config({"method.alpha": 0.25})
    assert Recipe(recipe.base, {}).config({}) == spec.base


def test_set_path_creates_sections_and_refuses_a_value_in_the_way() -> None:
    tree: dict[str, Any] = {"space": {"method.alpha": {"low": 0.1}}, "a": 1}
    set_path(tree, "space.method.alpha.high", 0.5)
    set_path(tree, "b.c", [1, 2])
    assert tree == {"space": {"method.alpha": {"low": 0.1, "high": 0.5}}, "a": 1,
                    "b": {"c": [1, 2]}}
    with pytest.raises(ConfigError, match="'a' is not a section"):
        set_path(tree, "a.x", 2)


def test_base_by_path_overrides_and_objective_weight(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY))
    raw = edited(base="base.yaml", overrides={"optim.epochs": 5, "seed": 3},
                 objective={"metric": "w_acc", "w": 0.7})
    spec = load(tmp_path, raw, ["num_samples=7", "space.itt.freeze_epochs.high=4"])
    assert spec.base.optim.epochs == 5 and spec.base.seed == 3
    assert spec.base.eval.w == 0.7  # the objective's clean weight is the experiment's W-acc
    assert spec.num_samples == 7 and spec.space["itt.freeze_epochs"].high == 4


def test_overrides_reach_keys_that_contain_dots() -> None:
    raw = {"space": {"method.alpha": {"low": 0.1}}, "a": {"b": 1}}
    out = apply_overrides(raw, ["space.method.alpha.low=0.2", "a.c=2"])
    assert out["space"]["method.alpha"]["low"] == 0.2 and out["a"] == {"b": 1, "c": 2}
    assert raw["space"]["method.alpha"]["low"] == 0.1  # the input is not modified


@pytest.mark.parametrize("raw, needle", [
    (edited(typo=1), "field `typo`: unknown key"),
    (edited(**{"space/method.alpha": {"type": "float", "low": 0.9, "high": 0.1}}),
     "low=0.9 > high=0.1"),
    (edited(**{"space/method.lam": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}),
     "log=true needs low > 0"),
    (edited(**{"space/method.alpah": {"type": "float", "low": 0.1, "high": 1.0}}),
     "unknown config path `method.alpah`"),
    (edited(**{"space/temp/paths": ["method.push_temp"]}), "unknown config path"),
    (edited(**{"space/method.alpha": {"type": "float", "low": -1.0, "high": 1.0}}),
     "space `method.alpha`: value -1.0"),
    (edited(**{"space/itt.freeze_epochs/high": 9}), "past the last epoch"),
    (edited(**{"space/method.alpha": {"type": "int", "low": 0.5, "high": 2}}), "integer"),
    (edited(**{"space/method.kl_reduction": {"type": "categorical", "choices": []}}),
     "non-empty"),
    (edited(space={}), "field `space`"),
    (edited(num_samples=0), "field `num_samples`"),
    (edited(resources={"cpu": 0}), "field `resources.cpu`"),
    (edited(**{"base/optim/epochs": "many"}), "field `base.optim.epochs`"),
    (edited(searcher={"points_to_evaluate": [{"method.alpha": 0.5}]}), "missing"),
    (edited(searcher={"points_to_evaluate": [
        {"method.alpha": 5.0, "method.lam": 0.1, "temp": 4.0, "itt.freeze_epochs": 1,
         "method.kl_reduction": "mean"}]}), "outside the space"),
    (edited(searcher={"name": "optuna_random", "n_startup_trials": 4}),
     "n_startup_trials set, but only optuna_tpe uses it"),
    (edited(searcher={"n_startup_trials": -1}), "field `searcher.n_startup_trials`"),
])
def test_bad_spec_is_one_line_naming_the_problem(tmp_path: Path, raw: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, raw)
    message = str(info.value)
    assert needle in message and "\n" not in message, message
    assert message.startswith(str(tmp_path / "spec.yaml"))


def test_resources_beyond_the_machine_name_the_field() -> None:
    machine = {"CPU": 2.0, "GPU": 0.0}
    check_resources(Resources(cpu=2), machine, "this machine")
    with pytest.raises(ConfigError, match=r"resources.cpu.*4 CPUs per trial.*has 2"):
        check_resources(Resources(cpu=4), machine, "this machine")
    with pytest.raises(ConfigError, match=r"resources.gpu.*0.5 GPUs.*has 0 .*--address"):
        check_resources(Resources(gpu=0.5), machine, "this machine")


def test_concurrency_is_limited_by_cpus_gpus_and_the_cap(tmp_path: Path) -> None:
    spec = load(tmp_path, edited(num_samples=16))
    assert concurrency(spec, {"CPU": 2, "GPU": 0}) == 2
    spec = load(tmp_path, edited(num_samples=16, resources={"cpu": 2, "gpu": 0.25},
                                 max_concurrent=6))
    assert concurrency(spec, {"CPU": 16, "GPU": 1}) == 4  # four quarter-GPU trials
    assert concurrency(spec, {"CPU": 64, "GPU": 8}) == 6  # the cap
    assert concurrency(spec, {"CPU": 16, "GPU": 0}) == 0


def test_tpe_options_at_their_defaults_keep_the_search_hash(tmp_path: Path) -> None:
    plain = load(tmp_path, SPEC)
    before = plain.model_dump(mode="json", exclude={"confirm"})  # a spec from before the options
    for key in ("n_startup_trials", "multivariate"):
        del before["searcher"][key]
    assert plain.digest() == config_hash(before)
    explicit = load(tmp_path, SPEC, ["searcher.n_startup_trials=10", "searcher.multivariate=null"])
    assert explicit.digest() == plain.digest()
    digests = {load(tmp_path, SPEC, [o]).digest() for o in
               ("searcher.n_startup_trials=4", "searcher.multivariate=true",
                "searcher.multivariate=false")}
    assert len(digests) == 3 and plain.digest() not in digests


@pytest.mark.parametrize("startup", [2, 6])
def test_tpe_samples_at_random_for_exactly_n_startup_trials(tmp_path: Path, startup: int) -> None:
    """The sampler the search builds follows the option: its first ``startup`` trials are the
    seeded random sampler's, the next one is TPE's own."""
    spec = load(tmp_path, SPEC, [f"searcher.n_startup_trials={startup}", "searcher.seed=3"])

    def params(sampler: optuna.samplers.BaseSampler) -> list[float]:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda t: -(t.suggest_float("x", 0, 1) - 0.3) ** 2, n_trials=startup + 1)
        return [t.params["x"] for t in study.trials]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tpe, rand = params(make_sampler(spec)), params(optuna.samplers.RandomSampler(seed=3))
    assert tpe[:startup] == rand[:startup] and tpe[startup] != rand[startup]
