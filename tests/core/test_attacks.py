"""PGD invariants: ε-ball, [0,1] box, objective increases, no parameter gradients touched."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.core.attacks import OBJECTIVES, attack, pgd


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 5))


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 4, 4, generator=g)
    x[0] = 0.0  # corners of the box, where clipping matters
    x[1] = 1.0
    return x, torch.randint(0, 5, (16,), generator=g)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
@pytest.mark.parametrize("start", ["normal", "uniform", "none"])
def test_pgd_stays_in_ball_and_box(batch, objective: str, start: str) -> None:
    x, y = batch
    eps = 0.1
    x_adv = attack(objective, tiny_net(1), tiny_net(2), x, y, robust_teacher=tiny_net(3),
                   eps=eps, step_size=0.04, steps=5, start=start)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_pgd_raises_its_objective(batch, objective: str) -> None:
    x, y = batch
    student, teacher, robust = tiny_net(1), tiny_net(2), tiny_net(3)
    fn = OBJECTIVES[objective](student, teacher, x, y, robust)
    # TRADES' KL(s(x') ‖ s(x)) has a zero gradient at x' = x, hence its tiny Gaussian start.
    start = "normal" if objective == "trades_kl" else "none"
    torch.manual_seed(0)
    x_adv = attack(objective, student, teacher, x, y, robust_teacher=robust, eps=0.1,
                   step_size=0.02, steps=10, start=start)
    with torch.no_grad():
        assert fn(x_adv).item() > fn(x).item() + 1e-3


def test_pgd_ce_lowers_accuracy_more_than_random_noise(batch) -> None:
    x, _ = batch
    net = tiny_net(3)
    with torch.no_grad():
        y = net(x).argmax(1)  # labels the net gets right by construction
    x_adv = attack("ce", net, None, x, y, eps=0.3, step_size=0.05, steps=20, start="uniform")
    with torch.no_grad():
        assert F.cross_entropy(net(x_adv), y) > F.cross_entropy(net(x), y)
        assert (net(x_adv).argmax(1) == y).float().mean() < 1.0


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_pgd_leaves_parameter_gradients_untouched(batch, objective: str) -> None:
    x, y = batch
    nets = tiny_net(1), tiny_net(2), tiny_net(3)
    attack(objective, *nets[:2], x, y, robust_teacher=nets[2], eps=0.1, step_size=0.02, steps=3)
    assert all(p.grad is None for net in nets for p in net.parameters())


def test_pgd_zero_steps_with_no_start_returns_input(batch) -> None:
    x, _ = batch
    out = pgd(lambda z: z.sum(), x, eps=0.1, step_size=0.01, steps=0, start="none")
    assert torch.equal(out, x)


def test_unknown_objective_is_an_error(batch) -> None:
    x, y = batch
    with pytest.raises(ValueError, match="unknown attack objective"):
        attack("nope", tiny_net(1), None, x, y, eps=0.1, step_size=0.01, steps=1)


def test_detached_clean_teacher_objective_follows_the_student_only(batch) -> None:
    x, y = batch
    student, teacher = tiny_net(1), tiny_net(2)
    x0 = x.clone().requires_grad_(True)

    def kl_to(target_logits: torch.Tensor) -> torch.Tensor:
        # KL(s(x0) ‖ t(x0)) = sum_c p_t (log p_t − log p_s), averaged over the batch
        log_ps, log_pt = F.log_softmax(student(x0), 1), F.log_softmax(target_logits, 1)
        return (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()

    (g_detached,) = torch.autograd.grad(kl_to(teacher(x0).detach()), [x0])
    (g_joint,) = torch.autograd.grad(kl_to(teacher(x0)), [x0])
    for name, expected in (("kl_clean_teacher_detached", g_detached),
                           ("kl_clean_teacher", g_joint)):
        z = x.clone().requires_grad_(True)
        fn = OBJECTIVES[name](student, teacher, x, y, None)
        (got,) = torch.autograd.grad(fn(z), [z])
        assert torch.allclose(got, expected, atol=1e-6), name
    assert not torch.allclose(g_detached, g_joint, atol=1e-4)  # the teacher's gradient matters


def test_normal_start_takes_its_first_gradient_unclamped(batch) -> None:
    # Released codes (CIARD, RSLAD, MTARD, TRADES) step from x + 0.001·N(0, I) without clamping.
    x, _ = batch
    seen: list[torch.Tensor] = []

    def objective(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.detach().clone())
        return (z * torch.arange(z.numel()).reshape(z.shape).sin()).sum()

    torch.manual_seed(0)
    out = pgd(objective, x, eps=0.1, step_size=0.01, steps=2, start="normal")
    torch.manual_seed(0)
    assert torch.equal(seen[0], x + 1e-3 * torch.randn_like(x))
    assert seen[0].min() < 0 and seen[0].max() > 1  # x has pixels at 0 and 1
    assert out.min() >= 0 and out.max() <= 1 and (out - x).abs().max() <= 0.1 + 1e-6
    zero_steps = pgd(objective, x, eps=0.1, step_size=0.01, steps=0, start="normal")
    assert zero_steps.min() >= 0 and zero_steps.max() <= 1  # projected even without a step
