"""The step reads nothing back to the host (issue 29): every ``.item()``, ``float()``, ``int()``
or ``bool()`` of a tensor dispatches ``aten._local_scalar_dense`` (or ``aten.is_nonzero``), the
GPU sync that also forbids CUDA-graph capture; a dispatch mode counts them. The parts rewritten
for it are checked against the previous host-side code, kept here as the reference.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ablate.core.losses import (
    auto_lambda,
    auto_lambda_tensor,
    kl,
    masked_kl,
    neg_entropy,
    push_set,
    soft_targets,
    update_temperatures,
)
from ablate.core.methods import get_method, method_names
from ablate.core.methods.distillation import _mtard_update
from ablate.core.step import Divergence, step_tensors
from tests.core.test_trainer import make_trainer

SYNCS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default}
ATTACK = dict(eps=0.2, step_size=0.05, steps=2)


class CountSyncs(TorchDispatchMode):
    """Counts the host reads of tensors dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func in SYNCS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_the_counter_sees_every_kind_of_host_read() -> None:
    t = torch.tensor([1.5])
    with CountSyncs() as syncs:
        t.item(), float(t), int(t), bool(t > 0)
        if t.sum() > 0:
            pass
    assert syncs.count == 5  # (``tolist`` is not seen: StepMeans reads with it, once an epoch)


def _combos() -> list[tuple[str, dict, bool, dict | None, str]]:
    """(method, params, update_teacher, igdm, amp) over every method and CIARD switch."""
    igdm = {"weight": 0.5, "beta": 1.0, "gamma": 1.0, "distance": "kl"}
    out = [(m, {}, False, None, "none") for m in sorted(method_names())]
    for params in ({"push": False}, {"lam": "auto"}, {"lam": 0.3},
                   {"adaptive_temps": True, "lam": "auto"}, {"alpha": 0.0, "beta": 0.0}):
        for itt in (False, True):
            out.append(("ciard", params, itt, None, "none"))
    out += [("ciard", {"lam": "auto"}, True, igdm, "none"), ("rslad", {}, False, igdm, "none"),
            ("ciard", {"lam": "auto", "adaptive_temps": True}, True, None, "bf16"),
            ("mtard", {}, False, None, "bf16")]
    return out


@pytest.mark.parametrize("method, params, itt, igdm, amp", _combos())
def test_a_step_reads_nothing_back(small_digits, make_net, method, params, itt, igdm,
                                   amp) -> None:
    student, clean, robust = make_net(0), make_net(1, 8), make_net(2, 8)
    spec = get_method(method)
    state = spec.init_state()
    x, y = small_digits.train.x[:32], small_digits.train.y[:32]
    divergence = Divergence("cpu")
    kw = dict(method=method, params=spec.params(**params).model_dump(), state=state,
              student=student, clean_teacher=clean, robust_teacher=robust, x=x, y=y,
              optimizer=torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9),
              teacher_optimizer=torch.optim.SGD(robust.parameters(), lr=0.01),
              update_teacher=itt, igdm=igdm, amp=amp, divergence=divergence, **ATTACK)
    step_tensors(**kw)  # the first step: state becomes tensors
    with CountSyncs() as syncs:
        out = step_tensors(**kw)
    assert syncs.count == 0
    assert math.isfinite(float(out["loss"])) and math.isfinite(float(divergence.value))


def test_a_trainer_epoch_reads_a_constant_number_of_times(small_digits, make_net) -> None:
    """One epoch of 3 batches and one of 6 read the same number of times: the reads are per
    epoch (the means, the divergence flag, the state), none per step."""
    counts = []
    for n in (96, 192):
        data = type(small_digits)("digits", small_digits.train.subset(n), small_digits.val,
                                  small_digits.test, 10, augment=False)
        trainer = make_trainer(data, make_net, optim={"epochs": 2, "batch_size": 32},
                               method_params={"lam": "auto", "adaptive_temps": True},
                               itt={"freeze_epochs": 0, "teacher_lr": 0.01})
        trainer.train_epoch()  # the first: FLOP count, state on the device
        with CountSyncs() as syncs:
            trainer.train_epoch()
        counts.append(syncs.count)
    assert counts[0] == counts[1] and counts[0] <= 12, counts


def test_a_divergence_is_still_caught_with_its_message(small_digits, make_net) -> None:
    trainer = make_trainer(small_digits, make_net, optim={"epochs": 1, "lr": 1e30})
    with pytest.raises(FloatingPointError, match="loss is not finite"):
        trainer.train_epoch()


# --- equal to the host-side code it replaces ----------------------------------------------------


def test_masked_kl_equals_kl_of_the_selected_rows() -> None:
    g = torch.Generator().manual_seed(0)
    for reduction in ("batchmean", "mean"):
        for log_eps in (0.0, 1e-5):
            s, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
            mask = torch.rand(16, generator=g) < 0.4
            probs = soft_targets(t, 2.0)
            want = kl(s[mask], probs[mask], student_temp=5.0, reduction=reduction,
                      log_eps=log_eps)
            got = masked_kl(s, probs, mask, student_temp=5.0, reduction=reduction,
                            log_eps=log_eps)
            assert torch.allclose(got, want, rtol=1e-6, atol=1e-7)
            empty = masked_kl(s, probs, torch.zeros(16, dtype=torch.bool), reduction=reduction)
            assert empty.item() == 0.0


def test_masked_kl_keeps_nan_rows_out_of_value_and_gradient() -> None:
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.softmax(torch.randn(4, 3), 1)
    t[0] = float("nan")  # a teacher row outside J
    mask = torch.tensor([False, True, True, False])
    masked_kl(s, t, mask).backward()
    assert torch.isfinite(s.grad).all() and s.grad[0].abs().sum() == 0


def test_auto_lambda_on_the_device_equals_the_host_rule() -> None:
    values = [0.0, 3e-13, 0.002, 0.034, 0.5, 1.0, 1.7, 250.0, -0.3, float("nan"), float("inf")]
    for a in values:
        for b in values[:6]:
            for c in values:
                got = auto_lambda_tensor(torch.tensor(a), torch.tensor(b), torch.tensor(c))
                fa, fb, fc = (float(torch.tensor(v)) for v in (a, b, c))  # as float32 reads
                want = auto_lambda(fa, fb, fc)
                assert (math.isnan(want) and math.isnan(got)) or got.item() == want, (a, b, c)


def _temperatures_on_the_host(tau_adv, tau_nat, rt_adv, t_nat, lr, low, high):
    """The previous code: .item() of the entropies, Python float arithmetic."""
    h_adv = neg_entropy(soft_targets(rt_adv, tau_adv)).item()
    h_nat = neg_entropy(soft_targets(t_nat, tau_nat)).item()

    def sign(v: float) -> float:
        return float((v > 0) - (v < 0))

    new_adv = tau_adv - lr * sign(h_adv / h_nat - 1.0) if h_nat != 0 else tau_adv
    new_nat = tau_nat - lr * sign(h_nat / h_adv - 1.0) if h_adv != 0 else tau_nat
    return min(max(new_adv, low), high), min(max(new_nat, low), high)


def test_adaptive_temperatures_on_the_device_equal_the_host_code() -> None:
    g = torch.Generator().manual_seed(1)
    host, device = (1.0, 1.0), (1.0, 1.0)
    for _ in range(300):  # many steps: the same float64 trajectory, bit for bit
        rt_adv, t_nat = torch.randn(8, 10, generator=g) * 3, torch.randn(8, 10, generator=g)
        host = _temperatures_on_the_host(*host, rt_adv, t_nat, 1e-3, 1.0, 10.0)
        device = update_temperatures(*device, rt_adv, t_nat, lr=1e-3, low=1.0, high=10.0)
        assert (device[0].item(), device[1].item()) == host


def _mtard_on_the_host(state: dict, l_nat: float, l_adv: float, lr: float) -> None:
    if math.isfinite(l_nat) and math.isfinite(l_adv):
        if state["l0_nat"] <= 0:
            state["l0_nat"] = l_nat
        if state["l0_adv"] <= 0:
            state["l0_adv"] = l_adv
        if state["l0_nat"] > 0 and state["l0_adv"] > 0:
            r_nat, r_adv = l_nat / state["l0_nat"], l_adv / state["l0_adv"]
            if r_nat + r_adv > 0:
                w = state["w_nat"]
                w -= lr * (w - r_nat / (r_nat + r_adv))
                state["w_nat"], state["w_adv"] = w, 1.0 - w


def test_mtard_weights_on_the_device_equal_the_host_code() -> None:
    host, device = get_method("mtard").init_state(), get_method("mtard").init_state()
    losses = [(0.0, 0.5), (float("nan"), 1.0), (0.8, 0.6), (0.7, 0.9), (0.2, 0.1), (0.5, 0.5)]
    for l_nat, l_adv in losses:
        _mtard_on_the_host(host, l_nat, l_adv, 0.025)
        _mtard_update(device, torch.tensor(l_nat, dtype=torch.float64),
                      torch.tensor(l_adv, dtype=torch.float64), 0.025)
        assert {k: float(v) for k, v in device.items()} == host


def test_push_set_mask_matches_the_wrong_predictions() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    assert push_set(logits, y).tolist() == [False, True, True]
