"""Overrides that forgive and explain: unknown keys suggest close matches, every validation
error is listed on the one line, a spec's `overrides` apply in a documented order (so
`overrides.KEY=VALUE` on the command line takes effect), typos inside `space` name the key,
switching `method.name` drops the old method's fields with a warning, a file given to the
wrong command names the right one, and database tracking URIs (also from MLFLOW_TRACKING_URI)
need their driver."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from ablate.cli import main
from ablate.cli.commands import _options
from ablate.cli.main import _parse
from ablate.config import (
    check_tracking_uri,
    config_warnings,
    default_uri,
    load_config,
    load_grid,
    load_search_spec,
    redact,
)
from ablate.core.errors import ConfigError
from tests.helpers import REPO, SPEC, TINY, run_bad, write

SEARCH_SPACES = REPO / "search_spaces"
QUICKSTART = str(SEARCH_SPACES / "quickstart.yaml")
TABLE7 = SEARCH_SPACES / "ablation_table7_digits.yaml"
CIARD_TINY = copy.deepcopy(TINY) | {"method": {"alpha": 0.3, "beta": 0.7, "lam": 0.1,
                                               "push_student_temp": 2.0}}
# A grid whose rows do not depend on the method's fields, so any method can be its base's.
GRID: dict[str, Any] = {"name": "g", "base": CIARD_TINY, "baseline": "a", "seeds": [0],
                        "rows": [{"name": "a"}, {"name": "b", "overrides": {"optim.lr": 0.05}}]}


# --- 1. unknown keys suggest close matches --------------------------------------------------

@pytest.mark.parametrize(("argv", "needle"), [
    (["train", "{c}", "optim.lrr=0.1"],
     "field `optim.lrr`: unknown key (did you mean `optim.lr`?)"),
    (["validate", "{c}", "teachers.clean.train.epoch=3"],
     "`teachers.clean.train.epoch`: unknown key (did you mean `teachers.clean.train.epochs`?)"),
    (["validate", "{c}", "method.alpah=0.3"], "(did you mean `method.alpha`?)"),
    (["validate", "{c}", "optimm.epochs=3"], "field `optimm`: unknown key (did you mean "
     "`optim.epochs`?)"),
    (["train", "{c}", "base.optim.epochs=3"], "field `base`: unknown key (did you mean "
     "`optim.epochs`?)"),
    (["validate", "{c}", "method.name=trade"], "(did you mean `trades`?)"),
    (["search", QUICKSTART, "num_sample=3"], "field `num_sample`: unknown key (did you mean "
     "`num_samples`?)"),
    (["grid", "ablation_table7_digits", "optim.epochs=3"],
     "field `optim`: unknown key (did you mean `base.optim.epochs`?)"),
    (["grid", "ablation_table7_digits", "optim.epoch=3"], "(did you mean `base.optim.epochs`?)"),
    (["grid", "ablation_table7_digits", "seed=3"], "(did you mean `base.seed` or `seeds`?)"),
    (["search", QUICKSTART, "base.optim.lrr=0.1"], "field `base.optim.lrr`: unknown key (did "
     "you mean `base.optim.lr`?)"),
])
def test_unknown_keys_suggest_close_matches(workdir, capsys, argv, needle) -> None:
    cfg = write(workdir / "c.yaml", TINY)
    err = run_bad(workdir, capsys, [a.replace("{c}", str(cfg)) for a in argv])
    assert needle in err, err


def test_every_unknown_key_in_a_file_gets_its_suggestion(workdir, capsys) -> None:
    raw = copy.deepcopy(TINY)
    raw["optim"]["lrr"] = 0.1
    raw["itt"]["teacher_lrr"] = 0.01
    err = run_bad(workdir, capsys, ["train", str(write(workdir / "c.yaml", raw))])
    assert "field `optim.lrr`: unknown key (did you mean `optim.lr`?)" in err
    assert "field `itt.teacher_lrr`: unknown key (did you mean `itt.teacher_lr`?)" in err


def test_a_key_with_nothing_close_gets_no_guess(workdir, capsys) -> None:
    cfg = write(workdir / "c.yaml", TINY)
    err = run_bad(workdir, capsys, ["train", str(cfg), "optim.zzzzzz=1"])
    assert err.endswith("field `optim.zzzzzz`: unknown key") and "did you mean" not in err


# --- 2. every validation error, on one line ----------------------------------------------------

def test_every_validation_error_is_listed_on_one_line(workdir, capsys) -> None:
    cfg = write(workdir / "c.yaml", TINY)
    err = run_bad(workdir, capsys, ["validate", str(cfg), "optim.lr=-1", "optim.epochs=many",
                                    "attack.eps=2", "method.alpha=-1", "optim.lrr=1"])
    for field in ("optim.lr", "optim.epochs", "attack.eps", "method.alpha", "optim.lrr"):
        assert f"field `{field}`: " in err, (field, err)
    assert "more)" not in err and err.count("; field `") == 4


def test_a_value_no_member_of_a_union_takes_is_one_field(workdir, capsys) -> None:
    """`lam: float | 'auto'` fails once per member; the line names `method.lam` once."""
    cfg = write(workdir / "c.yaml", TINY)
    err = run_bad(workdir, capsys, ["validate", str(cfg), "method.lam=much"])
    assert err.count("field `") == 1 and "field `method.lam`: " in err
    assert "valid number" in err and " or " in err and "'auto'" in err


# --- 3. the order of overrides on a spec ---------------------------------------------------------

def test_command_line_spec_overrides_take_effect() -> None:
    """`overrides.optim.epochs=3` used to update the spec's `overrides` after they had been
    applied to the base, so it was accepted and ignored (the base kept 12 epochs)."""
    spec = load_search_spec(QUICKSTART, ["overrides.optim.epochs=3", "space.itt.freeze_epochs."
                                         "high=3"])
    assert spec.base.optim.epochs == 3 and spec.overrides["optim.epochs"] == 3
    grid = load_grid(TABLE7, ["overrides.optim.epochs=5", "overrides.itt.teacher_lr=0.002"])
    assert grid.base.optim.epochs == 5 and grid.base.itt.teacher_lr == 0.002
    assert grid.cell_config(grid.rows[0].name, 0).optim.epochs == 5
    assert grid.base.itt.freeze_epochs == 3  # the file's other overrides still apply


@pytest.mark.parametrize("order", [1, -1])
def test_base_on_the_command_line_wins_over_the_spec_overrides(order: int) -> None:
    """base file -> the spec's overrides (file, then command line) -> command-line base.*,
    whatever the order the command line gives them in."""
    argv = ["base.optim.epochs=6", "overrides.optim.epochs=3", "space.itt.freeze_epochs.high=3"]
    spec = load_search_spec(QUICKSTART, argv[::order])
    assert spec.base.optim.epochs == 6 and spec.overrides["optim.epochs"] == 3


def test_a_command_line_entry_wins_over_a_nested_file_entry(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", TINY)
    spec = {**SPEC, "base": "base.yaml", "overrides": {"optim": {"epochs": 2, "lr": 0.05}}}
    loaded = load_search_spec(write(tmp_path / "s.yaml", spec), ["overrides.optim.epochs=3"])
    assert loaded.base.optim.epochs == 3 and loaded.base.optim.lr == 0.05


def test_spec_overrides_are_set_as_values(tmp_path: Path) -> None:
    """The old text round trip (json.dumps then YAML) turned 1e-05 into the string '1e-05'
    wherever pydantic does not coerce, e.g. an architecture argument."""
    spec = {**SPEC, "overrides": {"student.kwargs.scale": 1e-05}}
    loaded = load_search_spec(write(tmp_path / "s.yaml", spec))
    assert loaded.base.student.kwargs["scale"] == 1e-05
    assert isinstance(loaded.base.student.kwargs["scale"], float)


def test_command_line_overrides_reach_the_run(workdir, capsys) -> None:
    assert main(["validate", QUICKSTART, "overrides.optim.epochs=20"]) == 0
    assert "20 epochs on digits" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "key", "example"), [
    (["train", "{c}", "optim={}"], "optim", "optim.epochs"),
    (["validate", "{c}", "teachers.robust.train={}"], "teachers.robust.train", None),
    (["validate", "{c}", "method={}"], "method", "method.alpha"),
    (["search", QUICKSTART, "base.optim={}"], "base.optim", "base.optim.epochs"),
    (["validate", QUICKSTART, "overrides.eval={}"], "overrides.eval", "overrides.eval.w"),
    (["grid", str(TABLE7), "resources={}"], "resources", "resources.cpu"),
])
def test_an_empty_mapping_may_not_reset_a_section(workdir, capsys, argv, key, example) -> None:
    """`optim={}` replaced the file's whole `optim` with defaults (300 epochs), silently."""
    cfg = write(workdir / "c.yaml", TINY)
    err = run_bad(workdir, capsys, [a.replace("{c}", str(cfg)) for a in argv])
    if example is None:  # an optional group: `{}` is not refused as a reset (validation is)
        assert "would reset" not in err and f"field `{key}.method`: Field required" in err
        return
    assert f"`{key}={{}}` would reset every field of `{key}` to its default; set fields one " \
           f"by one, e.g. {example}=VALUE" in err, err


def test_empty_mappings_that_reset_nothing_are_kept(tmp_path: Path) -> None:
    """`{}` of a plain mapping, of an optional group (`confirm={}` turns the stage on) and a
    whole non-empty section (it says what it holds) are still taken."""
    cfg = write(tmp_path / "c.yaml", TINY)
    loaded = load_config(cfg, ["student.kwargs={}", "optim={epochs: 5}"])
    assert loaded.student.kwargs == {} and loaded.optim.epochs == 5 and loaded.optim.lr == 0.1
    assert load_search_spec(QUICKSTART, ["confirm={}", "overrides={}"]).confirm is not None


# --- 4. typos inside the space -----------------------------------------------------------------

def test_a_typo_in_a_space_key_names_the_key(workdir, capsys) -> None:
    err = run_bad(workdir, capsys, ["search", QUICKSTART, "space.method.alpah.high=0.9"])
    assert ("field `space`: no parameter `method.alpah` in the space (did you mean "
            "`method.alpha`?)") in err
    assert "space.method.type" not in err


def test_a_typo_in_a_parameter_field_names_the_field(workdir, capsys) -> None:
    err = run_bad(workdir, capsys, ["search", QUICKSTART, "space.method.alpha.hihg=0.9"])
    assert "field `space.method.alpha.hihg`: unknown key (did you mean " \
           "`space.method.alpha.high`?)" in err


def test_a_missing_parameter_without_a_close_key_lists_the_space(workdir, capsys) -> None:
    err = run_bad(workdir, capsys, ["search", QUICKSTART, "space.zzz.high=1"])
    assert "no parameter `zzz` in the space" in err and "`push_temp`" in err


def test_space_overrides_set_existing_keys_and_add_whole_parameters() -> None:
    spec = load_search_spec(QUICKSTART, ["space.method.alpha.high=0.9",
                                         "space.optim.lr={type: float, low: 0.01, high: 0.1}",
                                         "searcher.points_to_evaluate=[]"])
    assert spec.space["method.alpha"].high == 0.9 and spec.space["method.alpha"].low == 0.1
    assert spec.space["optim.lr"].type == "float" and spec.space["optim.lr"].high == 0.1
    assert spec.trial_config({"optim.lr": 0.02}).optim.lr == 0.02


def test_a_typo_in_a_space_key_of_the_file_suggests_the_path(tmp_path: Path) -> None:
    spec = {**SPEC, "space": {"method.alpah": {"type": "float", "low": 0.1, "high": 0.2}}}
    with pytest.raises(ConfigError, match=r"unknown config path `method.alpah` \(did you mean "
                       r"`method.alpha`\?\)"):
        load_search_spec(write(tmp_path / "s.yaml", spec))


# --- 5. switching the method ----------------------------------------------------------------------

def test_switching_the_method_drops_the_old_fields_with_a_warning(workdir, capsys) -> None:
    cfg_path = write(workdir / "c.yaml", CIARD_TINY)
    cfg = load_config(cfg_path, ["method.name=trades"])
    assert cfg.method.name == "trades" and cfg.method.beta == 0.7  # kept, and said so
    note = ("method.name=trades: dropped CIARD fields alpha, lam, push_student_temp (not TRADES "
            "parameters); kept beta=0.7 from the CIARD settings (TRADES defaults: beta=6.0)")
    assert config_warnings(cfg) == [note]
    assert main(["validate", str(cfg_path), "method.name=trades"]) == 0
    captured = capsys.readouterr()
    err = captured.err.replace("\n    ", " ")  # folded at 120 columns (core.console.fit)
    assert f"ablate: warning: {note}" in err and "method trades" in captured.out


def test_a_new_method_field_set_with_it_is_kept(workdir) -> None:
    cfg = load_config(write(workdir / "c.yaml", CIARD_TINY), ["method.name=ard",
                                                              "method.temp=10"])
    assert cfg.method.name == "ard" and cfg.method.temp == 10 and cfg.method.alpha == 0.3
    assert "dropped CIARD fields beta, lam, push_student_temp" in config_warnings(cfg)[0]


def test_an_old_method_field_set_with_the_switch_is_still_an_error(workdir, capsys) -> None:
    cfg = write(workdir / "c.yaml", CIARD_TINY)
    err = run_bad(workdir, capsys, ["train", str(cfg), "method.name=trades", "method.lam=0.1"])
    assert "field `method.lam`: unknown key" in err


def test_a_whole_method_mapping_replaces_without_a_note(workdir) -> None:
    cfg = load_config(write(workdir / "c.yaml", CIARD_TINY), ["method={name: trades}"])
    assert cfg.method.beta == 6.0 and config_warnings(cfg) == []
    same = load_config(write(workdir / "c.yaml", CIARD_TINY), ["method.alpha=0.2"])
    assert same.method.alpha == 0.2 and config_warnings(same) == []


def test_switching_the_method_of_a_spec_or_grid_base(workdir, capsys) -> None:
    spec = {**SPEC, "base": CIARD_TINY,
            "space": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.1}}}
    path = write(workdir / "s.yaml", spec)
    loaded = load_search_spec(path, ["base.method.name=pgd_at"])
    assert loaded.base.method.name == "pgd_at"
    assert loaded.warnings()[0].startswith("base: method.name=pgd_at: dropped CIARD fields "
                                           "alpha, beta, lam, push_student_temp")
    assert main(["search", str(path), "--dry-run", "base.method.name=pgd_at"]) == 0
    assert "warning: base: method.name=pgd_at: dropped" in capsys.readouterr().err
    grid = load_grid(write(workdir / "g.yaml", GRID), ["overrides.method.name=trades"])
    assert grid.cell_config("b", 0).method.name == "trades"
    assert grid.warnings()[0].startswith("base: method.name=trades: dropped CIARD fields")


# --- 6. a file given to the wrong command ---------------------------------------------------------

@pytest.mark.parametrize(("command", "doc", "needle"), [
    (["train"], SPEC, "is a search spec: use `ablate search {f}`"),
    (["teachers", "train"], SPEC, "is a search spec: use `ablate search {f}`"),
    (["train"], GRID, "is a grid: use `ablate grid {f}`"),
    (["search"], TINY, "is an experiment config: use `ablate train {f}`"),
    (["search"], GRID, "is a grid: use `ablate grid {f}`"),
    (["grid"], SPEC, "is a search spec: use `ablate search {f}`"),
    (["grid"], TINY, "is an experiment config: use `ablate train {f}`"),
])
def test_a_file_of_another_kind_names_the_command(workdir, capsys, command, doc, needle) -> None:
    path = str(write(workdir / "f.yaml", doc))
    err = run_bad(workdir, capsys, [*command, path])
    assert err == f"ablate: error: {path} " + needle.format(f=path)


def test_validate_still_takes_all_three_kinds(workdir, capsys) -> None:
    for name, doc in (("c.yaml", TINY), ("s.yaml", SPEC), ("g.yaml", GRID)):
        assert main(["validate", str(write(workdir / name, doc))]) == 0, capsys.readouterr()
        assert "OK" in capsys.readouterr().out


def test_a_spec_whose_base_is_not_an_experiment(workdir, capsys) -> None:
    write(workdir / "other.yaml", SPEC)
    path = write(workdir / "s.yaml", {**SPEC, "base": "other.yaml"})
    err = run_bad(workdir, capsys, ["search", str(path)])
    assert "field `base`: " in err and "other.yaml is a search spec, not an experiment" in err


# --- 7. tracking URIs: database drivers, MLFLOW_TRACKING_URI --------------------------------------

@pytest.mark.parametrize(("uri", "module", "install"), [
    ("mysql+pymysql://db/mlflow", "pymysql", "pip install pymysql"),
    ("mssql+pymssql://db/mlflow", "pymssql", "pip install pymssql"),
    ("mssql://db/mlflow", "pyodbc", "pip install pyodbc"),
    ("postgresql+psycopg2://u:p@db:5432/mlflow", "psycopg2", "pip install 'ablate[postgres]'"),
])
def test_a_database_uri_needs_its_driver(workdir, capsys, monkeypatch, uri, module,
                                         install) -> None:
    cfg = write(workdir / "c.yaml", TINY)
    if find_spec(module) is None:  # refused, naming what to install
        err = run_bad(workdir, capsys, ["train", str(cfg), "--tracking-uri", uri])
        assert f"driver {module}" in err and f"({install})" in err and "not installed" in err
    (workdir / "drivers" / module).mkdir(parents=True)
    (workdir / "drivers" / module / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(workdir / "drivers"))
    check_tracking_uri(uri)  # importable: accepted


def test_plain_postgresql_names_the_extra(workdir, capsys) -> None:
    if find_spec("psycopg") or find_spec("psycopg2"):
        pytest.skip("a PostgreSQL driver is installed here")
    err = run_bad(workdir, capsys, ["report", "x", "--tracking-uri", "postgresql://db/mlflow"])
    assert "PostgreSQL driver" in err and "pip install 'ablate[postgres]'" in err


def test_a_bad_mlflow_tracking_uri_exits_2_naming_the_variable(workdir, capsys,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////no/such/dir/m.db")
    cfg = write(workdir / "c.yaml", TINY)
    for argv in (["train", str(cfg)], ["report", "x"], ["eval", "x"], ["search", QUICKSTART]):
        err = run_bad(workdir, capsys, argv)
        assert "MLFLOW_TRACKING_URI='sqlite:////no/such/dir/m.db'" in err, err
        assert "/no/such/dir does not exist" in err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "mssql+nosuchdriver://db/mlflow")
    assert "MLFLOW_TRACKING_URI=" in run_bad(workdir, capsys, ["train", str(cfg)])


def test_the_flag_wins_over_the_variable(workdir, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////no/such/dir/m.db")
    uri = f"sqlite:///{workdir / 'other.db'}"
    err = run_bad(workdir, capsys, ["eval", "0123abcd", "--tracking-uri", uri])
    assert "MLFLOW_TRACKING_URI" not in err and uri in err  # no store there, so no run id


def test_default_uri_honours_mlflow_tracking_uri(workdir, capsys, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    assert default_uri() == local
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert default_uri() == local  # empty: unset
    env = f"sqlite:///{workdir / 'env.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    assert default_uri() == env
    err = run_bad(workdir, capsys, ["eval", "0123abcd"])  # refused before a store is made
    assert env in err and not (workdir / "env.db").exists()


def test_uri_refusals_load_no_heavy_package(workdir) -> None:
    """The driver is looked up, not imported, and nothing heavy loads before the refusal."""
    probe = ("import sys\nfrom ablate.cli import main\nrc = main(sys.argv[1:])\n"
             "print(rc, [m for m in ('torch', 'ray', 'mlflow', 'sqlalchemy', 'psycopg2') "
             "if m in sys.modules])")
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "MLFLOW_TRACKING_URI": "mysql+nosuchdriver://db/m"}
    flag = ["--tracking-uri", "postgresql+nosuchdriver://db/m"]
    for argv in (["report", "x"], ["report", "x", *flag]):
        proc = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                              text=True, cwd=workdir, env=env)
        assert proc.stdout.strip().splitlines()[-1] == "2 []", proc.stdout + proc.stderr


def test_a_password_in_a_tracking_uri_is_never_printed(workdir, capsys) -> None:
    uri = "mssql+pymssql://ablate:s3cret@127.0.0.1:1/mlflow"
    assert redact(uri) == "mssql+pymssql://ablate:***@127.0.0.1:1/mlflow"
    if find_spec("pymssql") is None:  # refused for the driver: the message shows the URI
        err = run_bad(workdir, capsys, ["train", str(write(workdir / "c.yaml", TINY)),
                                        "--tracking-uri", uri])
        assert "ablate:***@127.0.0.1" in err and "s3cret" not in err
    args = _parse(["grid", "g.yaml", "--tracking-uri", "http://ablate:s3cret@mlflow.lab:5000"])
    hint = _options(args, ["ablate", "grid", "g.yaml"]).command  # printed after Ctrl-C
    assert "http://ablate:***@mlflow.lab:5000" in hint and "s3cret" not in hint
