"""The baselines' released-code switches against hand-written re-implementations of their
released training steps (docs/methods.md, "Differences from the released code"):

- ARD (goldblum/AdversariallyRobustDistillation main.py): uniform PGD start not clamped to
  [0, 1] before the first gradient (``attack.start: uniform_unclamped``), and S(x) run although
  α = 1 leaves it out of the loss (``method.clean_pass``);
- AdaAD (boyellow/AdaAD main.py): S(x) run before S(x*) although α = 1 (``method.clean_pass``);
- RSLAD, MTARD (zibojia/RSLAD, zhaoshiji123/MTARD): ``kl_loss = -a*b + log(b + 1e-5)*b``
  (``method.kl_eps: 1e-5``), which moves MTARD's adaptive weights;
- CIARD (eminentgu/CIARD CIARD.py): a NaN push loss becomes 0 there; ablate stops the trial.

Each reference is written from the released code's semantics, not from ablate's functions.
The paper defaults are checked to differ, so each switch is shown to matter.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.core.methods import get_method
from ablate.core.passes import Passes
from ablate.core.step import train_step

EPS, STEP, STEPS = 0.2, 0.05, 3


def params(method: str, **over: object) -> dict:
    return get_method(method).params(**over).model_dump()


def ours(method: str, student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor,
         *, seed: int, clean: nn.Module | None = None, **kw: object) -> float:
    """One ablate step (SGD lr 0.1), KL averaged per entry as released; returns the loss."""
    torch.manual_seed(seed)
    options = {k: kw.pop(k) for k in ("start", "student_mode") if k in kw}
    out = train_step(method=method, params=params(method, kl_reduction="mean", **kw),
                     state=get_method(method).init_state(), student=student,
                     clean_teacher=clean, robust_teacher=teacher, x=x, y=y,
                     optimizer=torch.optim.SGD(student.parameters(), lr=0.1),
                     eps=EPS, step_size=STEP, steps=STEPS, **options)
    return out["loss"]


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6) for k in sa)


def stats_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if "running" in k)


@pytest.fixture
def setup(small_digits, make_net):
    """Student (BatchNorm, train mode) and robust teacher (eval mode), a digits batch: 8x8
    digits are mostly 0-valued pixels, where clamping a random start matters."""
    x, y = small_digits.train.x[:32], small_digits.train.y[:32]
    return make_net(0).train(), make_net(2, 8).eval(), x, y


# --- ARD ----------------------------------------------------------------------------------------

def released_ard_step(student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      *, alpha: float = 1.0, temp: float = 30.0, seed: int) -> float:
    """ARD main.py: AttackPGD (train mode, uniform start, CE summed), then
    basic_net(x*), teacher_net(x), basic_net(x), α·T²·KLDivLoss() + (1 − α)·CE, SGD step."""
    torch.manual_seed(seed)
    student.train()
    xa = x.detach() + torch.zeros_like(x).uniform_(-EPS, EPS)
    for _ in range(STEPS):
        xa.requires_grad_()
        with torch.enable_grad():
            loss = F.cross_entropy(student(xa), y, reduction="sum")
        grad = torch.autograd.grad(loss, [xa])[0]
        xa = xa.detach() + STEP * torch.sign(grad.detach())
        xa = torch.clamp(torch.min(torch.max(xa, x - EPS), x + EPS), 0.0, 1.0)
    outputs = student(xa)
    with torch.no_grad():  # its parameters have requires_grad False
        teacher_outputs = teacher(x)
    basic_outputs = student(x)
    loss = (alpha * temp * temp * nn.KLDivLoss()(F.log_softmax(outputs / temp, dim=1),
                                                 F.softmax(teacher_outputs / temp, dim=1))
            + (1.0 - alpha) * nn.CrossEntropyLoss()(basic_outputs, y))
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)


def test_ard_released_switches_equal_the_released_step(setup) -> None:
    student, teacher, x, y = setup
    ref = copy.deepcopy(student)
    want = released_ard_step(ref, teacher, x, y, seed=3)
    got = ours("ard", student, teacher, x, y, seed=3, start="uniform_unclamped",
               student_mode="train", clean_pass=True)
    assert got == pytest.approx(want, rel=1e-5)
    assert same_state(student, ref)  # weights and BatchNorm running statistics


def test_ard_paper_defaults_differ_from_the_released_step(setup) -> None:
    student, teacher, x, y = setup
    ref = copy.deepcopy(student)
    want = released_ard_step(ref, teacher, x, y, seed=3)
    # Start clamped to [0,1] before the first gradient: another x*, another loss.
    clamped = copy.deepcopy(student)
    got = ours("ard", clamped, teacher, x, y, seed=3, start="uniform", student_mode="train",
               clean_pass=True)
    assert got != pytest.approx(want, rel=1e-5)
    # Without S(x): the same loss and weights, other BatchNorm running statistics.
    skipped = copy.deepcopy(student)
    got = ours("ard", skipped, teacher, x, y, seed=3, start="uniform_unclamped",
               student_mode="train")
    assert got == pytest.approx(want, rel=1e-5)
    assert not stats_equal(skipped, ref)


# --- AdaAD --------------------------------------------------------------------------------------

def released_adaad_step(student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        *, alpha: float = 1.0, seed: int) -> float:
    """AdaAD main.py + AT_helper.adaad_inner_loss: x + 0.001·randn, KL summed through both
    models (eval mode), then train mode: net(x), net(x*), α·KLDivLoss()(adv) + (1 − α)·(nat)."""
    torch.manual_seed(seed)
    student.eval()
    teacher.eval()
    xa = x.detach() + 0.001 * torch.randn(x.shape).detach()
    for _ in range(STEPS):
        xa.requires_grad_()
        with torch.enable_grad():
            loss_kl = torch.sum(nn.KLDivLoss(reduction="none")(
                F.log_softmax(student(xa), dim=1), F.softmax(teacher(xa), dim=1)))
        grad = torch.autograd.grad(loss_kl, [xa])[0]
        xa = xa.detach() + STEP * torch.sign(grad.detach())
        xa = torch.clamp(torch.min(torch.max(xa, x - EPS), x + EPS), 0.0, 1.0)
    student.train()
    ori_outputs, adv_outputs = student(x), student(xa)
    with torch.no_grad():
        t_ori, t_adv = teacher(x), teacher(xa)
    loss = (alpha * nn.KLDivLoss()(F.log_softmax(adv_outputs, dim=1), F.softmax(t_adv, dim=1))
            + (1 - alpha) * nn.KLDivLoss()(F.log_softmax(ori_outputs, dim=1),
                                           F.softmax(t_ori, dim=1)))
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)


@pytest.mark.parametrize("alpha", [1.0, 0.7])
def test_adaad_clean_pass_equals_the_released_step(setup, alpha: float) -> None:
    student, teacher, x, y = setup
    ref = copy.deepcopy(student)
    want = released_adaad_step(ref, teacher, x, y, alpha=alpha, seed=4)
    got = ours("adaad", student, teacher, x, y, seed=4, alpha=alpha, clean_pass=True)
    assert got == pytest.approx(want, rel=1e-5)
    assert same_state(student, ref)


def test_adaad_without_clean_pass_moves_other_batchnorm_statistics(setup) -> None:
    student, teacher, x, y = setup
    ref = copy.deepcopy(student)
    want = released_adaad_step(ref, teacher, x, y, seed=4)
    assert ours("adaad", student, teacher, x, y, seed=4) == pytest.approx(want, rel=1e-5)
    assert not stats_equal(student, ref)


# --- RSLAD and MTARD: the released kl_loss ------------------------------------------------------

def released_kl_loss(log_q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """RSLAD's and MTARD's ``kl_loss(a, b) = -a*b + torch.log(b + 1e-5)*b``, then torch.mean."""
    return torch.mean(-log_q * p + torch.log(p + 1e-5) * p)


def linear_passes(x: torch.Tensor, seed: int) -> Passes:
    """Student, clean and robust teacher: one random linear net, each with its own small
    perturbation. The KL terms are small, as late in training, where the log-eps's shift of
    about eps per entry is no longer negligible beside them."""
    g = torch.Generator().manual_seed(seed)
    base = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    nets = []
    for _ in range(3):
        net = copy.deepcopy(base)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        nets.append(net)
    x_adv = (x + 0.2 * torch.rand(x.shape, generator=g).sub(0.5).sign()).clamp(0, 1)
    return Passes(student=nets[0], clean_teacher=nets[1], robust_teacher=nets[2], x=x,
                  x_adv=x_adv, update_teacher=False)


def released_mtard_step(student: nn.Module, teacher: nn.Module, teacher_nat: nn.Module,
                        x: torch.Tensor, y: torch.Tensor, *, seed: int) -> float:
    """mtard_resnet18_cifar10.py's first batch: teacher_nat(x); mtard_inner_loss_ce (eval mode,
    x + 0.001·randn, CE), then train mode: student(x*), teacher(x*), student(x); weights from
    0.5 toward the relative losses (both 1 on the first batch), the weighted kl_loss."""
    torch.manual_seed(seed)
    student.train()
    with torch.no_grad():
        teacher_nat_logits = teacher_nat(x)
    student.eval()
    xa = x.detach() + 0.001 * torch.randn(x.shape).detach()
    for _ in range(STEPS):
        xa.requires_grad_()
        with torch.enable_grad():
            loss_ce = nn.CrossEntropyLoss()(student(xa), y)
        grad = torch.autograd.grad(loss_ce, [xa])[0]
        xa = xa.detach() + STEP * torch.sign(grad.detach())
        xa = torch.clamp(torch.min(torch.max(xa, x - EPS), x + EPS), 0.0, 1.0)
    student.train()
    student_adv_logits = student(torch.clamp(xa, 0.0, 1.0))
    with torch.no_grad():
        teacher_adv_logits = teacher(xa)
    student_nat_logits = student(x)
    kl1 = released_kl_loss(F.log_softmax(student_adv_logits, dim=1),
                           F.softmax(teacher_adv_logits, dim=1))
    kl2 = released_kl_loss(F.log_softmax(student_nat_logits, dim=1),
                           F.softmax(teacher_nat_logits, dim=1))
    w_nat = 0.5 - 0.025 * (0.5 - 1.0 / (1.0 + 1.0))  # lhat = l / l_init = 1 on batch one
    loss = (1 - w_nat) * kl1 + w_nat * kl2
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)


def test_mtard_released_switches_equal_the_released_step(setup, make_net) -> None:
    student, teacher, x, y = setup
    clean, ref = make_net(1, 8).eval(), copy.deepcopy(student)
    want = released_mtard_step(ref, teacher, clean, x, y, seed=5)
    got = ours("mtard", student, teacher, x, y, seed=5, clean=clean, kl_eps=1e-5)
    assert got == pytest.approx(want, rel=1e-5)
    assert same_state(student, ref)  # S(x*) before S(x): the released running statistics


def test_rslad_kl_eps_gives_the_released_loss_value_and_the_same_gradient(setup) -> None:
    _, _, x, y = setup
    p = linear_passes(x, seed=0)
    log_q = lambda z: F.log_softmax(z, dim=1)  # noqa: E731
    t = F.softmax(p.rt_nat(), dim=1)
    want = (5 / 6 * released_kl_loss(log_q(p.s_adv()), t)
            + 1 / 6 * released_kl_loss(log_q(p.s_nat()), t))
    got = get_method("rslad").loss(p, y, params("rslad", kl_reduction="mean", kl_eps=1e-5), {})
    paper = get_method("rslad").loss(p, y, params("rslad", kl_reduction="mean"), {})
    assert got["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    assert abs(paper["loss"].item() - want.item()) > 1e-7  # the log-eps shifts the value...
    g_got = torch.autograd.grad(got["loss"], [p.s_adv(), p.s_nat()], retain_graph=True)
    g_paper = torch.autograd.grad(paper["loss"], [p.s_adv(), p.s_nat()])
    assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(g_got, g_paper, strict=True))


def test_mtard_kl_eps_weights_follow_the_released_sequence(small_digits) -> None:
    """MTARD's code divides each batch's kl_loss by the first batch's: with the log-eps the
    relative losses, hence the weights, are the released ones (and not the paper KL's)."""
    spec = get_method("mtard")
    released = params("mtard", kl_reduction="mean", kl_eps=1e-5)
    state, paper_state = spec.init_state(), spec.init_state()
    weight_nat, init = 0.5, None
    for i in range(4):
        batch = slice(16 * i, 16 * (i + 1))
        xb, yb = small_digits.train.x[batch], small_digits.train.y[batch]
        p = linear_passes(xb, seed=i)
        with torch.no_grad():
            kl1 = released_kl_loss(F.log_softmax(p.s_adv(), 1), F.softmax(p.rt_adv(), 1)).item()
            kl2 = released_kl_loss(F.log_softmax(p.s_nat(), 1), F.softmax(p.t_nat(), 1)).item()
        init = init or (kl2, kl1)
        lhat_nat, lhat_adv = kl2 / init[0], kl1 / init[1]
        weight_nat = weight_nat - 0.025 * (weight_nat - lhat_nat / (lhat_adv + lhat_nat))
        out = spec.loss(p, yb, released, state)
        spec.loss(p, yb, params("mtard", kl_reduction="mean"), paper_state)
        assert state["w_nat"] == pytest.approx(weight_nat, rel=1e-6)
        assert out["loss"].item() == pytest.approx(
            (1 - weight_nat) * kl1 + weight_nat * kl2, rel=1e-5)
    assert abs(paper_state["w_nat"] - state["w_nat"]) > 1e-5


# --- CIARD: a NaN push loss stops the step --------------------------------------------------------

class NanOnPerturbed(nn.Module):
    """A clean teacher whose logits are NaN on any input but the clean batch it was given."""

    def __init__(self, net: nn.Module, x: torch.Tensor) -> None:
        super().__init__()
        self.net, self.x = net, x

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.net(inputs)
        return out if torch.equal(inputs, self.x) else out * float("nan")


def test_ciard_nan_push_loss_stops_where_the_released_code_zeroes_it(setup, make_net) -> None:
    student, robust, x, y = setup
    clean = NanOnPerturbed(make_net(1, 8).eval(), x)
    # The released code: `if torch.isnan(kl_Loss3).any(): kl_Loss3 = 0`, total = KL1 + KL2.
    with torch.no_grad():
        t_adv = clean(x + 0.1)
        nan_push = torch.softmax(t_adv, dim=1).sum()
    assert torch.isnan(nan_push)  # what it would zero and train on
    before = {k: v.clone() for k, v in student.named_parameters()}
    with pytest.raises(FloatingPointError, match="ciard loss is not finite"):
        train_step(method="ciard", params=params("ciard", lam=0.1, kl_reduction="mean"),
                   state=get_method("ciard").init_state(), student=student,
                   clean_teacher=clean, robust_teacher=robust, x=x, y=y,
                   optimizer=torch.optim.SGD(student.parameters(), lr=0.1), objective="ce",
                   eps=EPS, step_size=STEP, steps=STEPS)
    assert all(torch.equal(v, before[k]) for k, v in student.named_parameters())  # no step
