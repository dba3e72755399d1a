"""The trial's device from Ray's assignment, on a local Ray that declares two (absent) GPUs:
Ray assigns them like real ones, which is all the choice of GPU reads (where torch has no CUDA
the trial then refuses to start, with one line); and a trial's checkpoint verified before it is
resumed or tested."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch
from ray import tune

from ablate.config import Resources, check_trial_device
from ablate.core.errors import CheckpointError, ConfigError
from ablate.core.settings import AttackSettings, OptimSettings
from ablate.core.trainer import Trainer
from tests.helpers import data_offset, flip
from trainables.ciard import (
    assigned_gpus,
    check_checkpoint,
    gpu_device,
    restore,
    trial_device,
)

NOSET = {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}


@pytest.fixture(scope="module")
def two_gpus() -> Iterator[None]:
    ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


@ray.remote(num_cpus=0)
def device_in_task(name: str) -> str:
    try:
        return str(trial_device(name))
    except ConfigError as exc:
        return f"refused: {exc}"


@ray.remote(num_cpus=0)
def gpu_in_task() -> str:
    """The device a trial names for its GPU, which needs no CUDA (the GPUs are Ray's fiction)."""
    return str(gpu_device(assigned_gpus()))


def test_a_trial_gets_the_gpu_ray_assigned_it(two_gpus: None) -> None:
    # Ray narrows CUDA_VISIBLE_DEVICES to the trial's GPU: it is cuda:0 for every trial.
    quarter = gpu_in_task.options(num_gpus=0.25)
    assert ray.get([quarter.remote(), quarter.remote()]) == ["cuda:0", "cuda:0"]
    # Where Ray leaves every GPU visible, the index is Ray's id: two whole-GPU trials at once
    # get one GPU each.
    whole = gpu_in_task.options(num_gpus=1, runtime_env={"env_vars": NOSET})
    assert sorted(ray.get([whole.remote(), whole.remote()])) == ["cuda:0", "cuda:1"]


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_a_trial_given_a_gpu_trains_there_or_says_cuda_is_missing(two_gpus: None,
                                                                  name: str) -> None:
    got = ray.get(device_in_task.options(num_gpus=0.25).remote(name))
    if torch.cuda.is_available():
        assert got == "cuda:0"
    else:  # auto too: Ray holds the GPU for the trial, so no quiet fall-back to the CPU
        assert got.startswith("refused: trial assigned GPU 0 by Ray, but CUDA is not available "
                              "on node "), got
        assert got.endswith("; set base.device=cpu or resources.gpu=0") and "\n" not in got
    # device cpu is the CPU whatever Ray assigned
    assert ray.get(device_in_task.options(num_gpus=1).remote("cpu")) == "cpu"


def test_a_trial_without_a_gpu_share_stays_off_the_gpus(two_gpus: None) -> None:
    assert ray.get(device_in_task.remote("auto")) == "cpu"
    assert ray.get(device_in_task.remote("cpu")) == "cpu"
    if not torch.cuda.is_available():  # cuda without a share: refused where no CUDA is seen
        assert ray.get(device_in_task.remote("cuda")).startswith("refused: field `device`")
    # The driver (testing the best trial) is no trial: the config's device as it resolves here.
    assert trial_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_trials_need_a_gpu_share() -> None:
    with pytest.raises(ConfigError, match=r"^field `resources.gpu`: 0 GPUs per trial, but "):
        check_trial_device(Resources(cpu=1, gpu=0), "cuda")
    check_trial_device(Resources(cpu=1, gpu=0.25), "cuda")
    check_trial_device(Resources(cpu=1, gpu=0), "auto")


def test_a_trial_never_trains_or_tests_from_a_missing_or_damaged_checkpoint(
        small_digits, make_net, tmp_path: Path) -> None:
    trainer = Trainer(student=make_net(0), clean_teacher=make_net(1, 8),
                      robust_teacher=make_net(2, 8), data=small_digits, seed=0,
                      optim=OptimSettings(epochs=1), attack=AttackSettings(eps=0.2,
                                                                           step_size=0.05))
    with pytest.raises(CheckpointError, match="best trial t1 has no checkpoint"):
        check_checkpoint(None, "best trial t1")
    empty = tune.Checkpoint.from_directory(tmp_path)
    with pytest.raises(CheckpointError, match=rf"trial checkpoint {tmp_path}: no trainer.pt"):
        restore(trainer, empty)  # a resumed trial fails; it does not start again at epoch 1
    with pytest.raises(CheckpointError, match=rf"t1: its checkpoint {tmp_path}/trainer.pt is "
                                              "missing"):
        check_checkpoint(empty, "t1")
    path = trainer.save(tmp_path)
    check_checkpoint(empty, "t1")  # intact: no error
    flip(path, data_offset(path, "data/0"))
    for call in (lambda: check_checkpoint(empty, "t1"), lambda: restore(trainer, empty)):
        with pytest.raises(CheckpointError, match=rf"{path} is damaged"):
            call()
