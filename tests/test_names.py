"""The shared names: flags round-trip through MLflow's text (earlier versions wrote ``True``),
and the keys the readers look up are the ones the trainer writes."""

from __future__ import annotations

import pytest

from ablate import names
from ablate.core.settings import AttackSettings, EvalSettings, IttSettings, OptimSettings
from ablate.core.trainer import Trainer


@pytest.mark.parametrize(("text", "value"), [("true", True), ("True", True), ("false", False),
                                             ("False", False), ("", False), (None, False),
                                             ("yes", False)])
def test_flags_read_back(text: str | None, value: bool) -> None:
    assert names.is_set(text) is value


def test_flags_written_as_text_round_trip() -> None:
    assert [names.flag(v) for v in (True, False)] == ["true", "false"]
    assert all(names.is_set(names.flag(v)) is v for v in (True, False))


def test_prefixes_params_and_run_means() -> None:
    assert names.prefixed(names.TEST, {"clean_acc": 0.5}) == {"test/clean_acc": 0.5}
    assert names.param(names.PARAMS_BASE, "optim.epochs") == "base.optim.epochs"
    assert names.run_mean(names.PUSH_EMPTY) == "train/run_push_empty_frac"


def test_the_trainer_reports_the_keys_readers_look_up(small_digits, make_net) -> None:
    """One epoch of CIARD: the objective, the Pareto pair, the validation accuracies and the
    run means of the push diagnostics are among the reported metrics."""
    trainer = Trainer(student=make_net(0), clean_teacher=make_net(1, 8),
                      robust_teacher=make_net(2, 8), data=small_digits,
                      optim=OptimSettings(epochs=1), itt=IttSettings(freeze_epochs=0),
                      attack=AttackSettings(eps=0.2, step_size=0.05, steps=1),
                      eval=EvalSettings(val_steps=1))
    metrics = trainer.run_epoch()
    read = {names.EPOCH, names.OBJECTIVE, *names.PARETO, names.VAL_W, names.VAL_CLEAN,
            names.VAL_ROBUST, *(names.run_mean(k) for k in names.PUSH_KEYS)}
    assert read <= set(metrics), read - set(metrics)
    assert all(k.startswith((names.TRAIN, names.VAL, names.PERF)) for k in metrics
               if k != names.EPOCH)
