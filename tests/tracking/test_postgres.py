"""A shared MLflow tracking server on a real PostgreSQL, and PostgreSQL as a direct store.

PostgreSQL comes from the machine (Debian's ``postgresql`` package: the binaries are under
``/usr/lib/postgresql/VERSION/bin``, or an ``initdb`` on PATH): a throwaway cluster is made with
``initdb`` in a private temporary directory and served on a free loopback port, with password
authentication, by the unprivileged ``postgres`` user when the tests run as root (``initdb``
refuses root). Then ``mlflow server`` on that database takes a real search over HTTP, and
``ablate train`` writes straight into another database with ``postgresql+psycopg://``.

Without PostgreSQL (or psycopg) the tests skip, except where ``ABLATE_REQUIRE_POSTGRES=1``
(``.ci/run`` sets it, after installing PostgreSQL when it is missing): there they fail."""

from __future__ import annotations

import copy
import csv
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ablate.cli import main
from tests.helpers import SPEC, TINY, free_port, healthy, write

REQUIRED = os.environ.get("ABLATE_REQUIRE_POSTGRES") == "1"
USER = "ablate"  # the cluster's superuser (initdb -U), not a system account


def unavailable(reason: str) -> None:
    """Skip, or fail where PostgreSQL is required (CI)."""
    if REQUIRED:
        pytest.fail(f"{reason} (and ABLATE_REQUIRE_POSTGRES=1)", pytrace=False)
    pytest.skip(reason)


def pg_bindir() -> Path | None:
    """The directory of ``initdb`` and ``postgres``: the one on PATH (a symlink is followed to
    its directory), else the newest Debian ``/usr/lib/postgresql/VERSION/bin``."""
    found = shutil.which("initdb")
    dirs = [Path(found).resolve().parent] if found else []
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    dirs += sorted(debian, key=lambda d: [int(p) for p in re.findall(r"\d+", d.parent.name)],
                   reverse=True)
    return next((d for d in dirs if (d / "initdb").is_file() and (d / "postgres").is_file()),
                None)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a process started in its own session: ``sig`` to its leader, then, if it is
    still there after a while, SIGKILL to its whole process group."""
    try:
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group (workers)
    except ProcessLookupError:
        pass
    proc.wait(timeout=20)


@dataclass
class Postgres:
    port: int
    password: str
    log: Path

    def url(self, database: str, driver: str = "+psycopg") -> str:
        return f"postgresql{driver}://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(self.url(database, driver=""), autocommit=True,
                               connect_timeout=5)

    def create(self, database: str) -> str:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        return database

    def query(self, database: str, sql: str, *args: Any) -> list[tuple]:
        with self.connect(database) as conn:
            return conn.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of its own for this module: initdb in a fresh private directory,
    loopback only (no Unix socket), password authentication, no fsync (throwaway data)."""
    try:
        import psycopg  # noqa: F401 (what MLflow's SQLAlchemy opens postgresql:// with)
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[dev,postgres]')")
    bindir = pg_bindir()
    if bindir is None:
        unavailable("PostgreSQL is not installed (no initdb on PATH or under "
                    "/usr/lib/postgresql; apt-get install postgresql)")
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no `postgres` user to run PostgreSQL as")
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    # Not under pytest's tmp_path: as root that is in /tmp/pytest-of-root (mode 0700), which
    # the postgres user cannot enter. mkdtemp's directory is private to its owner (0700).
    home = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
    proc = None
    try:
        password = secrets.token_hex(16)
        (home / "pwfile").write_text(password + "\n")
        if as_user:
            for path in (home, home / "pwfile"):
                os.chown(path, as_user["user"], as_user["group"])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(home / "data"), "-U", USER,
             f"--pwfile={home / 'pwfile'}", "--auth=scram-sha-256", "-E", "UTF8",
             "--no-locale", "--no-sync"],
            capture_output=True, text=True, cwd=home, env=env, timeout=120, **as_user)
        assert init.returncode == 0, init.stdout + init.stderr
        log = home / "postgres.log"
        with log.open("w") as out:
            # The port is free now; should another process take it first, postgres exits
            # (the loop below then says so, with the log).
            port = free_port()
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(home / "data"), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"],
                stdout=out, stderr=subprocess.STDOUT, cwd=home, env=env,
                start_new_session=True, **as_user)
        pg = Postgres(port, password, log)
        wait_for(lambda: _answers(pg), proc, log, what="PostgreSQL", timeout=60)
        yield pg
    finally:
        if proc is not None:
            stop(proc, signal.SIGINT)  # "fast" shutdown: it does not wait for clients
        shutil.rmtree(home, ignore_errors=True)


def _answers(pg: Postgres) -> bool:
    import psycopg

    try:
        with pg.connect() as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def wait_for(ready: Any, proc: subprocess.Popen, log: Path, *, what: str,
             timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def mlflow_server(backend: str, artifacts: Path, log: Path) -> Iterator[str]:
    """``mlflow server`` on ``backend``, serving artifacts from ``artifacts``, on a free
    loopback port; yields its URL once ``/health`` answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
           "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
                                env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: healthy(url), proc, log, what="mlflow server", timeout=90)
        yield url
    finally:
        stop(proc)


def assert_nothing_local(workdir: Path) -> None:
    """Nothing went to the default local store instead."""
    for name in ("mlflow.db", "optuna.db", "mlruns", "mlartifacts"):
        assert not (workdir / name).exists(), name


def test_search_through_an_mlflow_server_on_postgresql(here: Path, postgres: Postgres,
                                                       capsys) -> None:
    database = postgres.create("mlflow_server")
    artifacts = here / "server-artifacts"
    spec = copy.deepcopy(SPEC) | {"num_samples": 2, "max_concurrent": 2,
                                  "scheduler": {"name": "none"}}
    spec["base"]["optim"]["epochs"] = 2
    path = write(here / "spec.yaml", spec)
    # The server as the README starts it: plain postgresql:// (SQLAlchemy >= 2.1: psycopg).
    with mlflow_server(postgres.url(database, driver=""), artifacts,
                       here / "mlflow-server.log") as url:
        code = main(["search", str(path), "--tracking-uri", url])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "MLflow parent run" in out and url in out
        assert "Optuna study: not stored" in out  # no optuna.db beside a remote store

        client = MlflowClient(tracking_uri=url)
        exp = client.get_experiment_by_name("tiny-search")
        assert exp.artifact_location == f"mlflow-artifacts:/{exp.experiment_id}"
        runs = client.search_runs([exp.experiment_id])
        (parent,) = [r for r in runs if r.data.tags.get("kind") == "search"]
        children = [r for r in runs if r.data.tags.get("kind") == "trial"]
        assert parent.info.status == "FINISHED" and len(children) == 2
        assert "optuna_storage" not in parent.data.tags
        assert 0 <= parent.data.metrics["test/clean_acc"] <= 1
        assert len({c.data.tags["trial_id"] for c in children}) == 2
        for c in children:
            assert c.info.status == "FINISHED"
            assert c.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert set(c.data.params) == {*spec["space"], "method"}
            for key in ("val/w_acc", "val/clean_acc", "val/robust_acc"):
                history = client.get_metric_history(c.info.run_id, key)
                assert sorted(m.step for m in history) == [1, 2], key  # 1-based epochs
                assert all(0 <= m.value <= 1 for m in history), key
            config = yaml.safe_load(Path(client.download_artifacts(
                c.info.run_id, "config.yaml", str(here))).read_text())
            assert config["optim"]["epochs"] == 2
            # The param is the value to 6 significant digits (a column of the runs table).
            assert float(c.data.params["method.alpha"]) == pytest.approx(
                config["method"]["alpha"], rel=1e-5)

        names = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"trials.csv", "trials.parquet", "best_config.yaml"} <= names
        with Path(client.download_artifacts(parent.info.run_id, "trials.csv",
                                            str(here))).open() as f:
            rows = list(csv.DictReader(f))
        assert sorted(r["trial_id"] for r in rows) == sorted(
            c.data.tags["trial_id"] for c in children)
        assert parent.data.tags["best_trial"] in {r["trial_id"] for r in rows}

    # The artifacts went through the server to --artifacts-destination ...
    stored = artifacts / exp.experiment_id / parent.info.run_id / "artifacts"
    assert (stored / "trials.csv").is_file() and (stored / "best_config.yaml").is_file()
    for c in children:
        assert (artifacts / exp.experiment_id / c.info.run_id / "artifacts"
                / "config.yaml").is_file()
    # ... and the runs and metrics into PostgreSQL; nothing into a local store.
    in_db = dict(postgres.query(
        database, "SELECT run_uuid, status FROM runs WHERE experiment_id = %s",
        int(exp.experiment_id)))
    assert in_db == {r.info.run_id: "FINISHED" for r in (parent, *children)}
    for c in children:
        assert postgres.query(database, "SELECT step FROM metrics WHERE run_uuid = %s AND "
                              "key = 'val/w_acc' ORDER BY step", c.info.run_id) == [(1,), (2,)]
    assert_nothing_local(here)


def test_train_into_postgresql_directly(here: Path, postgres: Postgres, capsys) -> None:
    database = postgres.create("mlflow_direct")
    uri = postgres.url(database)  # postgresql+psycopg://ablate:PASSWORD@127.0.0.1:PORT/...
    cfg = write(here / "c.yaml", TINY)
    assert main(["train", str(cfg), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "epoch   2/2" in out and "test (best epoch" in out

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["optim.epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/w_acc")] == [1, 2]
    assert "test/pgd_sat_acc" in run.data.metrics
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(here)))
    assert yaml.safe_load(config.read_text())["optim"]["epochs"] == 2
    # Without a server, artifacts are files on the driver: MLflow's default root for a
    # database store, ./mlruns of the directory that created the experiment.
    assert exp.artifact_location == str(here / "mlruns" / exp.experiment_id)
    assert (here / "mlruns" / exp.experiment_id / run.info.run_id / "artifacts"
            / "checkpoints" / "best_student.pt").is_file()

    # In PostgreSQL itself: MLflow's schema, the run, its params and its curve.
    assert postgres.query(database, "SELECT name, status FROM runs WHERE run_uuid = %s",
                          run.info.run_id) == [(run.info.run_name, "FINISHED")]
    assert postgres.query(database, "SELECT value FROM params WHERE run_uuid = %s AND "
                          "key = 'optim.epochs'", run.info.run_id) == [("2",)]
    assert postgres.query(database, "SELECT step FROM metrics WHERE run_uuid = %s AND "
                          "key = 'val/w_acc' ORDER BY step", run.info.run_id) == [(1,), (2,)]
    assert postgres.query(database, "SELECT count(*) FROM alembic_version") == [(1,)]
    assert not (here / "mlflow.db").exists() and not (here / "optuna.db").exists()
