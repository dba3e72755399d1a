"""Faults of a real cluster, with real processes: a tracking server killed (and restarted),
a damaged store, a full disk. Each ends in one line and a documented exit code, and nothing
finished is lost.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablate.core.errors import StoreBroken, TrackingLost
from ablate.tracking import Tracker
from tests.helpers import REPO, SPEC, free_port, healthy, runs_by_kind, write


@contextlib.contextmanager
def server(store: Path, port: int) -> Iterator[subprocess.Popen]:
    """A real tracking server (``ablate ui``: MLflow's app in one process) on ``store``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablate.cli", "ui", "--tracking-uri", f"sqlite:///{store}",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=store.parent, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 90
    try:
        while not healthy(url):
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.3)
        yield proc
    finally:
        kill(proc)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_a_short_outage_is_two_lines_and_loses_nothing(tmp_path: Path) -> None:
    port, lines = free_port(), []
    with server(tmp_path / "s.db", port) as first:
        tracker = Tracker(f"http://127.0.0.1:{port}")
        run = tracker.start("outage", "r")
        tracker.client._say = lines.append  # what it prints to stderr
        kill(first)
    later = threading.Thread(target=lambda: server_for(tmp_path / "s.db", port, 20))
    later.start()
    tracker.log_metrics(run, {"m": 1.0}, step=1)  # waits for the restarted server
    tracker.end(run)
    assert lines[0] == (f"tracking server http://127.0.0.1:{port} unreachable, retrying for "
                        "120 s (ABLATE_TRACKING_WAIT)")
    assert len(lines) == 2 and lines[1].startswith(f"tracking server http://127.0.0.1:{port} "
                                                   "answers again after ")
    later.join()
    client = MlflowClient(f"sqlite:///{tmp_path / 's.db'}")
    assert client.get_run(run).data.metrics == {"m": 1.0}


def server_for(store: Path, port: int, seconds: float) -> None:
    time.sleep(2)
    with server(store, port):
        time.sleep(seconds)


def test_a_server_that_stays_away_gives_up_after_the_wait(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ABLATE_TRACKING_WAIT", "3")
    tracker = Tracker(f"http://127.0.0.1:{free_port()}")  # nobody listens
    start = time.monotonic()
    with pytest.raises(TrackingLost, match="unreachable for 3 s"):
        tracker.check()
    assert 3 <= time.monotonic() - start < 20
    with pytest.raises(TrackingLost):  # once given up, at once
        tracker.check()
    assert time.monotonic() - start < 20


def test_a_search_whose_server_dies_stops_with_one_line_and_resumes(workdir: Path) -> None:
    """The server is killed after the first trial and not restarted: a bounded wait, one
    line, exit 75 and the resume hint; restarted, ``--resume`` finishes and closes every run."""
    port, store = free_port(), workdir / "server.db"
    spec = copy.deepcopy(SPEC) | {"num_samples": 3, "scheduler": {"name": "none"}}
    cmd = [sys.executable, "-m", "ablate.cli", "search", str(write(workdir / "s.yaml", spec)),
           "--tracking-uri", f"http://127.0.0.1:{port}"]
    env = {**os.environ, "ABLATE_CACHE": str(workdir / "cache"), "ABLATE_TRACKING_WAIT": "5"}
    with server(store, port) as srv:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=workdir, env=env)
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("trial ") and "epochs" in line:
                kill(srv)
                break
        lines += proc.stdout.readlines()
        code = proc.wait(timeout=300)
    out = "".join(lines)
    assert code == 75, out
    assert out.count("unreachable, retrying for 5 s") == 1 and "Traceback" not in out, out
    assert "unreachable for 5 s. The trials' checkpoints are kept" in out
    assert out.rstrip().endswith("--resume") or "--resume\n" in out
    with server(store, port):
        done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=workdir,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    client = MlflowClient(f"sqlite:///{store}")
    parent, children = runs_by_kind(client, client.get_experiment_by_name(
        "tiny-search").experiment_id)
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert all(c.info.status == "FINISHED" for c in children)


def _damaged_copy(tmp_path: Path) -> Path:
    good = tmp_path / "good.db"
    tracker = Tracker(f"sqlite:///{good}")
    for i in range(30):
        tracker.end(tracker.start("damaged", f"r{i}", params={"p": "x" * 200}))
    data = bytearray(good.read_bytes())
    for offset in range(8192, len(data) - 2048, 16384):  # damage pages, keep the header
        data[offset:offset + 2048] = os.urandom(2048)
    bad = tmp_path / "mlflow.db"
    bad.write_bytes(bytes(data))
    return bad


def test_a_damaged_store_is_one_line_before_anything_starts(workdir: Path) -> None:
    bad = _damaged_copy(workdir)
    for argv in (["search", str(write(workdir / "s.yaml", SPEC))], ["report", "damaged"],
                 ["ui", "--port", "5999"]):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "ablate.cli", *argv], capture_output=True,
                              text=True, cwd=workdir, timeout=120,
                              env={**os.environ, "ABLATE_CACHE": str(workdir / "cache")})
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"ablate: error: the store {bad}: ") and "not a readable SQLite" \
            in line, line
        assert time.monotonic() - start < 30  # not after teachers and Ray
    assert not (workdir / "runs").exists() and not (workdir / "cache").exists()


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``path`` (root only; skipped where mount is refused)."""
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_one_line_naming_the_store(tmp_path: Path, workdir: Path) -> None:
    with small_disk(tmp_path / "disk", "12m") as disk:
        store = disk / "mlflow.db"
        tracker = Tracker(f"sqlite:///{store}")
        run = tracker.start("full", "r")
        (disk / "ballast").write_bytes(b"\0" * (disk_free(disk) - 64 * 1024))
        with pytest.raises(StoreBroken, match=f"tracking store {store}: the disk is full"):
            for i in range(2000):  # params of 6 KB each: the database grows until ENOSPC
                tracker.log_params(run, {f"p{i}.{j}": "x" * 6000 for j in range(10)})
        # A command on that store refuses before it starts, with the same kind of line.
        proc = subprocess.run(
            [sys.executable, "-m", "ablate.cli", "search", str(write(workdir / "s.yaml", SPEC)),
             "--tracking-uri", f"sqlite:///{store}"], capture_output=True, text=True,
            cwd=workdir, timeout=120, env={**os.environ, "ABLATE_CACHE": str(workdir / "c")})
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert "the disk is full" in line and str(disk) in line, line


def disk_free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize
