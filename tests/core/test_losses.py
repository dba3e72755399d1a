"""Loss terms against independent hand computations (plain Python math, no torch softmax)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ablate.core.losses import auto_lambda, kl, push_loss, soft_targets, update_temperatures


def softmax_list(z: list[float], temp: float = 1.0) -> list[float]:
    e = [math.exp(v / temp) for v in z]
    s = sum(e)
    return [v / s for v in e]


def kl_hand(zs: list[float], zt: list[float], ts: float = 1.0, tt: float = 1.0) -> float:
    """sum_c p_t (log p_t - log p_s): divergence of the student from the teacher's target."""
    ps, pt = softmax_list(zs, ts), softmax_list(zt, tt)
    return sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt, strict=True))


ZS = [[1.0, 0.5, -0.3], [0.2, 2.0, 0.1], [-1.0, 0.0, 3.0], [0.7, 0.7, 0.1]]
ZT = [[2.0, 0.1, 0.0], [1.5, 0.2, 0.3], [0.0, 0.4, 2.5], [-0.5, 1.2, 0.9]]
Y = [0, 1, 2, 2]  # teacher argmax: 0, 0, 2, 1 -> wrong on samples 1 and 3


def test_kl_matches_hand_computation_and_direction() -> None:
    zs, zt = torch.tensor(ZS), torch.tensor(ZT)
    expected = sum(kl_hand(a, b) for a, b in zip(ZS, ZT, strict=True)) / len(ZS)
    got = kl(zs, soft_targets(zt))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # Same as torch's kl_div with the teacher as target (released-code convention) ...
    ref = F.kl_div(F.log_softmax(zs, 1), F.softmax(zt, 1), reduction="batchmean")
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    # ... and not the reverse direction.
    reverse = sum(kl_hand(b, a) for a, b in zip(ZS, ZT, strict=True)) / len(ZS)
    assert abs(got.item() - reverse) > 1e-3


def test_kl_mean_reduction_divides_by_classes() -> None:
    zs, zt = torch.tensor(ZS), torch.tensor(ZT)
    batchmean = kl(zs, soft_targets(zt)).item()
    assert kl(zs, soft_targets(zt), reduction="mean").item() == pytest.approx(batchmean / 3)


def test_kl_gradient_reaches_student_only() -> None:
    zs = torch.tensor(ZS, requires_grad=True)
    zt = torch.tensor(ZT, requires_grad=True)
    kl(zs, soft_targets(zt)).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None


@pytest.mark.parametrize(("ts", "tt"), [(4.0, 4.0), (5.0, 1.0)])
def test_push_loss_is_kl_over_teacher_errors(ts: float, tt: float) -> None:
    wrong = [i for i, row in enumerate(ZT) if row.index(max(row)) != Y[i]]
    assert wrong == [1, 3]
    expected = sum(kl_hand(ZS[i], ZT[i], ts, tt) for i in wrong) / len(wrong)
    got = push_loss(torch.tensor(ZS), torch.tensor(ZT), torch.tensor(Y),
                    student_temp=ts, teacher_temp=tt)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_push_loss_empty_set_is_exactly_zero_with_zero_gradient() -> None:
    zs = torch.tensor(ZS, requires_grad=True)
    zt = torch.tensor(ZT)
    y = zt.argmax(1)  # the clean teacher is right everywhere: J is empty
    loss = push_loss(zs, zt, y)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(zs.grad, torch.zeros_like(zs))


def test_auto_lambda_matches_released_rule() -> None:
    # min magnitude of 0.034 (-2) and 1.7 (0) is -2; push 250 has magnitude 2 -> 10^-4.
    assert auto_lambda(0.034, 1.7, 250.0) == pytest.approx(1e-4)
    assert auto_lambda(3.0, 0.5, 0.002) == pytest.approx(10.0 ** (-1 - -3))
    # A zero term is treated as 1e-7 (magnitude -7), never log(0).
    assert auto_lambda(0.0, 1.0, 1.0) == pytest.approx(1e-7)
    # A diverged step yields NaN (caught as a non-finite loss), not a ValueError from log10.
    assert math.isnan(auto_lambda(float("nan"), 1.0, 1.0))
    assert math.isnan(auto_lambda(1.0, 1.0, float("inf")))


def test_adaptive_temperatures_move_towards_equal_entropy_and_clip() -> None:
    flat = torch.tensor([[0.1, 0.0, 0.2]])  # high entropy
    peaked = torch.tensor([[8.0, 0.0, 0.0]])  # low entropy
    tau_adv, tau_nat = update_temperatures(2.0, 2.0, flat, peaked, lr=0.1)
    # The flatter (robust-teacher) side sharpens, the peaked side softens.
    assert tau_adv == pytest.approx(1.9) and tau_nat == pytest.approx(2.1)
    lo, hi = update_temperatures(1.0, 10.0, flat, peaked, lr=0.5)
    assert (lo, hi) == (1.0, 10.0)


def test_kl_with_log_eps_is_the_released_kl_loss_and_keeps_the_gradient() -> None:
    zs = torch.tensor(ZS, requires_grad=True)
    pt = F.softmax(torch.tensor(ZT), 1)
    log_ps = F.log_softmax(zs, 1)
    released = torch.mean(-log_ps * pt + torch.log(pt + 1e-5) * pt)  # CIARD.py's kl_loss
    ours = kl(zs, pt, reduction="mean", log_eps=1e-5)
    assert ours.item() == pytest.approx(released.item(), abs=1e-7)
    plain = kl(zs, pt, reduction="mean")
    assert abs(ours.item() - plain.item()) > 1e-7  # the eps shifts the value ...
    (g_eps,) = torch.autograd.grad(ours, [zs])
    (g_plain,) = torch.autograd.grad(plain, [zs])
    assert torch.allclose(g_eps, g_plain, atol=1e-9)  # ... not the gradient


def test_auto_lambda_nudges_only_exact_zeros() -> None:
    # CIARD.py: math.isclose(a, 0, rel_tol=1e-9) is true only for a == 0.
    assert auto_lambda(0.5, 0.05, 0.0) == pytest.approx(10.0 ** (-2 + 7))
    assert auto_lambda(0.5, 0.05, 3e-13) == pytest.approx(10.0 ** (-2 + 13))
