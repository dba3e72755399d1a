"""Compute switches (bf16/fp16 autocast, channels-last, compile): the CIARD step stays close to
fp32, x* stays a valid perturbation, and a run resumes bit for bit with the switches on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ablate.config import ExperimentConfig, load_config
from ablate.core.attacks import attack
from ablate.core.catalog import CiardParams
from ablate.core.compute import autocast
from ablate.core.settings import (
    AttackSettings,
    ComputeSettings,
    EvalSettings,
    IttSettings,
    OptimSettings,
)
from ablate.core.step import train_step
from ablate.core.trainer import Trainer
from tests.helpers import REPO

EPS = 0.2
# Stated tolerances of one bf16/fp16 CIARD step against fp32 (measured: loss 0.03% / 0.2%,
# update cosine 0.9998, relative update error 2%).
LOSS_RTOL, MIN_COSINE, UPDATE_RTOL = 0.01, 0.995, 0.1


def one_step(data, make_net, amp: str) -> tuple[float, torch.Tensor]:
    student, clean, robust = make_net(0, 8), make_net(1, 16), make_net(2, 16)
    before = [p.detach().clone() for p in student.parameters()]
    opt = torch.optim.SGD(student.parameters(), lr=1.0)  # the update is minus the gradient
    torch.manual_seed(5)  # the attack's start
    out = train_step(method="ciard", params=CiardParams(lam=0.1).model_dump(), state={},
                     student=student, clean_teacher=clean, robust_teacher=robust,
                     x=data.train.x[:64], y=data.train.y[:64], optimizer=opt, eps=EPS,
                     step_size=0.05, steps=5, amp=amp)
    update = torch.cat([(b - p.detach()).flatten()
                        for b, p in zip(before, student.parameters(), strict=True)])
    return out["loss"], update


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_step_stays_close_to_fp32(digits, make_net, amp: str) -> None:
    loss32, update32 = one_step(digits, make_net, "none")
    loss, update = one_step(digits, make_net, amp)
    assert loss != loss32  # the switch did something
    assert abs(loss - loss32) <= LOSS_RTOL * abs(loss32)
    assert torch.nn.functional.cosine_similarity(update, update32, dim=0) >= MIN_COSINE
    assert (update - update32).norm() <= UPDATE_RTOL * update32.norm()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("objective", ["ce", "kl_clean_teacher", "trades_kl"])
def test_x_adv_stays_fp32_in_the_ball_and_the_box(small_digits, make_net, amp: str,
                                                  objective: str) -> None:
    x, y = small_digits.train.x[:32], small_digits.train.y[:32]
    with autocast(x.device, amp):
        x_adv = attack(objective, make_net(0), make_net(1), x, y, eps=EPS, step_size=0.1,
                       steps=3, start="uniform")
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)


def make_trainer(data, make_net, **compute) -> Trainer:
    return Trainer(student=make_net(0), clean_teacher=make_net(1, 8),
                   robust_teacher=make_net(2, 8), data=data,
                   optim=OptimSettings(epochs=2, batch_size=64, lr=0.05),
                   attack=AttackSettings(eps=EPS, step_size=0.05, steps=2),
                   itt=IttSettings(freeze_epochs=1, teacher_lr=0.01),
                   eval=EvalSettings(val_steps=2), compute=ComputeSettings(**compute))


@pytest.mark.parametrize("switches", [dict(amp="bf16", channels_last=True),
                                      dict(amp="fp16")])
def test_resume_with_switches_matches_the_uninterrupted_run(small_digits, make_net,
                                                            tmp_path: Path, switches) -> None:
    full = make_trainer(small_digits, make_net, **switches)
    list(full.run())
    first = make_trainer(small_digits, make_net, **switches)
    first.run_epoch()
    first.save(tmp_path)
    resumed = make_trainer(small_digits, make_net, **switches)
    assert resumed.restore(tmp_path)
    list(resumed.run())
    for a, b in ((full.student, resumed.student), (full.robust_teacher, resumed.robust_teacher)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                     b.state_dict().values(), strict=True))
    if switches["amp"] == "fp16":  # the loss scale is part of the checkpoint
        assert full.scaler.get_scale() == resumed.scaler.get_scale()
    assert full.history == resumed.history


def test_channels_last_models_and_batches(small_digits, make_net) -> None:
    trainer = make_trainer(small_digits, make_net, channels_last=True)
    conv = next(p for p in trainer.student.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    trainer.run_epoch()  # and it trains


def test_default_compute_leaves_config_hashes_unchanged() -> None:
    """Configs, run names and resumable experiments from before the compute block keep their
    hashes: the default block is not part of any dump."""
    cfg = load_config(REPO / "search_spaces/base/digits.yaml")
    assert "compute" not in cfg.model_dump(mode="json")
    assert ExperimentConfig.model_validate(cfg.model_dump()) == cfg
    bf16 = load_config(REPO / "search_spaces/base/digits.yaml", ["compute.amp=bf16"])
    assert bf16.model_dump(mode="json")["compute"]["amp"] == "bf16"
    assert bf16.digest() != cfg.digest()


@pytest.mark.slow
def test_compiled_models_train_and_keep_their_checkpoint_keys(small_digits, make_net,
                                                              tmp_path: Path) -> None:
    plain = make_trainer(small_digits, make_net)
    compiled = make_trainer(small_digits, make_net, compile=True)
    compiled.run_epoch()
    compiled.save(tmp_path)
    assert compiled.student.state_dict().keys() == plain.student.state_dict().keys()
    assert plain.restore(tmp_path)  # a compiled run's checkpoint loads uncompiled
