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


# --- SIGTERM and SIGHUP: what batch systems send take the Ctrl-C path ----------------------


def test_sigterm_to_the_driver_interrupts_a_search_that_resumes(workdir: Path) -> None:
    spec = copy.deepcopy(SPEC) | {"num_samples": 3, "max_concurrent": 1}
    spec["scheduler"] = {"name": "none"}
    cmd = [sys.executable, "-m", "ablate.cli", "search", str(write(workdir / "s.yaml", spec))]
    lines = interrupt_after_first_trial(cmd, workdir, _env(workdir), sig=signal.SIGTERM)
    assert not any("SIGTERM received" in ln or "Traceback" in ln for ln in lines), lines
    client, exp = store(workdir)
    assert_interrupted(client, *runs_by_kind(client, exp))
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=workdir,
                          env=_env(workdir), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    parent, children = runs_by_kind(client, exp)
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert all(c.info.status == "FINISHED" for c in children)


def test_sigterm_to_the_process_group_interrupts_a_grid(workdir: Path) -> None:
    """A batch system's SIGTERM reaches every process of the job: Ray's workers too."""
    cmd = [sys.executable, "-m", "ablate.cli", "grid",
           str(write(workdir / "g.yaml", edited(seeds=[0, 1, 2])))]
    interrupt_after_first_trial(cmd, workdir, _env(workdir), group=True, sig=signal.SIGTERM)
    client, parent, children = grid_runs(workdir)
    assert_interrupted(client, parent, children)
    assert not any(c.info.status == "FAILED" for c in children)


def test_sighup_to_the_driver_interrupts_a_grid(workdir: Path) -> None:
    cmd = [sys.executable, "-m", "ablate.cli", "grid",
           str(write(workdir / "g.yaml", edited(seeds=[0, 1])))]
    interrupt_after_first_trial(cmd, workdir, _env(workdir), sig=signal.SIGHUP)
    client, parent, children = grid_runs(workdir)
    assert_interrupted(client, parent, children)


def _signal_at(cmd: list[str], cwd: Path, env: dict[str, str], marker: str, sig: int,
               group: bool = False) -> tuple[int, str]:
    """Run ``cmd``, send ``sig`` at the first output line containing ``marker``; (code, out)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cwd, env=env, start_new_session=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            (os.killpg if group else os.kill)(proc.pid, sig)
            break
    lines += proc.stdout.readlines()
    return proc.wait(timeout=120), "".join(lines)


def test_sigterm_while_teachers_train_exits_143_and_starts_nothing(workdir: Path) -> None:
    """Before Ray starts (the teachers' first-use training): one line, exit 143, no run."""
    cmd = [sys.executable, "-m", "ablate.cli", "search", str(write(workdir / "s.yaml", SPEC))]
    code, out = _signal_at(cmd, workdir, _env(workdir), "teacher epoch", signal.SIGTERM,
                           group=True)
    assert code == 143, out
    assert "ablate: interrupted (SIGTERM)" in out and "Traceback" not in out
    assert not (workdir / "mlflow.db").exists()  # no run was started
    assert not list((workdir / "cache").rglob("*.pt")), "a teacher cached from partial training"


def test_sigterm_to_train_marks_the_run_killed_and_resumes(workdir: Path) -> None:
    cfg = write(workdir / "c.yaml", edited(seeds=[0])["base"] | {"name": "tiny-train"})
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "ablate.cli", "train", str(cfg), "--tracking-uri", uri,
           "optim.epochs=4"]
    code, out = _signal_at(cmd, workdir, _env(workdir), "epoch   1/4", signal.SIGTERM)
    assert code == 143, out
    assert "continue with:" in out and "--resume" in out
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny-train").experiment_id])
    assert run.info.status == "KILLED"
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=workdir,
                          env=_env(workdir), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_stop_signal_during_the_summary_finishes_it_or_stops_it_but_never_crashes(
        workdir: Path) -> None:
    """Whether the signal lands in the last trial's end or in the summary is timing: either
    the job finishes (exit 0, FINISHED, said) or it stops (143, KILLED, resumable)."""
    spec = copy.deepcopy(SPEC) | {"num_samples": 1, "max_concurrent": 1}
    cmd = [sys.executable, "-m", "ablate.cli", "search", str(write(workdir / "s.yaml", spec))]
    code, out = _signal_at(cmd, workdir, _env(workdir), "trial 1 (", signal.SIGTERM,
                           group=True)
    client, exp = store(workdir)
    parent, _ = runs_by_kind(client, exp)
    assert "Traceback" not in out and "SIGTERM received," not in out, out
    if code == 0:
        assert parent.info.status == "FINISHED", out
    else:
        assert code == 143 and parent.info.status == "KILLED", out
        assert "--resume" in out
