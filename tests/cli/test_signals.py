"""Interrupted work is never reported as finished, and no run is lost or left dangling.

Real subprocesses, a real local Ray and a real MLflow store. Ctrl-C from a terminal reaches the
whole process group (Ray's workers too); ``test_search``/``test_grid`` cover SIGINT to the driver
only, followed by ``--resume``. SIGKILL of the driver leaves the store as it was at that instant;
``--resume`` must close it out with exactly one child run per trial and no metric row twice.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.helpers import (
    SPEC,
    assert_interrupted,
    duplicated_rows,
    edited,
    grid_runs,
    interrupt_after_first_trial,
    runs_by_kind,
    store,
    write,
)


def _env(workdir: Path) -> dict[str, str]:
    return dict(os.environ, ABLATE_CACHE=str(workdir / "cache"))


def test_ctrl_c_to_the_process_group_interrupts_a_search(workdir: Path) -> None:
    spec = copy.deepcopy(SPEC) | {"num_samples": 4, "max_concurrent": 2}
    spec["scheduler"] = {"name": "none"}
    cmd = [sys.executable, "-m", "ablate.cli", "search", str(write(workdir / "s.yaml", spec))]
    interrupt_after_first_trial(cmd, workdir, _env(workdir), group=True)
    client, exp = store(workdir)
    assert_interrupted(client, *runs_by_kind(client, exp))


def test_ctrl_c_to_the_process_group_interrupts_a_grid(workdir: Path) -> None:
    cmd = [sys.executable, "-m", "ablate.cli", "grid",
           str(write(workdir / "g.yaml", edited(seeds=[0, 1, 2])))]
    interrupt_after_first_trial(cmd, workdir, _env(workdir), group=True)
    client, parent, children = grid_runs(workdir)
    assert_interrupted(client, parent, children)
    assert "cells/finished" not in parent.data.metrics  # no table from a partial grid


def test_sigkill_then_resume_leaves_one_child_run_per_trial(workdir: Path) -> None:
    spec = copy.deepcopy(SPEC) | {"num_samples": 4, "max_concurrent": 2}
    spec["scheduler"] = {"name": "none"}
    cmd = [sys.executable, "-m", "ablate.cli", "search", str(write(workdir / "s.yaml", spec))]
    interrupt_after_first_trial(cmd, workdir, _env(workdir), sig=signal.SIGKILL)
    client, exp = store(workdir)
    parent, children = runs_by_kind(client, exp)
    assert parent.info.status == "RUNNING"  # what a killed driver leaves behind
    # A driver killed between creating a trial's child run and Ray saving its state loses that
    # trial; whether the kill lands there is timing, so also plant such a run.
    lost = client.create_run(exp, run_name="trial-lost", tags={
        "kind": "trial", "trial_id": "lost0001", "mlflow.parentRunId": parent.info.run_id})

    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=workdir,
                          env=_env(workdir), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "discarded the child run of trial lost0001" in done.stdout
    parent, children = runs_by_kind(client, exp)
    ids = [c.data.tags["trial_id"] for c in children]
    assert parent.info.status == "FINISHED" and sorted(ids) == sorted(set(ids))
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert client.get_run(lost.info.run_id).info.lifecycle_stage == "deleted"
    for run in (parent, *children):
        assert not duplicated_rows(client, run), run.info.run_name

    # Resuming a finished search again re-summarises without adding a single metric row.
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=workdir,
                           env=_env(workdir), timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    parent, children = runs_by_kind(client, exp)
    assert len(children) == 4 and not duplicated_rows(client, parent)


def test_concurrent_commands_create_one_store_without_losing_a_run(tmp_path: Path) -> None:
    """Four processes open a fresh ``mlflow.db`` at once; each logs its run."""
    script = ("import sys; from ablate.tracking import Tracker; t = Tracker(sys.argv[1]); "
              "r = t.start(sys.argv[2], 'r'); t.log_metrics(r, {'m': 1.0}, 0); t.end(r)")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", script, uri, f"exp{i % 2}"],
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    client = MlflowClient(uri)
    runs = [r for e in ("exp0", "exp1")
            for r in client.search_runs([client.get_experiment_by_name(e).experiment_id])]
    assert len(runs) == 4 and all(r.data.metrics == {"m": 1.0} for r in runs)
