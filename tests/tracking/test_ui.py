"""`ablate ui` starts the MLflow UI, waits until it answers and prints the runs table's URL;
a busy port or an unknown experiment is one line and exit 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ablate import names
from ablate.cli import main
from ablate.tracking import Tracker, browse_line, publish_views, run_url, runs_url, ui_base
from ablate.tracking.tracker import with_percent
from ablate.tracking.ui import EXPERIMENT_KIND, SHARED_VIEW, VIEW_ALL
from tests.helpers import REPO, free_port


def test_urls_open_the_model_training_runs_table() -> None:
    base = ui_base("sqlite:////x/mlflow.db", host="0.0.0.0", port=5001)
    assert base == "http://127.0.0.1:5001"
    assert runs_url(base, "3") == ("http://127.0.0.1:5001/#/experiments/3/runs"
                                   "?workflowType=machine_learning")
    assert runs_url(base, "3", "ab") == ("http://127.0.0.1:5001/#/experiments/3/runs"
                                         "?workflowType=machine_learning&viewStateShareKey=ab")
    assert run_url(ui_base("http://mlflow.lab:80/"), "3", "ab") == (
        "http://mlflow.lab:80/#/experiments/3/runs/ab/model-metrics"
        "?workflowType=machine_learning")


def test_views_list_the_jobs_trials_with_percent_columns(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    search = tracker.start("exp", "search-1")
    grid = tracker.start("exp", "grid-1")
    publish_views(tracker, search, ["method.alpha", "optim.lr"])
    publish_views(tracker, grid, ["row", "seed", "optim.lr"])
    exp = tracker.experiment_by_name("exp")
    tags = tracker.experiment_tags(exp)
    assert tags[EXPERIMENT_KIND] == "custom_model_development"  # the runs table, not GenAI
    own = json.loads(tags[SHARED_VIEW + search])
    assert own["searchFilter"] == ("tags.`kind` = 'trial' and "
                                   f"tags.`mlflow.parentRunId` = '{search}'")
    assert own["orderByKey"] == "metrics.`pct/objective`" and own["orderByAsc"] is False
    assert own["selectedColumns"] == [*(f"metrics.`{m}`" for m in names.TABLE_METRICS),
                                      "params.`method.alpha`", "params.`optim.lr`"]
    every = json.loads(tags[SHARED_VIEW + VIEW_ALL])  # merged, in order, once each
    assert every["searchFilter"] == "tags.`kind` = 'trial'"
    assert [c for c in every["selectedColumns"] if c.startswith("params.")] == [
        "params.`method.alpha`", "params.`optim.lr`", "params.`row`", "params.`seed`"]
    # The runs MLflow finds with the view's filter are the job's trials.
    child = tracker.start("exp", "t", tags={"kind": "trial"}, parent_run_id=search)
    tracker.start("exp", "c", tags={"kind": "trial"}, parent_run_id=grid)
    found = tracker.client.search_runs([exp], filter_string=own["searchFilter"])
    assert [r.info.run_id for r in found] == [child]
    # A job's parent run opens on its view; a single run on its charts.
    assert browse_line(tracker, search, None).endswith(f"&viewStateShareKey={search}")
    assert browse_line(tracker, child, None).endswith(
        f"/runs/{child}/model-metrics?workflowType=machine_learning")


def test_accuracies_get_percent_copies_first() -> None:
    out = with_percent({"train/loss": 0.5, "val/w_acc": 0.123456, "test/pgd_sat_acc": 0.5})
    assert list(out) == ["pct/epoch_val_w", "pct/test_robust", "train/loss", "val/w_acc",
                         "test/pgd_sat_acc"]
    assert out["pct/epoch_val_w"] == 12.35 and out["pct/test_robust"] == 50.0


def test_ui_prints_the_newest_experiments_url_once_it_answers(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    for name in ("older", "newer"):
        tracker.end(tracker.start(name, "run"))
    newest = tracker.experiment_by_name("newer")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablate.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        line = proc.stdout.readline()  # printed only once the server answers
        url = f"http://127.0.0.1:{port}/#/experiments/{newest}/runs?workflowType=machine_learning"
        assert url in line, line
        with urllib.request.urlopen(url.split("#")[0], timeout=10) as page:
            assert page.status == 200
        # One process, MLflow's job execution off: no job runner, no huey consumers.
        kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        assert kids.stdout.split() == []
        rss_mb = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmRSS:")[1].split()[0])
        assert rss_mb / 1024 < 400, rss_mb
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0 and proc.stderr.read() == ""  # MLflow's log lines stay quiet
    deadline = time.monotonic() + 30  # Ctrl-C stops the server too: the port is free again
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        time.sleep(0.5)
    else:
        raise AssertionError(f"port {port} still answers after Ctrl-C")


def test_busy_port_and_unknown_experiment_exit_2(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(uri).end(Tracker(uri).start("exp", "run"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--tracking-uri", uri, "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("choose another port with --port") and f"--port {port}" in err
    assert main(["ui", "--tracking-uri", uri, "--experiment", "nope"]) == 2
    assert "--experiment 'nope': no such experiment" in capsys.readouterr().err
    assert main(["ui", "--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "a tracking server is its own UI" in capsys.readouterr().err
