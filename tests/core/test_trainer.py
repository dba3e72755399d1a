"""The CIARD step and epoch loop on real digits: passes, ITT freeze, determinism, resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ablate.core.catalog import CiardParams
from ablate.core.flop_counter import count_flops
from ablate.core.methods import get_method
from ablate.core.passes import Passes
from ablate.core.schedules import student_lr, teacher_lr
from ablate.core.settings import (
    AttackSettings,
    ComputeSettings,
    EvalSettings,
    IttSettings,
    OptimSettings,
)
from ablate.core.step import step_tensors, train_step
from ablate.core.teachers import train_teacher
from ablate.core.trainer import Trainer

ATTACK = dict(eps=0.2, step_size=0.05, steps=2)


def state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def make_trainer(data, make_net, *, optim=None, attack=None, itt=None, eval=None,
                 compute=None, **kw) -> Trainer:
    """A small trainer; each settings group given as a dict of the fields it changes."""
    args = dict(student=make_net(0), clean_teacher=make_net(1, 8), robust_teacher=make_net(2, 8),
                data=data, seed=0)
    args.update(kw)
    return Trainer(**args, optim=OptimSettings(**{"epochs": 3, "lr": 0.05, **(optim or {})}),
                   attack=AttackSettings(**{**ATTACK, **(attack or {})}),
                   itt=IttSettings(**{"freeze_epochs": 1, "teacher_lr": 0.01, **(itt or {})}),
                   eval=EvalSettings(**{"val_steps": 2, **(eval or {})}),
                   compute=ComputeSettings(**(compute or {})))


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
        ({}, False, ["rt_adv", "s_adv", "s_nat", "t_adv", "t_nat"], 5),
        ({"push": False}, False, ["rt_adv", "s_adv", "s_nat", "t_nat"], 4),
        ({"lam": 0.0}, False, ["rt_adv", "s_adv", "s_nat", "t_nat"], 4),
        ({"alpha": 0.0, "push": False}, False, ["rt_adv", "s_adv"], 2),
        ({"beta": 0.0}, False, ["s_adv", "s_nat", "t_adv", "t_nat"], 4),
        # ITT needs t'(x*) for its own CE loss even when beta = 0
        ({"beta": 0.0, "push": False}, True, ["rt_adv", "s_nat", "t_nat"], 3),
    ],
)
def test_ciard_runs_only_the_passes_its_loss_needs(
        small_digits, make_net, params, itt, computed, calls) -> None:
    x, y = small_digits.train.x[:16], small_digits.train.y[:16]
    passes = Passes(student=make_net(0), clean_teacher=make_net(1), robust_teacher=make_net(2),
                    x=x, x_adv=x.flip(0), update_teacher=itt)
    out = get_method("ciard").loss(passes, y, CiardParams(**params).model_dump(), {})
    assert passes.computed == computed and passes.count == calls
    assert torch.isfinite(out["loss"])


def test_step_loss_terms_are_consistent(small_digits, make_net) -> None:
    out, _, _ = step_once(small_digits, make_net, update_teacher=False, lam=0.3)
    assert out["push_empty_frac"] == 0.0  # an untrained clean teacher is often wrong
    expected = 0.5 * out["kl_clean"] + 0.5 * out["kl_robust"] - 0.3 * out["push_loss"]
    assert out["loss"] == pytest.approx(expected, rel=1e-5)
    assert out["lam"] == pytest.approx(0.3)


def test_robust_teacher_frozen_before_freeze_epoch_and_updated_after(
        small_digits, make_net) -> None:
    tr = make_trainer(small_digits, make_net, itt={"freeze_epochs": 2}, optim={"epochs": 3})
    initial = {k: v.clone() for k, v in tr.robust_teacher.state_dict().items()}
    tr.run_epoch()
    tr.run_epoch()
    assert state_equal(initial, tr.robust_teacher.state_dict())
    tr.run_epoch()
    assert not state_equal(initial, tr.robust_teacher.state_dict())


def test_freeze_past_last_epoch_means_without_itt(small_digits, make_net) -> None:
    tr = make_trainer(small_digits, make_net, itt={"freeze_epochs": 5}, optim={"epochs": 2})
    initial = {k: v.clone() for k, v in tr.robust_teacher.state_dict().items()}
    list(tr.run())
    assert tr.teacher_optimizer is None
    assert state_equal(initial, tr.robust_teacher.state_dict())


def test_same_seed_same_result(small_digits, make_net) -> None:
    a = make_trainer(small_digits, make_net, optim={"epochs": 2})
    b = make_trainer(small_digits, make_net, optim={"epochs": 2})
    list(a.run())
    list(b.run())
    assert state_equal(a.student.state_dict(), b.student.state_dict())
    assert a.history == b.history  # every metric but the wall-clock perf/*
    c = make_trainer(small_digits, make_net, optim={"epochs": 2}, seed=1)
    list(c.run())
    assert not state_equal(a.student.state_dict(), c.student.state_dict())


def test_resume_from_checkpoint_matches_uninterrupted_run(
        small_digits, make_net, tmp_path: Path) -> None:
    kw = dict(optim={"epochs": 3}, itt={"freeze_epochs": 1},
              method_params={"adaptive_temps": True})
    full = make_trainer(small_digits, make_net, **kw)
    list(full.run())

    first = make_trainer(small_digits, make_net, **kw)
    first.run_epoch()
    first.run_epoch()
    first.save(tmp_path)
    # A fresh process would rebuild everything from the config, with fresh RNG state.
    torch.manual_seed(1234)
    resumed = make_trainer(small_digits, make_net, **kw)
    assert resumed.restore(tmp_path)
    list(resumed.run(tmp_path))
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
                      robust_teacher=robust, optim={"epochs": 3, "lr": 0.2},
                      itt={"freeze_epochs": 3}, eval={"val_subset": 200},
                      method_params={"lam": 0.01})
    history = list(tr.run())
    assert history[-1]["val/clean_acc"] > 0.5  # chance is 0.1
    test = tr.test()
    assert test["best_epoch"] == 1 + max(range(3), key=lambda e: history[e]["val/w_acc"])


def released_student_lr(epoch: int) -> float:
    """CIARD.py's student LR for its 1-based epoch (300 epochs)."""
    if epoch < 150:
        return 0.1
    return 0.1 * (0.5 + 0.5 * math.cos(math.pi * (epoch - 150) / 150)) * math.exp(
        -0.01 * (epoch - 150) ** 2 / 150 ** 2)


def released_teacher_lr(epoch: int) -> float:
    """CIARD.py's robust-teacher LR for its 1-based epoch; it steps only when epoch > 50."""
    return 1e-4 * (0.5 + 0.5 * math.cos(math.pi * (epoch - 50) / 250)) * math.exp(
        -0.01 * (epoch - 50) ** 2 / 250 ** 2)


def test_code_schedules_match_the_released_code_epoch_for_epoch() -> None:
    # 0-based epoch e is the released code's epoch e + 1: no one-epoch shift.
    for e in range(300):
        assert student_lr("code", e, 300, 0.1, 0.0) == pytest.approx(
            released_student_lr(e + 1), rel=1e-12, abs=1e-15)
    assert student_lr("code", 149, 300, 0.1, 0.0) == 0.1  # 150 constant epochs
    assert student_lr("code", 299, 300, 0.1, 0.0) == pytest.approx(0.0, abs=1e-15)
    for e in range(50, 300):  # the teacher is updated in 0-based epochs >= freeze_epochs = 50
        assert teacher_lr("code", e, 300, 1e-4, 50) == pytest.approx(
            released_teacher_lr(e + 1), rel=1e-12, abs=1e-18)


def test_other_schedules() -> None:
    assert student_lr("cosine", 0, 10, 0.1, 1e-5) == pytest.approx(0.1)
    assert student_lr("cosine", 5, 10, 0.1, 1e-5) == pytest.approx((0.1 + 1e-5) / 2)
    assert teacher_lr("constant", 7, 10, 1e-5, 2) == 1e-5
    # step: as torch's MultiStepLR stepped once per epoch
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[215, 260, 285], gamma=0.1)
    for e in range(300):
        assert student_lr("step", e, 300, 0.1, 0.0, [215, 260, 285], 0.1) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()


def test_igdm_weight_rises_linearly_and_adds_its_term(small_digits, make_net) -> None:
    igdm = {"alpha": 2.0, "beta": 1.0, "gamma": 1.0, "distance": "kl"}
    trainer = make_trainer(small_digits, make_net, optim={"epochs": 2}, igdm=igdm)
    history = [trainer.run_epoch() for _ in range(2)]
    assert [h["train/igdm_weight"] for h in history] == [1.0, 2.0]
    assert all(h["train/igdm"] > 0 for h in history)
    plain = make_trainer(small_digits, make_net, optim={"epochs": 2}).run_epoch()
    assert "train/igdm" not in plain and "train/igdm_weight" not in plain


def test_final_protocol_attacks_transfer_from_the_untouched_surrogate(small_digits,
                                                                      make_net) -> None:
    robust = make_net(2, 8)
    surrogate = make_net(2, 8)  # what build_trainer passes: the teacher before ITT
    before = {k: v.clone() for k, v in surrogate.state_dict().items()}
    trainer = make_trainer(small_digits, make_net, optim={"epochs": 2}, robust_teacher=robust,
                           surrogate=surrogate)
    list(trainer.run())
    assert not state_equal(before, robust.state_dict())  # ITT trained the robust teacher
    out = trainer.test(attacks=["fgsm", "transfer_pgd_trades"])
    for a in ("fgsm", "transfer_pgd_trades"):
        assert 0 <= out[f"{a}_acc"] <= out["clean_acc"]
        assert out[f"{a}_wr"] == pytest.approx((out["clean_acc"] + out[f"{a}_acc"]) / 2)
    assert state_equal(before, surrogate.state_dict())  # the transfer source stayed as given
    with pytest.raises(ValueError, match="surrogate"):
        make_trainer(small_digits, make_net, optim={"epochs": 1}).test(attacks=["transfer_cw_inf"])


def ciard_on_labels(small_digits, make_net, wrong: int, **params):
    """The CIARD loss on 16 images whose labels the clean teacher gets right on x*, except the
    first ``wrong``: |J| = wrong by construction."""
    x = small_digits.train.x[:16]
    x_adv = x.flip(0)
    clean = make_net(1).eval()
    with torch.no_grad():
        y = clean(x_adv).argmax(1)
    y[:wrong] = (y[:wrong] + 1) % 10
    passes = Passes(student=make_net(0), clean_teacher=clean, robust_teacher=make_net(2),
                    x=x, x_adv=x_adv, update_teacher=False)
    return get_method("ciard").loss(passes, y, CiardParams(**params).model_dump(), {})


@pytest.mark.parametrize("lam", [0.3, "auto"])
def test_empty_push_set_gives_exactly_zero_and_no_lambda(small_digits, make_net, lam) -> None:
    out = ciard_on_labels(small_digits, make_net, wrong=0, lam=lam)
    assert out["push_active_frac"] == 0.0 and out["push_empty_frac"] == 1.0
    # Reported with weight 0: not averaged into the epoch's push loss and λ
    assert out["push_loss@weight"] == 0.0 and out["lam@weight"] == 0.0
    assert out["push_loss"].item() == 0.0  # the masked KL of an empty J: exactly 0
    # exactly the two KL terms (same float32 arithmetic), not NaN, not approximately
    assert torch.equal(out["loss"].detach(), 0.5 * out["kl_clean"] + 0.5 * out["kl_robust"])


def test_push_diagnostics_count_the_push_set(small_digits, make_net) -> None:
    out = ciard_on_labels(small_digits, make_net, wrong=5, lam=0.3)
    assert out["push_active_frac"].item() == pytest.approx(5 / 16)
    assert out["push_empty_frac"] == 0.0
    assert out["loss"].item() == pytest.approx(0.5 * out["kl_clean"].item() + 0.5 * out[
        "kl_robust"].item() - 0.3 * out["push_loss"].item(), rel=1e-6)


def test_epoch_push_loss_and_lambda_average_only_batches_with_a_push_set(
        small_digits, make_net, monkeypatch) -> None:
    import ablate.core.trainer as train_module

    batches: list[dict[str, float]] = []

    def recording_step(**kw):
        out = step_tensors(**kw)
        batches.append({k: float(v) for k, v in out.items()  # as train_step reports them
                        if not k.endswith("@weight") and float(out.get(f"{k}@weight", 1)) > 0})
        return out

    monkeypatch.setattr(train_module, "step_tensors", recording_step)
    trainer = make_trainer(small_digits, make_net, optim={"epochs": 2, "batch_size": 16},
                           method_params={"lam": "auto"},
                           attack={"objective": "kl_clean_teacher"})
    first = trainer.run_epoch()
    with_j = [b for b in batches if b["push_empty_frac"] == 0.0]
    assert 0 < len(with_j) <= len(batches) == 12
    assert first["train/lam"] == pytest.approx(sum(b["lam"] for b in with_j) / len(with_j))
    assert first["train/push_loss"] == pytest.approx(
        sum(b["push_loss"] for b in with_j) / len(with_j))
    assert first["train/push_empty_frac"] == pytest.approx(1 - len(with_j) / 12)
    assert first["train/push_active_frac"] == pytest.approx(
        sum(b["push_active_frac"] for b in batches) / 12)
    second = trainer.run_epoch()  # the run-level means cover both epochs
    assert second["train/run_push_empty_frac"] == pytest.approx(
        (first["train/push_empty_frac"] + second["train/push_empty_frac"]) / 2)
    no_push = make_trainer(small_digits, make_net, optim={"epochs": 1},
                           method_params={"push": False})
    assert not any("push" in k for k in no_push.run_epoch())


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_student_mode_while_crafting(small_digits, make_net, mode: str) -> None:
    student, seen = make_net(0), []
    student.register_forward_pre_hook(lambda m, inp: seen.append(m.training))
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    x, y = small_digits.train.x[:32], small_digits.train.y[:32]
    train_step(method="pgd_at", params={}, state={}, student=student, clean_teacher=None,
               robust_teacher=None, x=x, y=y, optimizer=opt, student_mode=mode, **ATTACK)
    # ATTACK has 2 PGD steps, then the loss's s(x*) pass in train mode
    assert seen == [mode == "train"] * 2 + [True]


def test_test_runs_seeded_pgd_sat_and_scores_the_best_epochs_teacher(
        small_digits, make_net) -> None:
    from ablate.core.accuracy import correct
    from ablate.core.robustness import run_suite

    trainer = make_trainer(small_digits, make_net, optim={"epochs": 3},
                           itt={"freeze_epochs": 0, "teacher_lr": 0.5})
    trainer.run_epoch()
    trainer.best["w_acc"] = 2.0  # nothing beats epoch 0 now, while ITT goes on changing t'
    list(trainer.run())
    assert trainer.best["epoch"] == 0
    out = trainer.test()
    assert "robust_acc" not in out and "w_acc" not in out  # one name for one attack
    assert out == trainer.test()  # seeded: the same numbers twice
    split = small_digits.test
    alone = run_suite(trainer.best_student(), split.x, split.y, attacks=["pgd_sat"], eps=0.2,
                      seed=0)
    assert out["pgd_sat_acc"] == alone["pgd_sat"]["robust"]
    # the robust teacher as stored at the best epoch, not the one ITT kept changing after it
    best_teacher = make_net(2, 8)
    best_teacher.load_state_dict(trainer.best["robust_teacher"])
    assert out["robust_teacher_clean_acc"] == correct(best_teacher.eval(), split.x,
                                                      split.y) / len(split.y)
    assert not state_equal(trainer.best["robust_teacher"], trainer.robust_teacher.state_dict())


def test_mtard_weight_lr_decays_at_its_released_milestones() -> None:
    mtard = get_method("mtard")
    params = mtard.params().model_dump()
    for epoch, lr in ((0, 0.025), (214, 0.025), (215, 0.0025), (260, 0.00025),
                      (299, 0.000025)):
        assert mtard.epoch_params(params, epoch)["weight_lr"] == pytest.approx(lr, rel=1e-12)


def test_a_push_term_that_never_acts_changes_nothing(small_digits, make_net) -> None:
    # Labels = the clean teacher's own predictions and ε = 0 (x* = x): J is empty in every
    # batch, so "w/ push" must train bit-identically to "w/o push" (no hidden side effect such
    # as a differently batched t(x)).
    from ablate.core.data import Dataset, Split

    clean = make_net(1, 8).eval()
    with torch.no_grad():
        y = clean(small_digits.train.x).argmax(1)
    data = Dataset("digits", Split(small_digits.train.x, y), small_digits.val, small_digits.test,
                   10, augment=False)

    def run(push: bool) -> Trainer:
        tr = make_trainer(data, make_net, optim={"epochs": 1}, clean_teacher=clean,
                          attack={"eps": 0.0},
                          method_params={"push": push, "lam": 0.3})
        tr.run_epoch()
        return tr

    with_push, without = run(True), run(False)
    assert with_push.history[0]["train/push_empty_frac"] == 1.0  # J = ∅ in every batch
    assert state_equal(with_push.student.state_dict(), without.student.state_dict())


def test_epochs_report_throughput_from_flops_counted_on_their_first_step(small_digits,
                                                                         make_net) -> None:
    trainer = make_trainer(small_digits, make_net, optim={"epochs": 2},
                           itt={"freeze_epochs": 1})
    first, second = list(trainer.run())
    # An independent count: one step of the same models on a batch of the same shape.
    x, y = small_digits.train.x[:64], small_digits.train.y[:64]
    expected = count_flops(lambda: train_step(
        method="ciard", params=CiardParams().model_dump(), state={}, student=make_net(0),
        clean_teacher=make_net(1, 8), robust_teacher=make_net(2, 8), x=x, y=y,
        optimizer=torch.optim.SGD(make_net(0).parameters(), lr=0.1), **ATTACK),
        shapes_only=False) / 64
    assert first["perf/gflop_per_image"] * 1e9 == pytest.approx(expected)
    assert second["perf/gflop_per_image"] > first["perf/gflop_per_image"]  # + ITT's backward
    for m in (first, second):
        assert m["perf/img_per_s"] == pytest.approx(192 / m["perf/epoch_s"])
        assert m["perf/tflops"] == pytest.approx(m["perf/img_per_s"]
                                                 * m["perf/gflop_per_image"] / 1e3)
        assert "perf/mfu" not in m  # no known peak on a CPU
    assert not any(k.startswith("perf/") for h in trainer.history for k in h)


@pytest.mark.parametrize("frozen_bn", ["eval", "train"])
def test_teacher_clean_accuracies_are_measured_again_only_when_they_can_change(
        small_digits, make_net, frozen_bn: str) -> None:
    """Validation reuses the teachers' clean accuracies while the teacher is unchanged (the
    clean teacher always; the robust one until ITT or train-mode BatchNorm changes it): the
    history equals one that measured everything every epoch, and the robust teacher's value
    moves once ITT starts."""
    kw = dict(optim={"epochs": 3}, itt={"freeze_epochs": 1, "teacher_lr": 0.05,
                                         "frozen_bn": frozen_bn})
    cached, measured = (make_trainer(small_digits, make_net, **kw) for _ in range(2))
    for _ in range(3):
        measured.fixed_val = {}  # nothing known: every accuracy measured
        measured.run_epoch()
        cached.run_epoch()
    assert cached.history == measured.history
    assert set(cached.fixed_val) == {"clean_teacher_clean_acc", "robust_teacher_clean_acc"}
    cached.fixed_val["clean_teacher_clean_acc"] = -1.0  # reused, not measured: it shows
    assert cached.validate()["clean_teacher_clean_acc"] == -1.0
    # Which epochs forget the robust teacher's: those that changed it.
    t = make_trainer(small_digits, make_net, optim={"epochs": 3},
                     itt={"freeze_epochs": 2, "teacher_lr": 0.05, "frozen_bn": frozen_bn})
    t.validate()
    t.train_epoch()  # epoch 0, before ITT: BatchNorm statistics move only in train mode
    assert ("robust_teacher_clean_acc" in t.fixed_val) == (frozen_bn == "eval")
    t.validate()
    t.epoch = 2
    t.train_epoch()  # an ITT epoch
    assert set(t.fixed_val) == {"clean_teacher_clean_acc"}
