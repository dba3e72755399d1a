"""FLOP counts of ablate.core.flops against counts done by hand: a Linear layer is 2·in·out
FLOPs per image forward; its backward is as much again for the weight gradient and again for
the input gradient when the input needs one (PGD's gradient is the input gradient only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from ablate.core.data import Dataset
from ablate.core.flops import ImageFlops, count_flops, time_steps, tiny_split, trainer_flops
from ablate.core.settings import AttackSettings, EvalSettings, IttSettings, OptimSettings
from ablate.core.step import train_step
from ablate.core.trainer import Trainer

IN, OUT, B = 64, 10, 3  # an 8x8 one-channel image, 10 classes
F = 2 * IN * OUT  # forward FLOPs of one image through the Linear layer

MODES = pytest.mark.parametrize("shapes_only", [True, False], ids=["shapes-only", "real"])


def linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(IN, OUT))


@MODES
def test_linear_forward_and_backward(shapes_only: bool) -> None:
    net = linear()
    x = torch.rand(B, 1, 8, 8)
    assert count_flops(lambda: net(x), shapes_only=shapes_only) == B * F
    # backward: the weight gradient only (the input needs none)
    assert count_flops(lambda: net(x).sum().backward(), shapes_only=shapes_only) == 2 * B * F
    xg = x.clone().requires_grad_(True)
    assert count_flops(lambda: net(xg).sum().backward(), shapes_only=shapes_only) == 3 * B * F
    # PGD's gradient: the input's only
    assert count_flops(lambda: torch.autograd.grad(net(xg).sum(), [xg]),
                       shapes_only=shapes_only) == 2 * B * F


@MODES
def test_conv_forward_and_backward(shapes_only: bool) -> None:
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    x = torch.rand(B, 2, 5, 5, requires_grad=True)
    forward = 2 * B * 5 * 5 * 3 * (2 * 3 * 3)  # one multiply-add per output and kernel tap
    assert count_flops(lambda: conv(x), shapes_only=shapes_only) == forward
    assert count_flops(lambda: conv(x).sum().backward(), shapes_only=shapes_only) == 3 * forward


def _step(update_teacher: bool, *, steps: int, push: bool = True,
          shapes_only: bool = True) -> int:
    student, clean, robust = linear(0), linear(1), linear(2)
    split = tiny_split((1, 8, 8), B)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    t_opt = torch.optim.SGD(robust.parameters(), lr=0.1)
    params = {"alpha": 0.5, "beta": 0.5, "lam": "auto", "push": push, "push_student_temp": 4.0,
              "push_teacher_temp": 4.0, "adaptive_temps": False, "temp_lr": 1e-3,
              "adaptive_temps_decay_epochs": [], "temp_min": 1.0, "temp_max": 10.0,
              "kl_reduction": "batchmean", "kl_eps": 0.0}
    return count_flops(lambda: train_step(
        method="ciard", params=params, state={}, student=student, clean_teacher=clean,
        robust_teacher=robust, x=split.x, y=split.y, optimizer=opt, teacher_optimizer=t_opt,
        update_teacher=update_teacher, objective="ce", eps=0.1, step_size=0.05, steps=steps,
        start="normal"), shapes_only=shapes_only)


@MODES
@pytest.mark.parametrize("steps", [0, 3])
def test_ciard_step_by_hand(steps: int, shapes_only: bool) -> None:
    """CE attack: K × (forward + input gradient) of the student; loss passes s(x), t(x),
    t'(x*), s(x*), t(x*) (the push set); backward: the student's weight gradient on x and x*,
    and with ITT the robust teacher's on x*."""
    attack = steps * 2 * F
    frozen = attack + 5 * F + 2 * F
    assert _step(False, steps=steps, shapes_only=shapes_only) == B * frozen
    assert _step(True, steps=steps, shapes_only=shapes_only) == B * (frozen + F)
    # without the push term t(x*) is never computed
    assert _step(False, steps=steps, push=False, shapes_only=shapes_only) == B * (frozen - F)


def _trainer(steps: int, val_steps: int, *, freeze: int = 1, epochs: int = 2,
             batch: int = 2) -> Trainer:
    split = tiny_split((1, 8, 8), batch)
    data = Dataset("digits", split, tiny_split((1, 8, 8)), tiny_split((1, 8, 8)), 10,
                   augment=False)
    return Trainer(student=linear(0), clean_teacher=linear(1), robust_teacher=linear(2),
                   data=data, method="ciard", method_params={"lam": 0.1},
                   optim=OptimSettings(epochs=epochs, batch_size=batch),
                   attack=AttackSettings(objective="ce", eps=0.1, step_size=0.05, steps=steps),
                   itt=IttSettings(freeze_epochs=freeze), eval=EvalSettings(val_steps=val_steps))


@MODES
def test_trainer_flops_by_hand(shapes_only: bool) -> None:
    """Validation: PGD-S on the student (forward + input gradient per step), then the student
    on x and x*, and each teacher on x and x*."""
    k, s = 4, 3
    trainer = _trainer(k, s)
    got = trainer_flops(trainer, shapes_only=shapes_only)
    assert got == ImageFlops(train=(2 * k + 7) * F, train_itt=(2 * k + 8) * F,
                             val=(2 * s + 6) * F)
    assert got.itt_differs and trainer.epoch == 0


def test_trainer_flops_without_itt() -> None:
    trainer = _trainer(2, 2, freeze=5, epochs=2)  # the teacher is never updated
    got = trainer_flops(trainer)
    assert got.train == got.train_itt == (2 * 2 + 7) * F and not got.itt_differs


def test_trainer_flops_refuses_more_than_a_batch() -> None:
    trainer = _trainer(1, 1)
    trainer.batch_size = 1
    with pytest.raises(ValueError, match="more than one batch"):
        trainer_flops(trainer)


def test_time_steps_times_real_steps() -> None:
    trainer = _trainer(2, 2, batch=8)
    t = time_steps(trainer, warmup=1, min_steps=3, min_seconds=0.0)
    assert t.steps >= 3 and t.images_per_s > 0 and t.seconds > 0
    before = [p.detach().clone() for p in trainer.robust_teacher.parameters()]
    t = time_steps(trainer, itt=True, warmup=0, min_steps=1, min_seconds=0.0)
    assert t.steps >= 1 and trainer.epoch == trainer.freeze_epochs
    after = list(trainer.robust_teacher.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def _macs_by_hooks(net: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of every Conv2d and Linear, from the shapes their forward hooks see."""
    macs = []

    def conv(m: nn.Conv2d, inputs: tuple[torch.Tensor], out: torch.Tensor) -> None:
        kh, kw = m.kernel_size
        macs.append(out.numel() * (m.in_channels // m.groups) * kh * kw)

    def fc(m: nn.Linear, inputs: tuple[torch.Tensor], out: torch.Tensor) -> None:
        macs.append(out.numel() * m.in_features)

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(fc)
    with torch.no_grad():
        net(x)
    return sum(macs)


@pytest.mark.parametrize("arch, shape", [("small_cnn", (1, 8, 8)), ("resnet18", (3, 32, 32)),
                                         ("mobilenet_v2", (3, 32, 32))])
def test_architecture_forward_is_twice_its_multiply_adds(arch: str, shape: tuple[int, ...]
                                                         ) -> None:
    from ablate.core.models import build_model

    net = build_model(arch, num_classes=10, in_channels=shape[0]).eval()
    x = torch.rand(2, *shape)
    assert count_flops(lambda: net(x)) == 2 * _macs_by_hooks(net, x)
    if arch == "resnet18":  # the well-known 0.56 GMAC of the CIFAR ResNet-18
        assert count_flops(lambda: net(x[:1])) == pytest.approx(2 * 0.5554e9, rel=1e-3)
