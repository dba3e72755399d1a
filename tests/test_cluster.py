"""A search on a real Ray cluster on loopback survives losing the node that runs a trial.

``ray.cluster_utils.Cluster`` starts a head (no CPUs, so trials cannot run there) and two worker
nodes, each with its own raylet. Once a trial has saved a checkpoint, the raylet of the node
running it is killed; the trial must resume from its checkpoint on the other node (no epoch
trained twice) and the store must hold every trial once, FINISHED.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from ablate.cli import main
from tests.helpers import SPEC, duplicated_rows, runs_by_kind, steps, store, write

EPOCHS = 6


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


@pytest.fixture
def cluster() -> Any:
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    yield c
    ray.shutdown()
    c.shutdown()


def test_search_survives_losing_the_node_that_runs_a_trial(workdir: Path, cluster: Cluster,
                                                          capsys) -> None:
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
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
        assert sorted(r["epoch"] for r in history) == list(range(EPOCHS))
    client, exp = store(workdir)
    parent, children = runs_by_kind(client, exp)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert len({c.data.tags["trial_id"] for c in children}) == 2
    for c in children:
        assert c.info.status == "FINISHED" and steps(client, c) == list(range(EPOCHS))
        assert not duplicated_rows(client, c)
    assert "test (best epoch" in out
