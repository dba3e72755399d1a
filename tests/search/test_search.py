"""`ablate search` for real: a local Ray runtime, Optuna, ASHA, a real MLflow SQLite store and
the bundled digits data. Bad input exits 2 before Ray starts; a diverging trial fails with its
reason while the others finish; an interrupted search resumes without re-training anything."""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pyarrow.parquet as pq
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from ablate import names
from ablate.cli import main
from ablate.config import dump_yaml, load_search_spec
from ablate.core.errors import ConfigError
from ablate.search import SearchFacts, SearchJob
from ablate.search.job import tune_config
from ablate.search.study import at_fidelity
from ablate.search.summary import dashboard_note, in_driver, on_one_machine
from ablate.search.trials import param_columns
from ablate.tracking import flatten
from tests.helpers import (
    REPO,
    SPEC,
    assert_interrupted,
    duplicated_rows,
    interrupt_after_first_trial,
    run_bad,
    runs_by_kind,
    steps,
    store,
    write,
)


def test_dry_run_prints_the_plan_without_cifar_or_gpu(workdir: Path, capsys) -> None:
    assert main(["search", str(REPO / "search_spaces/ciard.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "trials of ciard on cifar10" in out and "resources per trial" in out
    assert out.startswith("search ciard") and "\nbase:" not in out  # the plan, no YAML
    assert out.rstrip().endswith("the resolved spec as YAML: add --show-config")
    assert main(["search", str(REPO / "search_spaces/ciard.yaml"), "--dry-run",
                 "--show-config"]) == 0
    shown = capsys.readouterr().out
    assert shown.index("resources per trial") < shown.index("resolved spec (--show-config):")
    assert "\nbase:\n" in shown and "\nspace:\n" in shown
    assert main(["search", str(REPO / "search_spaces/ciard.yaml"), "--show-config"]) == 2
    assert "--show-config only applies to --dry-run" in capsys.readouterr().err
    assert not ray.is_initialized() and not (workdir / "mlflow.db").exists()


def test_real_run_without_cifar_fails_before_ray_starts(workdir: Path, capsys) -> None:
    err = run_bad(workdir, capsys, ["search", str(REPO / "search_spaces/ciard.yaml"),
                                    "base.data.root=" + str(workdir / "nowhere")])
    assert "nowhere" in err and "cifar" in err.lower()
    assert not ray.is_initialized()


@pytest.mark.parametrize("extra, needle", [
    (["resources.cpu=64"], "resources.cpu"),
    (["space.optim.lr.choices=[]"], "non-empty"),
    (["--resume"], "no search to resume"),
])
def test_bad_search_exits_2_before_anything_starts(workdir: Path, capsys, extra: list[str],
                                                   needle: str) -> None:
    spec = write(workdir / "spec.yaml", SPEC)
    err = run_bad(workdir, capsys, ["search", str(spec), *extra])
    assert needle in err
    assert not ray.is_initialized()


def test_search_logs_parent_and_children_and_reports_a_diverging_trial(workdir: Path,
                                                                        capsys) -> None:
    spec = copy.deepcopy(SPEC)
    spec["space"]["optim.lr"]["choices"].append(1e30)
    spec["searcher"]["points_to_evaluate"] = [
        {"method.alpha": 0.5, "itt.teacher_lr": 1e-3, "optim.lr": 1e30}]
    code = main(["search", str(write(workdir / "spec.yaml", spec)), "--heartbeat", "0.5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"^\[\d+m\d\ds\] \d running, \d done, \d stopped early, \d failed of 5; ",
                     out, re.MULTILINE), out
    client, exp = store(workdir)
    parent, children = runs_by_kind(client, exp)
    assert parent.info.status == "FINISHED" and len(children) == 5
    failed = [c for c in children if c.info.status == "FAILED"]
    assert failed and all("not finite" in c.data.tags["error"] for c in failed)
    assert "FAILED: FloatingPointError: diverged in epoch 1" in out
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert finished, out
    for c in finished:  # one metric point per trained epoch, no duplicates
        trained = int(c.data.tags["epochs_trained"])
        assert steps(client, c) == list(range(1, trained + 1)) and 1 <= trained <= 4
        # params: only what varies; the full config is the run's config.yaml
        assert set(c.data.params) == {*spec["space"], "method"}
        config = Path(client.download_artifacts(c.info.run_id, "config.yaml", str(workdir)))
        assert yaml.safe_load(config.read_text())["optim"]["epochs"] == 4
        assert c.info.run_name.startswith(f"trial-{int(c.data.tags['trial_number']):02d}-")
        assert c.info.run_name.endswith("-stopped") == (c.data.tags["stopped_early"] == "true")
    assert any(c.data.tags["stopped_early"] == "true" for c in finished), "ASHA stopped none"

    table = pq.read_table(client.download_artifacts(parent.info.run_id, "trials.parquet"))
    rows = table.to_pylist()
    assert len(rows) == 5 and {r["trial_id"] for r in rows} == {
        c.data.tags["trial_id"] for c in children}
    assert [r["trial"] for r in rows] == [1, 2, 3, 4, 5]
    assert any(r["pareto"] for r in rows) and not rows[0]["pareto"]
    assert rows[0]["status"] == "failed" and rows[0]["param/optim_lr"] == 1e30
    for r in rows:  # the run-level push diagnostics of every trial that trained
        if r["status"] != "failed":
            assert 0 <= r["push_active"] <= 1 and 0 <= r["push_empty"] <= 1
    best = max((r for r in rows if r["status"] != "failed"), key=lambda r: r["val/best_w_acc"])
    assert parent.data.tags["best_trial"] == best["trial_id"]
    assert 0 <= parent.data.metrics["test/clean_acc"] <= 1
    assert "test/pgd_sat_acc" in parent.data.metrics and "test/robust_acc" not in (
        parent.data.metrics)
    assert parent.data.metrics["best/val/best_w_acc"] == pytest.approx(best["val/best_w_acc"])
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_config.yaml", "trials.parquet", "trials.csv", "trials.md", "trials.json",
            "importances.json"} <= names
    assert_trials_artifacts(client, parent.info.run_id, rows)
    assert_importances(client, parent.info.run_id, rows, epochs=4)
    assert_study(client, parent, rows, workdir)
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "optuna")] == [
        "optuna/figures.html"]
    page = Path(client.download_artifacts(parent.info.run_id, "optuna/figures.html",
                                          str(workdir))).read_text()
    assert [h for h in ("history", "parallel coordinate", "slice", "contour", "importances",
                        "pareto front") if f"<h2>{h}</h2>" in page] == [
        "history", "parallel coordinate", "slice", "contour", "importances"]
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/objective.png", "plots/pareto.png", "plots/importances.png",
                     "plots/best_curves.png"}
    best_cfg = yaml.safe_load(Path(client.download_artifacts(
        parent.info.run_id, "best_config.yaml")).read_text())
    assert best_cfg["method"]["alpha"] == pytest.approx(best["param/method_alpha"])

    # `ablate eval PARENT` evaluates the best trial's checkpoint and logs into that trial's run.
    assert main(["eval", parent.info.run_id, "--attacks", "fgsm"]) == 0
    assert "FGSM" in capsys.readouterr().out
    (best_run,) = [c for c in children if c.data.tags["trial_id"] == best["trial_id"]]
    evaluated = client.get_run(best_run.info.run_id).data.metrics
    assert "test/fgsm_acc" in evaluated
    # The search's final test (run in the driver: Ray is this one machine) measured the same
    # student: `ablate eval` recomputes its clean accuracy from the checkpoint independently.
    assert on_one_machine()
    assert evaluated["test/clean_acc"] == pytest.approx(parent.data.metrics["test/clean_acc"])

    # `ablate report PARENT` rebuilds the summary from MLflow alone: the same table, printed
    # and logged again (replaced, not appended to), the study rebuilt, the best trial's test.
    for target in (parent.info.run_id, "tiny-search"):  # a run id, or the experiment's name
        assert main(["report", target]) == 0
        out = capsys.readouterr().out
        assert "| trial | status | epochs | param/itt_teacher_lr | param/method_alpha |" in out
        assert f"best trial {best['trial_id']}: val W" in out and "test (best epoch" in out
        again = pq.read_table(client.download_artifacts(parent.info.run_id, "trials.parquet"))
        keys = ["trial", "trial_id", "status", "epochs", "param/method_alpha",
                "param/itt_teacher_lr", "param/optim_lr", "val/best_w_acc", "pareto"]
        assert [{k: r[k] for k in keys} for r in again.to_pylist()] == [
            {k: r[k] for k in keys} for r in rows]
        assert_trials_artifacts(client, parent.info.run_id, rows)
        assert_importances(client, parent.info.run_id, rows, epochs=4)
        assert_study(client, client.get_run(parent.info.run_id), rows, workdir)


def download(client: MlflowClient, run_id: str, path: str) -> Path:
    return Path(client.download_artifacts(run_id, path))


def assert_trials_artifacts(client: MlflowClient, run_id: str, rows: list[dict]) -> None:
    """trials.json (the MLflow table), .csv and .md hold the rows of trials.parquet, under
    column names without dots (MLflow's table view shows a dotted column blank)."""
    columns = list(rows[0])
    assert not any("." in c for c in columns)
    assert {"param/method_alpha", "param/itt_teacher_lr", "param/optim_lr"} <= set(columns)
    table = json.loads(download(client, run_id, "trials.json").read_text())
    assert table["columns"] == columns and len(table["data"]) == len(rows)
    with download(client, run_id, "trials.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert list(lines[0]) == columns
    assert [r["trial_id"] for r in lines] == [r["trial_id"] for r in rows]
    markdown = download(client, run_id, "trials.md").read_text()
    assert markdown.startswith("| trial | status | epochs | param/itt_teacher_lr | "
                               "param/method_alpha | param/optim_lr | val W-acc (%) |")
    for r in rows:
        assert f"\n| {r['trial']} | {r['status']} | {r['epochs']} |" in markdown


def assert_importances(client: MlflowClient, run_id: str, rows: list[dict],
                       epochs: int) -> None:
    """importances.json is JSON and names the epoch its trials reached: the last one that
    min(5, trials that trained) trials reached."""
    info = json.loads(download(client, run_id, "importances.json").read_text())
    assert info["metric"] == "val/best_w_acc" and info["max_epochs"] == epochs
    reached = {r["trial"]: r["epochs"] for r in rows if r["epochs"] >= 1}
    need = min(5, len(reached))
    assert sum(e >= info["epoch"] for e in reached.values()) >= need
    assert sum(e > info["epoch"] for e in reached.values()) < need
    assert info["trial_numbers"] == [t for t, e in reached.items() if e >= info["epoch"]]
    assert info["trials"] == len(info["trial_numbers"])
    assert set(info["importances"]) <= {"method.alpha", "itt.teacher_lr", "optim.lr"}


def assert_study(client: MlflowClient, parent: Any, rows: list[dict], workdir: Path) -> None:
    """The Optuna study opens from optuna.db beside mlflow.db: the one the searcher wrote as
    trials reported (never rebuilt by a summary or `ablate report`): one trial per trial, its
    Ray trial id as a user attribute; COMPLETE with the objective when it ran every epoch,
    PRUNED when ASHA stopped it (with its per-epoch values), FAIL when it failed."""
    tags = parent.data.tags
    assert tags["optuna_storage"] == f"sqlite:///{(workdir / 'optuna.db').resolve()}"
    assert tags["optuna_study"] == f"tiny-search-{tags['spec_hash']}-{parent.info.run_id}"
    study = optuna.load_study(study_name=tags["optuna_study"], storage=tags["optuna_storage"])
    assert study.metric_names == ["val/best_w_acc"]
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert len(study.trials) == len(rows)
    by_id = {r["trial_id"]: r for r in rows}
    state = {"failed": optuna.trial.TrialState.FAIL, "stopped": optuna.trial.TrialState.PRUNED,
             "finished": optuna.trial.TrialState.COMPLETE}
    for t in study.trials:
        r = by_id[t.user_attrs["ray_trial_id"]]
        assert t.state == state[r["status"]], (t.number, r)
        assert t.params["method.alpha"] == pytest.approx(r["param/method_alpha"])
        if r["status"] == "failed":
            continue
        assert sorted(t.intermediate_values) == list(range(1, r["epochs"] + 1))
        if r["status"] == "finished":
            assert t.value == pytest.approx(r["val/best_w_acc"])


def test_multi_objective_search_reports_the_pareto_front(workdir: Path, capsys) -> None:
    spec = copy.deepcopy(SPEC) | {"num_samples": 3, "max_concurrent": 2,
                                  "objective": {"metric": ["clean_acc", "robust_acc"]}}
    spec["base"]["optim"]["epochs"] = 2
    assert main(["search", str(write(workdir / "spec.yaml", spec))]) == 0
    out = capsys.readouterr().out
    client, exp = store(workdir)
    parent, children = runs_by_kind(client, exp)
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    rows = pq.read_table(client.download_artifacts(parent.info.run_id,
                                                   "trials.parquet")).to_pylist()
    front = [(r["val/best_clean_acc"], r["val/best_robust_acc"]) for r in rows if r["pareto"]]
    for r in rows:  # every trial off the front is dominated by one on it
        point = (r["val/best_clean_acc"], r["val/best_robust_acc"])
        assert r["pareto"] or any(f[0] >= point[0] and f[1] >= point[1] for f in front)
    assert "Pareto front" in out and "test (best epoch" in out
    page = Path(client.download_artifacts(parent.info.run_id, "optuna/figures.html",
                                          str(workdir))).read_text()
    assert "<h2>pareto front</h2>" in page
    tags = parent.data.tags
    study = optuna.load_study(study_name=tags["optuna_study"], storage=tags["optuna_storage"])
    assert len(study.directions) == 2 and len(study.trials) == 3
    assert study.metric_names == ["val/best_clean_acc", "val/best_robust_acc"]
    assert {tuple(t.values) for t in study.best_trials} == set(front)


def test_interrupted_search_resumes_without_retraining(workdir: Path) -> None:
    spec = copy.deepcopy(SPEC) | {"num_samples": 4, "max_concurrent": 2}
    spec["scheduler"] = {"name": "none"}
    path = write(workdir / "spec.yaml", spec)
    cmd = [sys.executable, "-m", "ablate.cli", "search", str(path)]
    env = dict(os.environ, ABLATE_CACHE=str(workdir / "cache"))
    interrupt_after_first_trial(cmd, workdir, env)

    client, exp = store(workdir)
    assert_interrupted(client, *runs_by_kind(client, exp))
    before = {c.data.tags["trial_id"]: steps(client, c)
              for c in client.search_runs([exp]) if c.info.status == "FINISHED"
              and c.data.tags.get("kind") == "trial"}
    assert before
    trial_dirs = list((workdir / "runs/ray").glob("*/trial_*"))
    results = {d.name: (d / "result.json").read_text() for d in trial_dirs
               if any(d.name.endswith(t) for t in before)}

    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=workdir,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    parent, children = runs_by_kind(client, exp)
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert parent.data.tags["interrupted"] == "false"
    assert all(c.info.status == "FINISHED" for c in children)
    assert not any(duplicated_rows(client, r) for r in (parent, *children))
    for c in children:  # no epoch logged twice, by the interrupted trial either
        assert steps(client, c) == [1, 2, 3, 4]
    for tid, history in before.items():  # finished trials were not trained again
        child = next(c for c in children if c.data.tags["trial_id"] == tid)
        assert steps(client, child) == history
    assert results  # the finished trials' result files were found
    for name, text in results.items():
        after = next((workdir / "runs/ray").glob(f"*/{name}")) / "result.json"
        assert after.read_text() == text
        assert [json.loads(ln)["training_iteration"] for ln in text.splitlines()] == [1, 2, 3, 4]


def test_a_final_test_in_the_driver_gives_back_its_thread_count() -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert in_driver(lambda n: torch.set_num_threads(n) or torch.get_num_threads(), 1) == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(ZeroDivisionError):
            in_driver(lambda: torch.set_num_threads(1) or 1 / 0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_trials_table_columns_have_no_dots_and_a_fixed_rule() -> None:
    assert param_columns(["method.alpha", "push_temp", "itt.teacher_lr"]) == {
        "method.alpha": "param/method_alpha", "push_temp": "param/push_temp",
        "itt.teacher_lr": "param/itt_teacher_lr"}
    # two keys that meet: the later in sorted order gets _2, whatever order the space has
    for keys in (["a.b", "a_b"], ["a_b", "a.b"]):
        assert param_columns(keys) == {"a.b": "param/a_b", "a_b": "param/a_b_2"}


def test_importances_compare_trials_at_the_last_epoch_enough_of_them_reached() -> None:
    histories = {"a": {1: .1, 2: .2, 3: .3, 4: .4}, "b": {1: .2, 2: .3}, "c": {1: .1},
                 "d": {1: .5, 2: .1}, "failed": {}}
    assert at_fidelity(histories, min_trials=3) == (2, {"a": .2, "b": .3, "d": .1})
    assert at_fidelity(histories, min_trials=1) == (4, {"a": .4})
    assert at_fidelity(histories, min_trials=9) == (1, {"a": .1, "b": .2, "c": .1, "d": .5})
    assert at_fidelity({"failed": {}}) == (0, {})


def test_report_reads_the_search_back_from_the_parent_runs_params(workdir: Path) -> None:
    """What `ablate report` knows of a search comes from the params its parent run logged
    (each value as str() wrote it): the same as the spec's."""
    spec = copy.deepcopy(SPEC) | {"objective": {"metric": ["clean_acc", "robust_acc"]}}
    spec["space"]["push_temp"] = {"type": "float", "low": 1, "high": 8,
                                  "paths": ["method.push_student_temp",
                                            "method.push_teacher_temp"]}
    spec["space"]["itt.freeze_epochs"] = {"type": "int", "low": 0, "high": 3}
    spec["space"]["attack.objective"] = {"type": "categorical",
                                         "choices": ["ce", "kl_clean_teacher"]}
    spec["base"]["eval"]["attacks"] = ["fgsm"]
    spec["space"] = dict(reversed(spec["space"].items()))  # not alphabetical
    (workdir / "spec.yaml").write_text(dump_yaml(spec, sort_keys=False))
    loaded = load_search_spec(workdir / "spec.yaml")
    params = {k: str(v) for k, v in sorted(flatten(SearchJob(loaded).parent_params()).items())
              if v is not None}  # sorted by name, as MLflow may return them
    info = {"run_id": "r", "experiment": loaded.name, "params": params,
            "tags": {"spec_hash": loaded.digest()}}
    assert SearchFacts.from_run(info) == SearchFacts.of(loaded)
    assert list(SearchFacts.from_run(info).space) == list(loaded.space)  # the spec's order
    assert list(loaded.space) != sorted(loaded.space)
    assert SearchFacts.of(loaded).multi and SearchFacts.of(loaded).attacks == ("fgsm",)
    with pytest.raises(ConfigError, match="do not hold a search spec"):
        SearchFacts.from_run(info | {"params": {"grid.seeds": "[0]"}})


def test_random_search_is_a_searcher_choice(tmp_path: Path) -> None:
    spec = load_search_spec(write(tmp_path / "s.yaml", SPEC), ["searcher.name=optuna_random"])
    searcher = tune_config(spec).search_alg
    assert isinstance(searcher._sampler, optuna.samplers.RandomSampler)
    assert spec.digest() != load_search_spec(tmp_path / "s.yaml").digest()
    assert isinstance(tune_config(load_search_spec(tmp_path / "s.yaml")).search_alg._sampler,
                      optuna.samplers.TPESampler)


def test_a_trial_asha_stopped_is_pruned_for_optuna_not_complete(tmp_path: Path) -> None:
    """TPE must not rank a value ASHA stopped at epoch 1 beside full-length values: the
    stopped trial is PRUNED (its per-epoch values kept), a finished one COMPLETE, a failed
    one FAIL; with the Pareto objective Ray's handling is left as it is."""
    spec = load_search_spec(write(tmp_path / "s.yaml", SPEC))
    epochs = spec.base.optim.epochs
    searcher = tune_config(spec).search_alg
    searcher.set_search_properties(names.OBJECTIVE, "max", {})
    for trial_id, last, error in (("stopped", 1, False), ("full", epochs, False),
                                  ("failed", 2, True)):
        assert searcher.suggest(trial_id) is not None
        for epoch in range(1, last + 1):
            searcher.on_trial_result(trial_id, {names.OBJECTIVE: 0.1 * epoch,
                                                "training_iteration": epoch})
        searcher.on_trial_complete(trial_id, None if error else {
            names.OBJECTIVE: 0.1 * last, "training_iteration": last}, error=error)
    trials = searcher._ot_study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE,
                      optuna.trial.TrialState.FAIL]
    assert trials[0].intermediate_values == {1: pytest.approx(0.1)}
    assert trials[1].value == pytest.approx(0.1 * epochs)


def test_the_printed_importances_are_optuna_dashboards_for_the_same_study(workdir: Path,
                                                                           capsys) -> None:
    """With every trial run to the end, the ranking the search prints is the one
    optuna-dashboard computes for the stored study (its own function, on its own read of the
    study); the study exists, with its objective named, from the moment the search starts."""
    from optuna_dashboard._importance import get_param_importance_from_trials_cache
    from optuna_dashboard._inmemory_cache import InMemoryCache

    spec = copy.deepcopy(SPEC) | {"num_samples": 6, "scheduler": {"name": "none"}}
    spec["base"]["optim"]["epochs"] = 1
    assert main(["search", str(write(workdir / "spec.yaml", spec)), "--heartbeat", "0"]) == 0
    out = capsys.readouterr().out
    assert "optuna-dashboard shows the same ranking: the same 6 COMPLETE trials" in out
    started = out.index("Optuna study tiny-search-")  # printed before the first trial ended
    first = re.search(r"^trial \d+ \(", out, re.MULTILINE)
    assert "written as trials report: " in out and first and started < first.start()
    assert f"{Path(sys.executable).parent / 'optuna-dashboard'} sqlite:///" in out
    client, exp = store(workdir)
    parent, _ = runs_by_kind(client, exp)
    info = json.loads(download(client, parent.info.run_id, "importances.json").read_text())
    assert info["trial_numbers"] == [1, 2, 3, 4, 5, 6] and info["epoch"] == 1
    storage = optuna.storages.RDBStorage(parent.data.tags["optuna_storage"])
    study = optuna.load_study(study_name=parent.data.tags["optuna_study"], storage=storage)
    theirs = get_param_importance_from_trials_cache(
        InMemoryCache(), storage, study._study_id, 0, study.get_trials(deepcopy=False))
    assert [d["name"] for d in theirs] == list(info["importances"])
    assert [d["importance"] for d in theirs] == pytest.approx(list(info["importances"].values()))


def test_the_dashboard_note_says_why_its_ranking_differs() -> None:
    facts = SimpleNamespace(multi=False, epochs=4)
    rows = [{"trial": 1, "status": "finished", "epochs": 4},
            {"trial": 2, "status": "stopped", "epochs": 2},
            {"trial": 3, "status": "finished", "epochs": 4}]
    at_two = {"epoch": 2, "trial_numbers": [1, 2, 3]}
    assert dashboard_note(facts, at_two, rows).startswith(
        "optuna-dashboard ranks only the 2 trials that ran all 4 epochs (COMPLETE in the study; "
        "those ASHA stopped are PRUNED there)")
    at_end = {"epoch": 4, "trial_numbers": [1, 3]}
    assert "the same 2 COMPLETE trials" in dashboard_note(facts, at_end, rows)
    assert "Pareto" in dashboard_note(SimpleNamespace(multi=True, epochs=4), at_end, rows)
