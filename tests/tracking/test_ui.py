"""`ablate ui` starts the MLflow UI, waits until it answers and prints the runs table's URL;
a busy port or an unknown experiment is one line and exit 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ablate.cli import main
from ablate.tracking import Tracker, run_url, runs_url, ui_base
from tests.helpers import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_urls_open_the_model_training_runs_table() -> None:
    base = ui_base("sqlite:////x/mlflow.db", host="0.0.0.0", port=5001)
    assert base == "http://127.0.0.1:5001"
    assert runs_url(base, "3") == ("http://127.0.0.1:5001/#/experiments/3/runs"
                                   "?workflowType=machine_learning")
    assert run_url(ui_base("http://mlflow.lab:80/"), "3", "ab") == (
        "http://mlflow.lab:80/#/experiments/3/runs/ab")


def test_ui_prints_the_newest_experiments_url_once_it_answers(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    for name in ("older", "newer"):
        tracker.end(tracker.start(name, "run"))
    newest = tracker.experiment_by_name("newer")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablate.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        line = proc.stdout.readline()  # printed only once the server answers
        url = f"http://127.0.0.1:{port}/#/experiments/{newest}/runs?workflowType=machine_learning"
        assert url in line, line
        with urllib.request.urlopen(url.split("#")[0], timeout=10) as page:
            assert page.status == 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
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
