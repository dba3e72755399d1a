"""GPU scheduling without GPUs: a real local Ray that declares 4 GPUs on this CPU machine.

Ray schedules declared GPUs exactly as real ones (it counts them, assigns ids and narrows each
worker's ``CUDA_VISIBLE_DEVICES``); only torch finds no CUDA. The module's Ray is started here,
before ``main``: ``ablate search`` without ``--address`` checks the trial's resources against
the Ray already running in the process and uses it as it is.

- With ``resources.gpu`` 0.25 and 1 (``device: cpu``, so the trials train here), 4 trials run
  at once, and each trial's child run says which GPU Ray gave it (``gpu_ids``) and what its
  worker saw (``cuda_visible_devices``): one id, the same in both; 4 different ones with a
  whole GPU each. (Ray packs fractional shares: with 0.25 all 4 trials may get GPU 0.)
- A GPU share with ``device: auto`` on this CUDA-less machine fails each trial with one line
  (its error tag and console line; ``tests/trainables/test_ciard.py`` has ``cuda`` too, in a
  Ray task). The driver refuses ``device: cuda`` before anything starts, as it does a trial
  wanting more GPUs than the Ray has.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import torch

from ablate.cli import main
from tests.helpers import SPEC, run_bad, runs_by_kind, store, write

FAKE_GPUS = 4
NO_CUDA = "CUDA is not available on node"

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="tests a machine without CUDA (its GPUs are Ray's fiction)")


@pytest.fixture(scope="module", autouse=True)
def fake_gpus() -> Iterator[None]:
    """One local Ray for the module with 4 declared GPUs, and CPUs for 4 one-CPU trials (Ray
    counts them; the tiny trials share this machine's real cores)."""
    ray.shutdown()  # a Ray left by an earlier test would be used as it is
    ray.init(address="local", num_cpus=FAKE_GPUS, num_gpus=FAKE_GPUS, include_dashboard=False,
             log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def _spec(gpu: float, device: str, trials: int) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC) | {"num_samples": trials, "max_concurrent": trials,
                                  "resources": {"cpu": 1, "gpu": gpu},
                                  "scheduler": {"name": "none"}}
    spec["base"]["device"] = device
    spec["base"]["optim"]["epochs"] = 2
    return spec


@pytest.mark.parametrize("gpu", [0.25, 1])
def test_trials_share_the_declared_gpus_and_say_which_they_got(here: Path, capsys,
                                                                gpu: float) -> None:
    code = main(["search", str(write(here / "s.yaml", _spec(gpu, "cpu", FAKE_GPUS)))])
    out = capsys.readouterr().out
    assert code == 0, out
    # The plan counts Ray's GPUs, not this machine's none.
    assert f"{FAKE_GPUS} at a time on this machine ({FAKE_GPUS} CPUs, {FAKE_GPUS} GPUs)" in out

    client, exp = store(here)
    parent, children = runs_by_kind(client, exp)
    assert parent.info.status == "FINISHED" and len(children) == FAKE_GPUS
    assert all(c.info.status == "FINISHED" for c in children)
    # All 4 at once: every trial's run started before the first one ended. (Each trial trains
    # for seconds, the whole digits set, so that workers starting one after another on a busy
    # 2-core machine still overlap.)
    assert max(c.info.start_time for c in children) < min(c.info.end_time for c in children)

    ids = [c.data.tags["gpu_ids"] for c in children]
    for c, gid in zip(children, ids, strict=True):
        assert gid in {str(i) for i in range(FAKE_GPUS)}  # exactly one GPU, one of Ray's
        assert c.data.tags["cuda_visible_devices"] == gid  # what the worker's CUDA would see
    if gpu == 1:
        assert len(set(ids)) == FAKE_GPUS  # a whole GPU each: all four used


def test_a_gpu_share_without_cuda_fails_each_trial_with_one_line(here: Path, capsys) -> None:
    # device auto: the driver trains the teachers on the CPU, the trials are given a GPU.
    code = main(["search", str(write(here / "s.yaml", _spec(0.5, "auto", 2)))])
    out = capsys.readouterr().out
    assert code == 1, out

    client, exp = store(here)
    parent, children = runs_by_kind(client, exp)
    assert parent.info.status == "FAILED" and len(children) == 2
    for c in children:
        assert c.info.status == "FAILED"
        error = c.data.tags["error"]
        assert error.startswith("ablate.core.errors.ConfigError: trial assigned GPU "), error
        assert NO_CUDA in error and error.endswith("set base.device=cpu or resources.gpu=0")
        assert "\n" not in error and "Traceback" not in error
    failed = [ln for ln in out.splitlines() if "FAILED:" in ln]
    assert len(failed) == 2 and all(NO_CUDA in ln for ln in failed), out
    assert "error: all 2 trials failed" in out and NO_CUDA in out.splitlines()[-1]


@pytest.mark.parametrize(("gpu", "device", "needle"), [
    (0.25, "cuda", "field `device`: cuda, but no CUDA device is available here"),
    (8, "cpu", "field `resources.gpu`: 8 GPUs per trial, but the Ray already running in this "
               "process has 4"),
], ids=["device-cuda", "more-gpus-than-ray-has"])
def test_the_driver_refuses_before_anything_starts(workdir: Path, capsys, gpu: float,
                                                   device: str, needle: str) -> None:
    """``device: cuda`` where the driver finds no CUDA; more GPUs per trial than the running
    Ray declares (the check reads that Ray, not this GPU-less machine)."""
    err = run_bad(workdir, capsys,
                  ["search", str(write(workdir / "s.yaml", _spec(gpu, device, 1)))])
    assert err.startswith("ablate: error:") and needle in err, err
