"""Integrity on every load, with real damaged bytes: a digest beside each file ablate saves,
checked before ``torch.load``; the zip CRCs (which ``torch.load`` skips) for a file without
one; and no NaN or inf in a resumed state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ablate.core.errors import CheckpointError
from ablate.core.integrity import digest_path, save_verified, sha256
from ablate.core.models import build_model, load_checkpoint, read_checkpoint
from ablate.core.settings import (
    AttackSettings,
    EvalSettings,
    IttSettings,
    OptimSettings,
)
from ablate.core.trainer import Trainer
from tests.helpers import data_offset, flip


def _net(seed: int = 0, width: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("small_cnn", num_classes=10, in_channels=1, width=width)


def test_save_writes_a_sha256sum_digest_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = save_verified(_net().state_dict(), tmp_path / "w.pt")
    assert digest_path(path).read_text() == f"{sha256(path)}  w.pt\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt", "w.pt.sha256"]
    assert read_checkpoint(path).keys() == _net().state_dict().keys()


def test_flipped_bytes_are_refused_by_the_digest(tmp_path: Path) -> None:
    path = save_verified(_net().state_dict(), tmp_path / "w.pt")
    flip(path, data_offset(path, "data/0"))
    with pytest.raises(CheckpointError, match=r"w\.pt is damaged: its sha256 does not match "
                                              r"w\.pt\.sha256") as info:
        load_checkpoint(_net(), path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_tensor_zeroed_and_saved_over_without_its_digest_is_refused(tmp_path: Path) -> None:
    state = _net().state_dict()
    path = save_verified(state, tmp_path / "w.pt")
    key = next(iter(state))
    torch.save({**state, key: torch.zeros_like(state[key])}, path)  # a valid torch file
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        read_checkpoint(path)


def test_without_a_digest_the_zip_crcs_catch_what_torch_load_misses(tmp_path: Path) -> None:
    state = _net().state_dict()
    path = tmp_path / "users-own.pt"
    torch.save(state, path)  # no digest: an old run, or a user's own teacher
    assert read_checkpoint(path).keys() == state.keys()
    flip(path, data_offset(path, "data/0"))
    garbled = torch.load(path, weights_only=True)  # torch.load reads it without a complaint
    assert any(not torch.equal(garbled[k], state[k]) for k in state)
    with pytest.raises(CheckpointError, match=r"users-own\.pt is damaged: entry .*data/0 "
                                              "fails its CRC check"):
        read_checkpoint(path)


def test_a_teacher_with_nan_weights_is_refused(tmp_path: Path) -> None:
    state = _net().state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[3] = float("nan")
    path = save_verified(state, tmp_path / "teacher.pt")  # intact file, garbage values
    with pytest.raises(CheckpointError, match=rf"teacher\.pt holds non-finite values .* {key}"):
        load_checkpoint(_net(), path)


def _trainer(small_digits) -> Trainer:
    return Trainer(student=_net(0), clean_teacher=_net(1, 8), robust_teacher=_net(2, 8),
                   data=small_digits, seed=0, optim=OptimSettings(epochs=2, lr=0.05),
                   attack=AttackSettings(eps=0.2, step_size=0.05, steps=2),
                   itt=IttSettings(freeze_epochs=0, teacher_lr=0.01),
                   eval=EvalSettings(val_steps=2))


@pytest.fixture
def saved(small_digits, tmp_path: Path) -> tuple[Trainer, Path]:
    """A trainer one real epoch in, its resumable checkpoint saved (with its digest)."""
    trainer = _trainer(small_digits)
    trainer.run_epoch()
    return trainer, trainer.save(tmp_path)


def test_a_resume_from_nan_optimizer_state_is_refused(small_digits, saved) -> None:
    trainer, path = saved
    state = trainer.state_dict()
    buffers = state["optimizer"]["state"]
    assert buffers, "SGD with momentum keeps a buffer per parameter after a step"
    first = next(iter(buffers))
    buffers[first]["momentum_buffer"] = torch.full_like(buffers[first]["momentum_buffer"],
                                                        float("nan"))
    save_verified(state, path)  # digest matches: only the values are bad
    resumed = _trainer(small_digits)
    with pytest.raises(CheckpointError, match=rf"trainer\.pt holds non-finite values \(NaN "
                                              rf"or inf\) in optimizer\.state\.{first}\."
                                              "momentum_buffer"):
        resumed.restore(path.parent)
    assert resumed.epoch == 0  # nothing of the bad state was taken


def test_a_resume_from_a_damaged_trainer_checkpoint_is_refused(small_digits, saved) -> None:
    _, path = saved
    flip(path, data_offset(path, "data/0"))
    with pytest.raises(CheckpointError, match="trainer.pt is damaged"):
        _trainer(small_digits).restore(path.parent)
    digest_path(path).unlink()  # an old checkpoint without a digest: the CRCs still catch it
    with pytest.raises(CheckpointError, match="fails its CRC check"):
        _trainer(small_digits).restore(path.parent)


def test_an_intact_checkpoint_resumes(small_digits, saved) -> None:
    trainer, path = saved
    resumed = _trainer(small_digits)
    assert resumed.restore(path.parent) and resumed.epoch == trainer.epoch == 1
