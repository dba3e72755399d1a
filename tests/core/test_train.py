"""The CIARD step and epoch loop on real digits: passes, ITT freeze, determinism, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ablate.core.methods import METHODS, CiardParams
from ablate.core.step import Passes, train_step
from ablate.core.teachers import train_teacher
from ablate.core.train import Trainer, cosine_exp_lr, student_lr, teacher_lr

ATTACK = dict(eps=0.2, step_size=0.05, steps=2)


def state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def make_trainer(data, make_net, **kw) -> Trainer:
    args = dict(student=make_net(0), clean_teacher=make_net(1, 8), robust_teacher=make_net(2, 8),
                data=data, epochs=3, batch_size=64, lr=0.05, freeze_epochs=1, teacher_lr=0.01,
                eval_steps=2, seed=0, **ATTACK)
    args.update(kw)
    return Trainer(**args)


def step_once(small_digits, make_net, update_teacher: bool, **params):
    student, clean, robust = make_net(0), make_net(1, 8), make_net(2, 8)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    t_opt = torch.optim.SGD(robust.parameters(), lr=0.1)
    x, y = small_digits.train.x[:32], small_digits.train.y[:32]
    before = {k: v.clone() for k, v in robust.state_dict().items()}
    out = train_step(method="ciard", params=CiardParams(**params).model_dump(), state={},
                     student=student, clean_teacher=clean, robust_teacher=robust, x=x, y=y,
                     optimizer=opt, teacher_optimizer=t_opt, update_teacher=update_teacher,
                     **ATTACK)
    return out, before, robust.state_dict()


def test_step_without_itt_leaves_robust_teacher_bit_identical(small_digits, make_net) -> None:
    out, before, after = step_once(small_digits, make_net, update_teacher=False)
    assert state_equal(before, after)  # weights and BatchNorm buffers
    assert "teacher_loss" not in out


def test_step_with_itt_updates_robust_teacher(small_digits, make_net) -> None:
    out, before, after = step_once(small_digits, make_net, update_teacher=True)
    assert not state_equal(before, after)
    assert out["teacher_loss"] > 0


@pytest.mark.parametrize(
    ("params", "itt", "computed", "calls"),
    [
        # t(x) and t(x*) share one batch: 4 model calls for 5 passes
        ({}, False, ["rt_adv", "s_adv", "s_nat", "t_adv", "t_nat"], 4),
        ({"push": False}, False, ["rt_adv", "s_adv", "s_nat", "t_nat"], 4),
        ({"lam": 0.0}, False, ["rt_adv", "s_adv", "s_nat", "t_nat"], 4),
        ({"alpha": 0.0, "push": False}, False, ["rt_adv", "s_adv"], 2),
        ({"beta": 0.0}, False, ["s_adv", "s_nat", "t_adv", "t_nat"], 3),
        # ITT needs t'(x*) for its own CE loss even when beta = 0
        ({"beta": 0.0, "push": False}, True, ["rt_adv", "s_nat", "t_nat"], 3),
    ],
)
def test_ciard_runs_only_the_passes_its_loss_needs(
        small_digits, make_net, params, itt, computed, calls) -> None:
    x, y = small_digits.train.x[:16], small_digits.train.y[:16]
    passes = Passes(student=make_net(0), clean_teacher=make_net(1), robust_teacher=make_net(2),
                    x=x, x_adv=x.flip(0), update_teacher=itt)
    out = METHODS["ciard"].loss(passes, y, CiardParams(**params).model_dump(), {})
    assert passes.computed == computed and passes.count == calls
    assert torch.isfinite(out["loss"])


def test_concatenated_teacher_batch_equals_separate_passes(small_digits, make_net) -> None:
    x = small_digits.train.x[:16]
    teacher = make_net(1).eval()
    kw = dict(student=make_net(0), robust_teacher=None, x=x, x_adv=x.flip(0),
              update_teacher=False)
    joint = Passes(clean_teacher=teacher, **kw).t_both()
    apart = Passes(clean_teacher=teacher, **kw)
    assert torch.allclose(joint[0], apart.t_nat(), atol=1e-6)
    assert torch.allclose(joint[1], apart.t_adv(), atol=1e-6)


def test_step_loss_terms_are_consistent(small_digits, make_net) -> None:
    out, _, _ = step_once(small_digits, make_net, update_teacher=False, lam=0.3)
    expected = 0.5 * out["kl_clean"] + 0.5 * out["kl_robust"] - 0.3 * out["push"]
    assert out["loss"] == pytest.approx(expected, rel=1e-5)
    assert out["lam"] == pytest.approx(0.3)


def test_robust_teacher_frozen_before_freeze_epoch_and_updated_after(
        small_digits, make_net) -> None:
    tr = make_trainer(small_digits, make_net, freeze_epochs=2, epochs=3)
    initial = {k: v.clone() for k, v in tr.robust_teacher.state_dict().items()}
    tr.run_epoch()
    tr.run_epoch()
    assert state_equal(initial, tr.robust_teacher.state_dict())
    tr.run_epoch()
    assert not state_equal(initial, tr.robust_teacher.state_dict())


def test_freeze_past_last_epoch_means_without_itt(small_digits, make_net) -> None:
    tr = make_trainer(small_digits, make_net, freeze_epochs=5, epochs=2)
    initial = {k: v.clone() for k, v in tr.robust_teacher.state_dict().items()}
    tr.fit()
    assert tr.teacher_optimizer is None
    assert state_equal(initial, tr.robust_teacher.state_dict())


def test_same_seed_same_result(small_digits, make_net) -> None:
    a = make_trainer(small_digits, make_net, epochs=2)
    b = make_trainer(small_digits, make_net, epochs=2)
    ha, hb = a.fit(), b.fit()
    assert state_equal(a.student.state_dict(), b.student.state_dict())
    assert ha == hb
    c = make_trainer(small_digits, make_net, epochs=2, seed=1)
    c.fit()
    assert not state_equal(a.student.state_dict(), c.student.state_dict())


def test_resume_from_checkpoint_matches_uninterrupted_run(
        small_digits, make_net, tmp_path: Path) -> None:
    kw = dict(epochs=3, freeze_epochs=1, method_params={"adaptive_temps": True})
    full = make_trainer(small_digits, make_net, **kw)
    full.fit()

    first = make_trainer(small_digits, make_net, **kw)
    first.run_epoch()
    first.run_epoch()
    first.save(tmp_path)
    # A fresh process would rebuild everything from the config, with fresh RNG state.
    torch.manual_seed(1234)
    resumed = make_trainer(small_digits, make_net, **kw)
    resumed.fit(checkpoint_dir=tmp_path)
    assert resumed.epoch == 3
    assert state_equal(full.student.state_dict(), resumed.student.state_dict())
    assert state_equal(full.robust_teacher.state_dict(), resumed.robust_teacher.state_dict())
    assert full.state == resumed.state and full.state["tau_adv"] != 1.0
    assert full.history == resumed.history


def test_training_learns_on_digits(digits, make_net) -> None:
    # The student learns only through its teachers, so they must know the task.
    clean, robust = make_net(1, 8), make_net(2, 8)
    for teacher in (clean, robust):
        train_teacher(teacher, digits, method="ce", epochs=4, lr=0.1)
    tr = make_trainer(digits, make_net, student=make_net(0, 8), clean_teacher=clean,
                      robust_teacher=robust, epochs=3, freeze_epochs=3, val_subset=200, lr=0.2,
                      method_params={"lam": 0.01})
    history = tr.fit()
    assert history[-1]["val/clean_acc"] > 0.5  # chance is 0.1
    test = tr.test(steps=2)
    assert test["best_epoch"] == max(range(3), key=lambda e: history[e]["val/w_acc"])


def test_schedules() -> None:
    assert student_lr("cosine", 0, 10, 0.1, 1e-5) == pytest.approx(0.1)
    assert student_lr("cosine", 5, 10, 0.1, 1e-5) == pytest.approx((0.1 + 1e-5) / 2)
    assert student_lr("code", 4, 10, 0.1, 0.0) == 0.1  # constant for the first half
    assert student_lr("code", 5, 10, 0.1, 0.0) == pytest.approx(0.1)
    assert cosine_exp_lr(10, 0, 10, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert teacher_lr("constant", 7, 10, 1e-5, 2) == 1e-5
    assert teacher_lr("code", 2, 10, 1e-4, 2) == pytest.approx(1e-4)


def test_igdm_weight_rises_linearly_and_adds_its_term(small_digits, make_net) -> None:
    igdm = {"alpha": 2.0, "beta": 1.0, "gamma": 1.0, "distance": "kl"}
    trainer = make_trainer(small_digits, make_net, epochs=2, igdm=igdm)
    history = [trainer.run_epoch() for _ in range(2)]
    assert [h["train/igdm_weight"] for h in history] == [1.0, 2.0]
    assert all(h["train/igdm"] > 0 for h in history)
    plain = make_trainer(small_digits, make_net, epochs=2).run_epoch()
    assert "train/igdm" not in plain and "train/igdm_weight" not in plain


def test_final_protocol_attacks_transfer_from_the_untouched_surrogate(small_digits,
                                                                      make_net) -> None:
    robust = make_net(2, 8)
    surrogate = make_net(2, 8)  # what build_trainer passes: the teacher before ITT
    before = {k: v.clone() for k, v in surrogate.state_dict().items()}
    trainer = make_trainer(small_digits, make_net, epochs=2, robust_teacher=robust,
                           surrogate=surrogate)
    trainer.fit()
    assert not state_equal(before, robust.state_dict())  # ITT trained the robust teacher
    out = trainer.test(steps=2, attacks=["fgsm", "transfer_pgd_trades"])
    for a in ("fgsm", "transfer_pgd_trades"):
        assert 0 <= out[f"{a}_acc"] <= out["clean_acc"]
        assert out[f"{a}_wr"] == pytest.approx((out["clean_acc"] + out[f"{a}_acc"]) / 2)
    assert state_equal(before, surrogate.state_dict())  # the transfer source stayed as given
    with pytest.raises(ValueError, match="surrogate"):
        make_trainer(small_digits, make_net, epochs=1).test(attacks=["transfer_cw_inf"])
