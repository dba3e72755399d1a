"""Searches on a real Ray cluster on loopback, with Ray's token authentication.

One cluster serves the module: ``ray.cluster_utils.Cluster`` starts a head with no CPUs (no
trial can run there) and two worker nodes of one CPU each, every node with its own raylet and
its own temp dir. ``Cluster`` rather than ``ray start`` subprocesses: it starts the same GCS and
raylet processes without a Python CLI process per node (seconds each on a 2-core machine), hands
back each node's id and raylet pid (the fault test kills one by its pid), and stops exactly the
processes it started, where ``ray stop`` would stop every Ray on the machine. Token
authentication is set up as the README tells operators to: ``ray get-auth-token --generate``
writes a token (under a temp HOME, never ``~/.ray``), and every process of the cluster and the
driver run with ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` pointing at it: the GCS and
raylets inherit the environment of the process that starts them.

- A search lands trials on both worker nodes (each child run's ``node_id`` tag), with the
  teachers only in the driver's memory and object store: the driver's cache is moved away before
  any trial starts, the nodes see another cache and another working directory, and the trials
  still succeed; every trial is logged once.
- A client without the token, or with a wrong one, is refused.
- Losing the node that runs a trial: the trial resumes from its checkpoint on the other node.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
from ray._private import ray_constants
from ray._private.authentication_test_utils import reset_auth_token_state
from ray._private.utils import get_ray_address_file
from ray.cluster_utils import Cluster

from ablate.cli import main
from ablate.runtime import runner
from ablate.search.summary import on_one_machine
from tests.helpers import SPEC, duplicated_rows, runs_by_kind, steps, store, write

EPOCHS = 6


@dataclass
class Loopback:
    """The module's cluster, and what its nodes see: their working directory and cache."""

    cluster: Cluster
    node_dir: Path  # the nodes' (and so the trials') working directory
    node_cache: Path  # ABLATE_CACHE on the nodes: never created (teachers come from the driver)
    token: str
    temp_dirs: list[str]

    def add_worker(self) -> None:
        # Short temp dirs under /tmp: a node's Unix sockets live there (108-byte path limit).
        self.temp_dirs.append(tempfile.mkdtemp(prefix="ablate-ray-"))
        with pytest.MonkeyPatch.context() as node_env:  # what the node's processes inherit
            node_env.chdir(self.node_dir)
            node_env.setenv("ABLATE_CACHE", str(self.node_cache))
            self.cluster.add_node(num_cpus=1, temp_dir=self.temp_dirs[-1])

    def workers(self, count: int) -> list[Any]:
        """Top the cluster up to ``count`` worker nodes (the fault test removes one)."""
        while len(self.cluster.worker_nodes) < count:
            self.add_worker()
        self.cluster.wait_for_nodes()
        return list(self.cluster.worker_nodes)


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loopback]:
    root = tmp_path_factory.mktemp("cluster")
    home, node_dir = root / "home", root / "node"
    node_dir.mkdir()
    # `ray get-auth-token --generate` (the `ray` CLI) with a temp HOME: ~/.ray stays untouched.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    out = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token",
                          "--generate"], env=clean | {"HOME": str(home)}, capture_output=True,
                         text=True, check=True, timeout=60)
    token_file = home / ".ray" / "auth_token"
    assert out.stdout.strip() == token_file.read_text().strip()
    head = tempfile.mkdtemp(prefix="ablate-ray-")
    temp_dirs = [head]
    # Cluster() records the head's address in Ray's default temp dir (/tmp/ray) whatever
    # temp_dir the node has, and fails on a machine where no Ray has run yet.
    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RAY_AUTH_MODE", "token")
            env.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
            env.delenv("RAY_AUTH_TOKEN", raising=False)
            reset_auth_token_state()  # this process (Ray's C++ config) reads the new environment
            lb = Loopback(Cluster(initialize_head=True,
                                  head_node_args={"num_cpus": 0, "temp_dir": head}),
                          node_dir, root / "node-cache", out.stdout.strip(), temp_dirs)
            try:
                lb.workers(2)
                yield lb
            finally:
                ray.shutdown()
                lb.cluster.shutdown()
    finally:
        reset_auth_token_state()  # back to the environment before this module
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def nodes(loopback: Loopback) -> Iterator[Loopback]:
    """The cluster with two worker nodes; the driver disconnects after the test."""
    loopback.workers(2)
    yield loopback
    ray.shutdown()


def _results(storage: Path) -> list[list[dict[str, Any]]]:
    """Each trial's reports so far (a line Ray is still writing is skipped)."""
    out = []
    for f in sorted(storage.glob("*/trial_*/result.json")):
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        out.append(rows)
    return out


def _watch_cwds(storage: Path, done: threading.Event, cwds: dict[str, str]) -> None:
    """The working directory of each trial's process while it runs (by the pid it reports)."""
    while not done.is_set():
        for rows in _results(storage):
            if rows and rows[-1]["trial_id"] not in cwds:
                try:
                    cwds[rows[-1]["trial_id"]] = os.readlink(f"/proc/{rows[-1]['pid']}/cwd")
                except OSError:
                    pass  # ended already
        time.sleep(0.1)


def test_search_uses_both_nodes_and_teachers_from_the_object_store(
        tmp_path: Path, nodes: Loopback, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    workers = {n.node_id for n in nodes.workers(2)}
    driver, storage = tmp_path / "driver", tmp_path / "shared"
    driver.mkdir()
    monkeypatch.chdir(driver)
    monkeypatch.setenv("ABLATE_CACHE", str(driver / "cache"))  # the driver's only
    hidden = tmp_path / "hidden"

    def init_then_hide_cache(*args: Any, **kwargs: Any) -> dict[str, float]:
        # The teachers are loaded (trained into the cache) before Ray starts; from here on no
        # process, the driver's included, finds them on disk.
        (driver / "cache").rename(hidden)
        return init_ray(*args, **kwargs)

    init_ray = runner.init_ray
    monkeypatch.setattr(runner, "init_ray", init_then_hide_cache)
    # Two trials of one CPU at once on two one-CPU nodes: one on each.
    spec = copy.deepcopy(SPEC) | {"num_samples": 2, "max_concurrent": 2, "max_failures": 0,
                                  "resources": {"cpu": 1}, "scheduler": {"name": "none"}}
    spec["base"]["optim"]["epochs"] = 2
    done, cwds = threading.Event(), {}
    watcher = threading.Thread(target=_watch_cwds, args=(storage, done, cwds), daemon=True)
    watcher.start()
    try:
        code = main(["search", str(write(driver / "s.yaml", spec)), "--address",
                     nodes.cluster.address, "--storage", str(storage)])
    finally:
        done.set()
        watcher.join()
    out = capsys.readouterr().out
    assert code == 0, out

    client, exp = store(driver)
    parent, children = runs_by_kind(client, exp)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert len({c.data.tags["trial_id"] for c in children}) == 2  # one child run per trial
    # Several nodes: the best trial was tested by a Ray task, not in the driver.
    assert not on_one_machine() and 0 <= parent.data.metrics["test/clean_acc"] <= 1
    for c in children:
        assert c.info.status == "FINISHED" and steps(client, c) == [1, 2]
        assert not duplicated_rows(client, c)
    assert {c.data.tags["node_id"] for c in children} == workers  # both nodes, workers only

    assert sorted(p.name for p in hidden.iterdir()) and not (driver / "cache").exists()
    assert not nodes.node_cache.exists()  # no node trained or looked for teachers
    # Each trial ran in a working directory in its own node's temp dir (Tune's), on a node
    # started elsewhere than the driver.
    temp_dir = {n.node_id: Path(n.get_temp_dir_path()) for n in nodes.cluster.worker_nodes}
    assert {c.data.tags["trial_id"] for c in children} == set(cwds), cwds
    for c in children:
        assert Path(cwds[c.data.tags["trial_id"]]).is_relative_to(
            temp_dir[c.data.tags["node_id"]]), cwds
    for node in nodes.cluster.worker_nodes:
        raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        assert os.readlink(f"/proc/{raylet}/cwd") == str(nodes.node_dir)


CLIENT = """
import os, sys
import ray
from ray._private.authentication_test_utils import reset_auth_token_state
for mode, token in (("disabled", ""), ("token", "0" * 64), ("token", os.environ["GOOD"])):
    os.environ.update(RAY_AUTH_MODE=mode, RAY_AUTH_TOKEN=token)
    reset_auth_token_state()
    try:
        ray.init(address=sys.argv[1])
    except ConnectionError as exc:  # the cause quotes the GCS's answer
        why = str(exc.__cause__)
        print(mode, "refused:", "bad token" if "InvalidAuthToken" in why else why[-500:])
    else:
        print(mode, "connected")
        ray.shutdown()
"""


def test_a_client_without_the_token_is_refused(nodes: Loopback) -> None:
    """No token, a wrong one, then the right one (which shows the first two were refused
    for their token, not for an unreachable cluster). One try each: Ray retries for 20 s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    out = subprocess.run([sys.executable, "-c", CLIENT, nodes.cluster.address],
                         env=clean | {"HOME": str(nodes.node_dir), "GOOD": nodes.token,
                                      "RAY_NUM_REDIS_GET_RETRIES": "1"},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines() == ["disabled refused: bad token",
                                       "token refused: bad token",
                                       "token connected"], out.stdout + out.stderr


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _kill_node_after_first_checkpoint(cluster: Cluster, storage: Path,
                                      killed: threading.Event) -> None:
    """Wait until a trial has reported (and checkpointed) epoch 2 or 3, then kill, without
    grace, the node whose raylet started that trial's worker process (Ray reports its pid).
    Mid-run on purpose: a node lost while its trial is finishing is another story."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        running = [r[-1] for r in _results(storage) if 2 <= len(r) <= 3]
        if running:
            raylet = _parent_pid(running[0]["pid"])
            node = next(n for n in cluster.worker_nodes if raylet == n.all_processes[
                ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
            cluster.remove_node(node, allow_graceful=False)
            killed.set()
            return
        time.sleep(0.2)


def test_search_survives_losing_the_node_that_runs_a_trial(workdir: Path, nodes: Loopback,
                                                          capsys) -> None:
    cluster = nodes.cluster
    # Ray 2.60 may count one lost node twice (two futures fail on the dead actor), hence 3.
    spec = copy.deepcopy(SPEC) | {"num_samples": 2, "max_concurrent": 1, "max_failures": 3}
    spec["base"]["optim"]["epochs"] = EPOCHS
    spec["scheduler"] = {"name": "none"}
    storage = workdir / "storage"
    killed = threading.Event()
    killer = threading.Thread(target=_kill_node_after_first_checkpoint,
                              args=(cluster, storage, killed), daemon=True)
    killer.start()
    code = main(["search", str(write(workdir / "s.yaml", spec)), "--address", cluster.address,
                 "--storage", str(storage)])
    killer.join(timeout=60)
    out = capsys.readouterr().out
    assert killed.is_set(), "the worker node was never killed"
    assert code == 0, out

    for history in _results(storage):  # resumed from the checkpoint: every epoch once
        assert sorted(r["epoch"] for r in history) == list(range(1, EPOCHS + 1))
    client, exp = store(workdir)
    parent, children = runs_by_kind(client, exp)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert len({c.data.tags["trial_id"] for c in children}) == 2
    survivor = {n.node_id for n in cluster.worker_nodes}
    for c in children:
        assert c.info.status == "FINISHED" and steps(client, c) == list(range(1, EPOCHS + 1))
        assert not duplicated_rows(client, c)
        assert {c.data.tags["node_id"]} == survivor  # where each trial finished
    assert "test (best epoch" in out
