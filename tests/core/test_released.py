"""The `released` preset against an independent re-implementation of one training step of the
released CIARD code (github.com/eminentgu/CIARD, CIARD.py + mtard_loss.py), written here from
that code's semantics, not from ablate's functions. The preset is loaded from its YAML, only
data and architectures are shrunk (synthetic CIFAR-shaped images, tiny CNNs with BatchNorm)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.build import build_net, build_trainer
from ablate.config import load_config
from ablate.core.data import Dataset, iterate_batches, load_dataset
from ablate.core.methods import get_method
from tests.helpers import REPO

PRESET = REPO / "search_spaces" / "base" / "cifar10_released.yaml"
TINY_MODELS = ["device=cpu", "data.name=synthetic", "student.arch=small_cnn",
               "student.kwargs={width: 4}", "teachers.clean.arch=small_cnn",
               "teachers.clean.kwargs={width: 8}", "teachers.robust.arch=small_cnn",
               "teachers.robust.kwargs={width: 8}"]
EPS, STEP = 8 / 255, 2 / 255


# --- the released code, re-implemented ----------------------------------------------------------

def kl_loss(log_p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """CIARD.py's elementwise ``kl_loss(a, b) = -a*b + log(b + 1e-5)*b``."""
    return -log_p * q + torch.log(q + 1e-5) * q


def scale_to_magnitude(a: float, b: float, c: float) -> float:
    """CIARD.py's loss3 weight: 10^(min(mag a, mag b) - mag c), exact zeros nudged to 1e-7."""
    a, b, c = (v + 1e-7 if math.isclose(v, 0, rel_tol=1e-9) else v for v in (a, b, c))
    mag = [math.floor(math.log10(abs(v))) for v in (a, b, c)]
    return 10.0 ** (min(mag[0], mag[1]) - mag[2])


@dataclass
class ReleasedStep:
    loss: float
    student_grads: list[torch.Tensor]
    teacher_grads: list[torch.Tensor] | None
    temps: tuple[float, float]


def released_step(student: nn.Module, teacher: nn.Module, teacher_nat: nn.Module,
                  x: torch.Tensor, y: torch.Tensor, *, temp_adv: float, temp_nat: float,
                  teacher_steps: bool, seed: int) -> ReleasedStep:
    """One batch of CIARD.py's loop (epoch > 50 when ``teacher_steps``); the attack start draws
    from torch's global RNG seeded with ``seed``."""
    torch.manual_seed(seed)
    student.train()
    teacher.train()  # from epoch 1 on, also while the teacher is frozen
    student_nat_logits = student(x)  # before the attack: moves the student's BN statistics
    with torch.no_grad():
        teacher_nat_logits = teacher_nat(x)
    # robust_inner_loss_push: CE attack on the student in eval mode, unclamped normal start
    student.eval()
    x_adv = x.detach() + 0.001 * torch.randn(x.shape)
    for _ in range(10):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_ce = F.cross_entropy(student(x_adv), y)
        grad = torch.autograd.grad(loss_ce, [x_adv])[0]
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    student.train()
    teacher.train()
    teacher_nat.eval()
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    student_adv_logits = student(x_adv)
    teacher_adv_logits = teacher(x_adv)
    nat_adv_logits = teacher_nat(x_adv)

    kl1 = torch.mean(kl_loss(F.log_softmax(student_adv_logits, dim=1),
                             F.softmax(teacher_adv_logits.detach() / temp_adv, dim=1)))
    kl2 = torch.mean(kl_loss(F.log_softmax(student_nat_logits, dim=1),
                             F.softmax(teacher_nat_logits.detach() / temp_nat, dim=1)))
    h_adv = torch.mean(torch.log(F.softmax(teacher_adv_logits.detach() / temp_adv, dim=1) + 1e-5)
                       * F.softmax(teacher_adv_logits.detach() / temp_adv, dim=1))
    h_nat = torch.mean(torch.log(F.softmax(teacher_nat_logits.detach() / temp_nat, dim=1) + 1e-5)
                       * F.softmax(teacher_nat_logits.detach() / temp_nat, dim=1))
    new_adv = temp_adv - 0.001 * torch.sign(h_adv / h_nat - 1).item()
    new_nat = temp_nat - 0.001 * torch.sign(h_nat / h_adv - 1).item()
    temps = (max(min(10, new_adv), 1), max(min(10, new_nat), 1))
    total = 1 * kl1 + 1 * kl2
    wrong = (torch.argmax(nat_adv_logits, dim=1) != y).nonzero(as_tuple=True)[0]
    if wrong.numel():
        kl3 = torch.mean(kl_loss(F.log_softmax(student_adv_logits[wrong] / 5, dim=1),
                                 F.softmax(nat_adv_logits[wrong].detach(), dim=1)))
        total = total - scale_to_magnitude(kl1.item(), kl2.item(), kl3.item()) * kl3
    student_grads = torch.autograd.grad(total, list(student.parameters()), retain_graph=True)
    teacher_grads = None
    if teacher_steps:
        ce = F.cross_entropy(teacher_adv_logits, y)
        teacher_grads = list(torch.autograd.grad(ce, list(teacher.parameters())))
    return ReleasedStep(total.item(), list(student_grads), teacher_grads, temps)


def released_teacher_lr(epoch: int) -> float:
    """CIARD.py's teacher LR in its (1-based) epoch > 50."""
    p = (epoch - 50) / (300 - 50)
    return 1e-4 * (0.5 + 0.5 * math.cos(math.pi * p)) * math.exp(-0.01 * p * p)


# --- the preset, through ablate's config -> trainer path ----------------------------------------

def preset_trainer(start_epoch: int):
    cfg = load_config(PRESET, TINY_MODELS)
    full = load_dataset("synthetic", synthetic_size=(128, 16, 16))
    data = Dataset("synthetic", full.train, full.val, full.test, 10, augment=False)
    torch.manual_seed(5)
    clean = build_net(cfg.teachers.clean, data).eval()
    robust = build_net(cfg.teachers.robust, data).eval()
    trainer = build_trainer(cfg, data, clean, robust, torch.device("cpu"))
    trainer.epoch = start_epoch
    # the released code's models, copied before ablate's step touches anything
    models = (copy.deepcopy(trainer.student), copy.deepcopy(trainer.robust_teacher),
              copy.deepcopy(clean))
    (x, y), = iterate_batches(data.train, 128, shuffle=True,
                              generator=torch.Generator().manual_seed(cfg.seed))
    return cfg, trainer, models, x, y


@pytest.mark.parametrize("epoch", [0, 60])  # robust teacher frozen (BN in train mode) / ITT
def test_released_preset_step_matches_the_released_code(epoch: int) -> None:
    cfg, trainer, (student, teacher, teacher_nat), x, y = preset_trainer(epoch)
    initial = copy.deepcopy(teacher.state_dict())
    metrics = trainer.train_epoch()  # one batch of 128: one step
    ref = released_step(student, teacher, teacher_nat, x, y, temp_adv=1.0, temp_nat=1.0,
                        teacher_steps=epoch >= 50, seed=cfg.seed)
    assert metrics["push_empty_frac"] == 0.0  # J populated: the push term took part
    assert metrics["loss"] == pytest.approx(ref.loss, abs=1e-6)
    for ours, theirs in zip(trainer.student.parameters(), ref.student_grads, strict=True):
        assert (ours.grad - theirs).abs().max() < 1e-6
    assert (trainer.state["tau_adv"], trainer.state["tau_nat"]) == pytest.approx(ref.temps)
    if epoch >= 50:
        assert metrics["teacher_lr"] == pytest.approx(released_teacher_lr(epoch + 1), rel=1e-12)
        for ours, theirs in zip(trainer.robust_teacher.parameters(), ref.teacher_grads,
                                strict=True):
            assert (ours.grad - theirs).abs().max() < 1e-6
    else:  # frozen: weights untouched, BatchNorm statistics moved (train mode, as released)
        assert metrics["teacher_lr"] == 0.0
        ours, theirs = trainer.robust_teacher.state_dict(), teacher.state_dict()
        for name, _ in trainer.robust_teacher.named_parameters():
            assert torch.equal(ours[name], initial[name])
        stats = [k for k in initial if "running" in k]
        assert stats and all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in stats)
        assert any(not torch.equal(ours[k], initial[k]) for k in stats)


def released_temp_learn_rate(batches_per_epoch: int, last_epoch: int) -> float:
    """CIARD.py's temp_learn_rate after the last batch of its 1-based ``last_epoch``:
    ``if epoch in [215,260,285]: temp_learn_rate *= 0.1`` runs inside the batch loop."""
    rate = 0.001
    for epoch in range(1, last_epoch + 1):
        for _ in range(batches_per_epoch):
            if epoch in [215, 260, 285]:
                rate *= 0.1
    return rate


def test_released_temperature_step_shrinks_per_batch_only_in_epochs_215_260_285() -> None:
    method = get_method("ciard")
    params = method.params(adaptive_temps=True,
                           adaptive_temps_decay_epochs=[214, 259, 284]).model_dump()
    decaying = [e for e in range(300) if method.epoch_params(params, e)["temps_decaying"]]
    assert decaying == [214, 259, 284]
    # Through real epochs of 2 batches each: 0-based 214 (the released 215) shrinks the step
    # twice, 215 leaves it where it got to (decaying on from 215 would give 1e-7).
    cfg, trainer, *_ = preset_trainer(214)
    trainer.batch_size = 64
    for _ in range(2):
        trainer.train_epoch()
        trainer.epoch += 1
        lr = cfg.method.temp_lr * trainer.state["temp_lr_scale"]
        assert lr == pytest.approx(released_temp_learn_rate(2, trainer.epoch), rel=1e-12)
    assert trainer.state["temp_lr_scale"] == pytest.approx(0.01)
    # The updates moved each temperature by at most 0.001 + 0.0001 + 2e-5 from 1 (clipped at 1).
    assert 1.0 <= trainer.state["tau_adv"] <= 1.0012 and 1.0 <= trainer.state["tau_nat"] <= 1.0012


def test_the_replaced_freeze_epoch_key_loads_as_never_and_is_refused_with_a_value() -> None:
    params = get_method("ciard").params
    assert params(adaptive_temps_freeze_epoch=None).adaptive_temps_decay_epochs == []  # old dumps
    with pytest.raises(ValueError, match="replaced by `adaptive_temps_decay_epochs`"):
        params(adaptive_temps_freeze_epoch=214)
    # Unused, the new knob stays out of JSON dumps: hashes of configs without it do not move.
    assert "adaptive_temps_decay_epochs" not in params().model_dump(mode="json")
    assert params().model_dump()["adaptive_temps_decay_epochs"] == []  # what the loss reads
