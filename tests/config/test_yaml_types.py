"""Values mean what they say (issue 28): files and ``key=value`` overrides are read by one YAML
1.2 core-schema loader (``yes`` is text, ``017`` is 17, ``1:30`` is not 90), what ablate writes
reads back the same under both YAML 1.1 and 1.2, and no config field turns a value of another
type into its own (``optim.epochs=true`` is not one epoch)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from ablate.config import (
    ExperimentConfig,
    GridSpec,
    SearchSpec,
    dump_yaml,
    load_config,
    load_grid,
    load_search_spec,
    parse_yaml,
    read_yaml,
)
from ablate.core.errors import ConfigError, readable_line
from tests.helpers import GRID, SPEC, TINY, write


@pytest.mark.parametrize(("text", "value"), [
    # YAML 1.1 (PyYAML's safe_load) reads the first ones as True, False, True, False, 15, 90
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("Y", "Y"), ("NO", "NO"),
    ("017", 17), ("1:30", "1:30"), ("1_000", "1_000"), ("0b11", "0b11"),
    ("2024-01-01", "2024-01-01"), ("=", "="), ("<<", "<<"),
    # the core schema's own forms
    ("true", True), ("False", False), ("TRUE", True), ("null", None), ("~", None), ("", None),
    ("0o17", 15), ("0x1F", 31), ("-3", -3), ("+12", 12), ("1e-5", 1e-5), ("1.0e-5", 1e-5),
    (".5", 0.5), ("3.", 3.0), ("-.inf", -math.inf), ("text", "text"),
    ("{a: yes, b: [017, 1:30, off]}", {"a": "yes", "b": [17, "1:30", "off"]}),
])
def test_values_follow_the_yaml_1_2_core_schema(text: str, value: Any) -> None:
    assert parse_yaml(text) == value
    assert type(parse_yaml(text)) is type(value)


def test_nan_is_still_a_float_for_validation_to_refuse() -> None:
    assert math.isnan(parse_yaml(".nan")) and math.isnan(parse_yaml(".NaN"))


def test_a_file_and_an_override_read_a_value_alike(tmp_path: Path) -> None:
    """The same text in a file and on the command line gives the same config."""
    raw = copy.deepcopy(TINY)
    del raw["name"], raw["optim"]["epochs"], raw["data"]
    text = dump_yaml(raw) + "name: no\noptim:\n  epochs: 017\ndata:\n  root: 1:30\n"
    from_file = load_config(write(tmp_path / "f.yaml", text))
    from_overrides = load_config(write(tmp_path / "o.yaml", TINY),
                                 ["name=no", "optim.epochs=017", "data.root=1:30"])
    assert (from_file.name, from_file.optim.epochs, from_file.data.root) == ("no", 17, "1:30")
    assert from_overrides.model_dump() == from_file.model_dump()
    assert load_config(tmp_path / "o.yaml", ["optim.epochs=0o17"]).optim.epochs == 15


def test_a_spec_and_its_base_file_are_read_by_the_same_rules(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", {**TINY, "name": "base"})
    (tmp_path / "s.yaml").write_text(dump_yaml({**SPEC, "base": "base.yaml"})
                                     .replace("name: tiny-search", "name: off"))
    (tmp_path / "base.yaml").write_text((tmp_path / "base.yaml").read_text()
                                        .replace("name: base", "name: on"))
    spec = load_search_spec(tmp_path / "s.yaml")
    assert (spec.name, spec.base.name) == ("off", "on")


@pytest.mark.parametrize("text", ["0o17", "1e5", "yes", "1:30", "017", "null", ".inf", "0x1f",
                                  "+1", "2024-01-01"])
def test_what_ablate_writes_reads_back_the_same_under_both_yamls(text: str,
                                                                 tmp_path: Path) -> None:
    """config.yaml beside a checkpoint, and the `sampled` tag, are read back here (1.2) and
    may be read by anyone's PyYAML (1.1): a string either would misread is quoted."""
    dumped = dump_yaml({"name": text, "n": 17, "x": 1e-5, "b": True})
    assert parse_yaml(dumped) == yaml.safe_load(dumped) == {"name": text, "n": 17, "x": 1e-5,
                                                            "b": True}
    assert read_yaml(write(tmp_path / "c.yaml", dumped))["name"] == text


# --- strict types ---------------------------------------------------------------------------------

INT_PATHS = ["optim.epochs", "optim.batch_size", "attack.steps", "seed", "data.split_seed",
             "data.train_subset", "eval.val_steps", "eval.val_subset", "itt.freeze_epochs",
             "eval.autoattack_subset", "teachers.clean.train.epochs"]


@pytest.mark.parametrize("path", INT_PATHS)
@pytest.mark.parametrize("value", ["true", "yes", "2.0", "2.5", "'3'"])
def test_an_integer_field_takes_only_an_integer(tmp_path: Path, path: str, value: str) -> None:
    """Before, `true` was 1, `2.0` was 2 and the text '3' was 3 (pydantic's lax mode); `yes`
    is text now, refused the same way."""
    cfg = write(tmp_path / "c.yaml", TINY)
    with pytest.raises(ConfigError) as info:
        load_config(cfg, [f"{path}={value}"])
    assert f"field `{path}`: Input should be a valid integer, got " in str(info.value), (
        str(info.value))
    assert load_config(cfg, [f"{path}=3"]) is not None  # the same field takes an integer


@pytest.mark.parametrize(("model", "doc", "override", "field"), [
    (SearchSpec, SPEC, "num_samples=true", "num_samples"),
    (SearchSpec, SPEC, "searcher.seed=false", "searcher.seed"),
    (SearchSpec, SPEC, "scheduler.grace_period=1.0", "scheduler.grace_period"),
    (SearchSpec, SPEC, "max_failures=true", "max_failures"),
    (GridSpec, GRID, "seeds=[0, true]", "seeds.1"),
    (GridSpec, GRID, "max_concurrent=2.0", "max_concurrent"),
])
def test_spec_and_grid_integers_are_strict(tmp_path: Path, model: type, doc: dict[str, Any],
                                           override: str, field: str) -> None:
    path = write(tmp_path / "s.yaml", doc)
    with pytest.raises(ConfigError, match=f"field `{field}`: Input should be a valid integer"):
        (load_search_spec if model is SearchSpec else load_grid)(path, [override])


def test_no_other_type_is_converted_either(tmp_path: Path) -> None:
    """Booleans, numbers and text stay what they are; an integer where a float is expected is
    the one conversion kept (`lr: 1`)."""
    cfg = write(tmp_path / "c.yaml", TINY)
    for override, field in [("optim.lr=true", "optim.lr"), ("igdm.enabled=1", "igdm.enabled"),
                            ("igdm.enabled=yes", "igdm.enabled"), ("name=2024", "name"),
                            ("optim.lr='0.1'", "optim.lr")]:
        with pytest.raises(ConfigError, match=f"field `{field}`: Input should be a valid"):
            load_config(cfg, [override])
    accepted = load_config(cfg, ["optim.lr=1", "name='2024'", "igdm.enabled=true"])
    assert (accepted.optim.lr, accepted.name, accepted.igdm.enabled) == (1.0, "2024", True)
    assert isinstance(accepted.optim.lr, float)


def test_every_config_model_is_strict() -> None:
    """A field added later is strict too: the models share one config, which says so."""
    from ablate.config.networks import Strict
    from ablate.core.catalog import METHOD_PARAMS

    models = [ExperimentConfig, SearchSpec, GridSpec, *METHOD_PARAMS]
    assert all(m.model_config.get("strict") is True for m in models)
    assert all(issubclass(m, Strict) for m in (ExperimentConfig, SearchSpec, GridSpec))


def test_readable_line_shortens_long_words_and_cuts_the_line() -> None:
    line = readable_line("field `" + "k" * 10_000 + "`: unknown key\nsecond line")
    assert "\n" not in line and line.endswith(": unknown key second line")
    assert "more characters)" in line and len(line) < 360
    long = readable_line("; ".join(f"field `k{i}`: unknown key" for i in range(1_000)))
    assert long.endswith("more characters)") and len(long) < 440
    assert readable_line("short: kept as it is") == "short: kept as it is"
