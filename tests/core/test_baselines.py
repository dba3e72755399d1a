"""Comparison methods (SPEC §4) and the IGDM add-on: the step on real digits, losses by hand."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn as nn

from ablate.core.attacks import OBJECTIVES, attack
from ablate.core.igdm import igdm_term
from ablate.core.methods import get_method, method_names
from ablate.core.passes import Passes
from ablate.core.step import train_step

ATTACK = dict(eps=0.2, step_size=0.05, steps=3)
BASELINES = ["pgd_at", "trades", "ard", "rslad", "mtard", "adaad"]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def defaults(method: str, **over: object) -> dict:
    return get_method(method).params(**over).model_dump()


def step(data, make_net, method: str, *, update_teacher: bool = False, igdm: dict | None = None,
         **params: object):
    """One train_step from fixed initial states; returns metrics, models and their states before."""
    nets = {"student": make_net(0), "clean": make_net(1, 8), "robust": make_net(2, 8)}
    before = {k: snapshot(m) for k, m in nets.items()}
    x, y = data.train.x[:32], data.train.y[:32]
    torch.manual_seed(0)
    out = train_step(
        method=method, params=defaults(method, **params), state=get_method(method).init_state(),
        student=nets["student"], clean_teacher=nets["clean"], robust_teacher=nets["robust"],
        x=x, y=y, optimizer=torch.optim.SGD(nets["student"].parameters(), lr=0.1),
        teacher_optimizer=torch.optim.SGD(nets["robust"].parameters(), lr=0.1),
        update_teacher=update_teacher, igdm=igdm, **ATTACK)
    return out, nets, before


# --- every registered method through the real step ----------------------------------------------

def test_all_baselines_registered() -> None:
    assert set(BASELINES) <= set(method_names())
    for name in BASELINES:
        spec = get_method(name)
        assert spec.params().name == name and spec.objective in OBJECTIVES and not spec.itt
        assert spec.summary
        with pytest.raises(ValueError):
            spec.params(nope=1)


@pytest.mark.parametrize("method", sorted(method_names()))
def test_step_gradients_reach_only_the_student(small_digits, make_net, method: str) -> None:
    out, nets, before = step(small_digits, make_net, method)
    assert math.isfinite(out["loss"])
    for role in ("clean", "robust"):
        assert all(p.grad is None for p in nets[role].parameters())
        assert state_equal(before[role], snapshot(nets[role]))  # weights and BN buffers
    assert not state_equal(before["student"], snapshot(nets["student"]))


@pytest.mark.parametrize("method", sorted(method_names()))
def test_only_itt_methods_update_the_robust_teacher(small_digits, make_net, method: str) -> None:
    out, nets, before = step(small_digits, make_net, method, update_teacher=True)
    changed = not state_equal(before["robust"], snapshot(nets["robust"]))
    assert changed == get_method(method).itt
    assert ("teacher_loss" in out) == get_method(method).itt
    assert state_equal(before["clean"], snapshot(nets["clean"]))


def test_ciard_is_the_itt_method() -> None:
    assert get_method("ciard").itt


@pytest.mark.parametrize("method", sorted(method_names()))
def test_same_seed_same_loss(small_digits, make_net, method: str) -> None:
    a, nets_a, _ = step(small_digits, make_net, method)
    b, nets_b, _ = step(small_digits, make_net, method)
    assert a == b
    assert state_equal(snapshot(nets_a["student"]), snapshot(nets_b["student"]))


@pytest.mark.parametrize(
    ("method", "computed"),
    [
        ("pgd_at", ["s_adv"]),
        ("trades", ["s_adv", "s_nat"]),
        ("ard", ["rt_nat", "s_adv"]),  # α = 1: no CE(S(x), y)
        ("rslad", ["rt_nat", "s_adv", "s_nat"]),
        ("mtard", ["rt_adv", "s_adv", "s_nat", "t_nat"]),
        ("adaad", ["rt_adv", "s_adv"]),  # α = 1: no clean term
    ],
)
def test_default_losses_run_only_the_passes_they_need(small_digits, method, computed) -> None:
    passes = linear_passes(small_digits.train.x[:8])
    get_method(method).loss(passes, small_digits.train.y[:8], defaults(method),
                            get_method(method).init_state())
    assert passes.computed == computed and passes.count == len(computed)


# --- losses against hand computations (linear nets: fixed random logits) -----------------------

def linear(seed: int, d_in: int = 64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, 10))


def linear_passes(x: torch.Tensor, seed: int = 0, robust: nn.Module | None = None) -> Passes:
    g = torch.Generator().manual_seed(seed)
    x_adv = (x + 0.2 * torch.rand(x.shape, generator=g).sub(0.5).sign()).clamp(0, 1)
    return Passes(student=linear(10), clean_teacher=linear(11),
                  robust_teacher=robust if robust is not None else linear(12),
                  x=x, x_adv=x_adv, update_teacher=False)


def hand_kl(target_logits: torch.Tensor, student_logits: torch.Tensor, temp: float = 1.0
            ) -> torch.Tensor:
    """Σ_c p log(p/q) / B with p the target, q the student (KL(S ‖ T) in the papers' notation)."""
    p = torch.softmax(target_logits / temp, dim=1)
    q = torch.softmax(student_logits / temp, dim=1)
    return (p * (p / q).log()).sum() / p.shape[0]


def hand_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -torch.softmax(logits, dim=1).log()[torch.arange(len(y)), y].mean()


@pytest.fixture
def xy(small_digits):
    return small_digits.train.x[:16], small_digits.train.y[:16]


def models(p: Passes):
    with torch.no_grad():
        s, t, r = p.student, p.clean_teacher, p.robust_teacher
        return s(p.x), s(p.x_adv), t(p.x), r(p.x), r(p.x_adv)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_pgd_at_loss_by_hand(xy) -> None:
    p = linear_passes(xy[0])
    _, s_adv, *_ = models(p)
    out = get_method("pgd_at").loss(p, xy[1], defaults("pgd_at"), {})
    assert close(out["loss"], hand_ce(s_adv, xy[1]))


def test_trades_loss_by_hand_and_gradient_through_both_sides(xy) -> None:
    x, y = xy
    p = linear_passes(x)
    s_nat, s_adv, *_ = models(p)
    out = get_method("trades").loss(p, y, defaults("trades"), {})
    assert close(out["loss"], hand_ce(s_nat, y) + 6.0 * hand_kl(s_nat, s_adv))
    # The KL target s(x) is not detached: its gradient differs from the CE term's alone.
    (g_all,) = torch.autograd.grad(out["loss"], p.s_nat(), retain_graph=True)
    (g_ce,) = torch.autograd.grad(nn.functional.cross_entropy(p.s_nat(), y), p.s_nat())
    assert not torch.allclose(g_all, g_ce)


def test_ard_loss_by_hand_with_both_terms(xy) -> None:
    x, y = xy
    p = linear_passes(x)
    s_nat, s_adv, _, r_nat, _ = models(p)
    out = get_method("ard").loss(p, y, defaults("ard", alpha=0.5), {})
    want = 0.5 * 30.0**2 * hand_kl(r_nat, s_adv, temp=30.0) + 0.5 * hand_ce(s_nat, y)
    assert close(out["loss"], want)
    assert defaults("ard")["alpha"] == 1.0 and defaults("ard")["temp"] == 30.0


def test_rslad_loss_by_hand_and_per_entry_reduction(xy) -> None:
    x, y = xy
    p = linear_passes(x)
    s_nat, s_adv, _, r_nat, _ = models(p)
    out = get_method("rslad").loss(p, y, defaults("rslad"), {})
    want = 5 / 6 * hand_kl(r_nat, s_adv) + 1 / 6 * hand_kl(r_nat, s_nat)
    assert close(out["loss"], want)
    mean = get_method("rslad").loss(p, y, defaults("rslad", kl_reduction="mean"), {})
    assert close(mean["loss"], want / 10)  # 1/C as large


def test_adaad_loss_by_hand(xy) -> None:
    x, y = xy
    p = linear_passes(x)
    s_nat, s_adv, _, r_nat, r_adv = models(p)
    out = get_method("adaad").loss(p, y, defaults("adaad", alpha=0.7), {})
    assert close(out["loss"], 0.7 * hand_kl(r_adv, s_adv) + 0.3 * hand_kl(r_nat, s_nat))
    out = get_method("adaad").loss(p, y, defaults("adaad"), {})  # paper α = 1
    assert close(out["loss"], hand_kl(r_adv, s_adv))


def test_mtard_weights_follow_the_hand_computed_sequence(small_digits) -> None:
    spec, params = get_method("mtard"), defaults("mtard")
    state = spec.init_state()
    w_nat, l0 = 0.5, None
    for i in range(3):
        batch = slice(16 * i, 16 * (i + 1))
        xb, yb = small_digits.train.x[batch], small_digits.train.y[batch]
        p = linear_passes(xb, seed=i)
        s_nat, s_adv, t_nat, _, r_adv = models(p)
        l_nat, l_adv = hand_kl(t_nat, s_nat).item(), hand_kl(r_adv, s_adv).item()
        l0 = l0 or (l_nat, l_adv)
        r_nat, r_adv_ = l_nat / l0[0], l_adv / l0[1]
        w_nat = w_nat - 0.025 * (w_nat - r_nat / (r_nat + r_adv_))
        out = spec.loss(p, yb, params, state)
        assert math.isclose(state["w_nat"], w_nat, rel_tol=1e-5)
        assert math.isclose(state["w_nat"] + state["w_adv"], 1.0, abs_tol=1e-12)
        assert close(out["loss"], torch.tensor(w_nat * l_nat + (1 - w_nat) * l_adv))
    assert state["w_nat"] != 0.5  # the losses moved, so did the weights
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == state  # plain floats: checkpointable


# --- IGDM ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("distance", ["kl", "l1", "l2"])
@pytest.mark.parametrize(("beta", "gamma"), [(1.0, 0.0), (1.0, 1.0), (0.5, 2.0)])
def test_igdm_zero_for_identical_nets_positive_otherwise(small_digits, make_net, distance, beta,
                                                         gamma) -> None:
    x, y = small_digits.train.x[:16], small_digits.train.y[:16]
    student = make_net(0).eval()
    x_adv = attack("ce", student, None, x, y, **ATTACK)
    for robust, zero in ((copy.deepcopy(student), True), (make_net(2, 8).eval(), False)):
        p = Passes(student=student, clean_teacher=None, robust_teacher=robust, x=x, x_adv=x_adv,
                   update_teacher=False)
        d = igdm_term(p, beta=beta, gamma=gamma, distance=distance)
        assert math.isfinite(d.item()) and d.requires_grad
        assert (d.item() == 0.0) if zero else (d.item() > 0.0)


def test_igdm_reuses_passes_on_x_and_x_adv(xy) -> None:
    p = linear_passes(xy[0])
    igdm_term(p, beta=1.0, gamma=0.0, distance="kl")
    assert p.computed == ["rt_adv", "rt_nat", "s_adv", "s_nat"] and p.count == 4
    igdm_term(p, beta=1.0, gamma=1.0, distance="kl")  # adds S and T on x − δ, once
    igdm_term(p, beta=1.0, gamma=1.0, distance="l1")
    assert p.count == 6


def test_igdm_l2_by_hand_with_clamping(xy) -> None:
    p = linear_passes(xy[0])
    x, delta = p.x, p.x_adv - p.x
    xp, xm = (x + 2.0 * delta).clamp(0, 1), (x - 1.5 * delta).clamp(0, 1)
    assert not torch.equal(xm, x - 1.5 * delta)  # the clamp matters here
    with torch.no_grad():
        s, r = p.student, p.robust_teacher
        want = ((s(xp) - s(xm)) - (r(xp) - r(xm))).pow(2).mean()
    assert close(igdm_term(p, beta=2.0, gamma=1.5, distance="l2"), want)
    with pytest.raises(ValueError, match="distance"):
        igdm_term(p, beta=1.0, gamma=0.0, distance="cos")


def test_igdm_in_the_step_reuses_the_methods_passes(small_digits, make_net) -> None:
    igdm = dict(weight=0.5, beta=1.0, gamma=0.0, distance="kl")
    out, *_ = step(small_digits, make_net, "rslad", igdm=igdm)
    assert out["igdm"] > 0 and out["passes"] == 4  # RSLAD's three + t'(x*)


# --- the new PGD objectives ---------------------------------------------------------------------

def test_new_objectives_need_a_robust_teacher(xy) -> None:
    for name in ("kl_robust_teacher_nat", "kl_robust_teacher"):
        with pytest.raises(ValueError, match="robust teacher"):
            OBJECTIVES[name](linear(0), linear(1), xy[0], xy[1], None)


def test_new_objectives_values_and_targets(xy) -> None:
    x, y = xy
    s, r = linear(0), linear(1)
    x2 = (x + 0.1).clamp(0, 1)
    with torch.no_grad():
        assert OBJECTIVES["trades_kl"](s, None, x, y)(x).item() == pytest.approx(0.0, abs=1e-6)
        assert close(OBJECTIVES["trades_kl"](s, None, x, y)(x2), hand_kl(s(x), s(x2)))
        assert close(OBJECTIVES["kl_robust_teacher_nat"](s, None, x, y, r)(x2),
                     hand_kl(r(x), s(x2)))
        assert close(OBJECTIVES["kl_robust_teacher"](s, None, x, y, r)(x2), hand_kl(r(x2), s(x2)))
    # AdaAD's inner maximisation differentiates through the teacher too: the input gradient
    # differs from the one with the teacher's output held fixed.
    z = x2.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(OBJECTIVES["kl_robust_teacher"](s, None, x, y, r)(z), z)
    z2 = x2.clone().requires_grad_(True)
    fixed = OBJECTIVES["kl_robust_teacher_nat"](s, None, x2, y, r)(z2)  # t'(x2) as fixed target
    (g_fixed,) = torch.autograd.grad(fixed, z2)
    assert not torch.allclose(g, g_fixed)
