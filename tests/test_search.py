"""`ablate search` for real: a local Ray runtime, Optuna, ASHA, a real MLflow SQLite store and
the bundled digits data. Bad input exits 2 before Ray starts; a diverging trial fails with its
reason while the others finish; an interrupted search resumes without re-training anything."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray
import yaml

from ablate.cli import main
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


@pytest.fixture(scope="module", autouse=True)
def shutdown_ray() -> Any:
    yield
    ray.shutdown()


def test_dry_run_prints_the_plan_without_cifar_or_gpu(workdir: Path, capsys) -> None:
    assert main(["search", str(REPO / "search_spaces/ciard.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "trials of ciard on cifar10" in out and "resources per trial" in out
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
    code = main(["search", str(write(workdir / "spec.yaml", spec))])
    out = capsys.readouterr().out
    assert code == 0, out
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
        assert steps(client, c) == list(range(trained)) and 1 <= trained <= 4
        assert c.data.params["optim.epochs"] == "4"
    assert any(c.data.tags["stopped_early"] == "True" for c in finished), "ASHA stopped none"

    table = pq.read_table(client.download_artifacts(parent.info.run_id, "trials.parquet"))
    rows = table.to_pylist()
    assert len(rows) == 5 and {r["trial_id"] for r in rows} == {
        c.data.tags["trial_id"] for c in children}
    assert [r["trial"] for r in rows] == [1, 2, 3, 4, 5]
    assert any(r["pareto"] for r in rows) and not rows[0]["pareto"]
    assert rows[0]["status"] == "failed" and rows[0]["param/optim.lr"] == 1e30
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
    assert {"best_config.yaml", "trials.parquet", "trials.json", "importances.json"} <= names
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/objective.png", "plots/pareto.png", "plots/importances.png",
                     "plots/best_curves.png"}
    best_cfg = yaml.safe_load(Path(client.download_artifacts(
        parent.info.run_id, "best_config.yaml")).read_text())
    assert best_cfg["method"]["alpha"] == pytest.approx(best["param/method.alpha"])

    # `ablate eval PARENT` evaluates the best trial's checkpoint and logs into that trial's run.
    assert main(["eval", parent.info.run_id, "--attacks", "fgsm"]) == 0
    assert "FGSM" in capsys.readouterr().out
    (best_run,) = [c for c in children if c.data.tags["trial_id"] == best["trial_id"]]
    assert "test/fgsm_acc" in client.get_run(best_run.info.run_id).data.metrics


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
        assert steps(client, c) == list(range(4))
    for tid, history in before.items():  # finished trials were not trained again
        child = next(c for c in children if c.data.tags["trial_id"] == tid)
        assert steps(client, child) == history
    assert results  # the finished trials' result files were found
    for name, text in results.items():
        after = next((workdir / "runs/ray").glob(f"*/{name}")) / "result.json"
        assert after.read_text() == text
        assert [json.loads(ln)["training_iteration"] for ln in text.splitlines()] == [1, 2, 3, 4]
