"""data.train_subset and teachers.*.train.subset: in the dump only when set (older configs keep
their hashes), the student's subset outside the teacher cache key, both cut what is trained."""

from __future__ import annotations

import torch

from ablate.build import build_net, build_trainer, teacher_cache_path
from ablate.config import load_config
from ablate.core.data import load_dataset
from tests.helpers import REPO

DIGITS = REPO / "search_spaces" / "base" / "digits.yaml"


def test_unset_subsets_stay_out_of_the_dump_and_the_hash() -> None:
    plain = load_config(DIGITS)
    dump = plain.model_dump(mode="json")
    assert "train_subset" not in dump["data"]
    assert "subset" not in dump["teachers"]["robust"]["train"]
    cut = load_config(DIGITS, ["data.train_subset=100"])
    assert cut.model_dump(mode="json")["data"]["train_subset"] == 100
    assert cut.digest() != plain.digest()
    teacher = load_config(DIGITS, ["teachers.robust.train.subset=100"])
    for role in ("clean", "robust"):  # the student's subset: the same cached teachers
        spec = getattr(plain.teachers, role)
        assert teacher_cache_path(role, spec, cut) == teacher_cache_path(role, spec, plain)
    assert (teacher_cache_path("robust", teacher.teachers.robust, teacher)
            != teacher_cache_path("robust", plain.teachers.robust, plain))


def test_the_student_trains_on_the_first_n_images_of_the_split() -> None:
    cfg = load_config(DIGITS, ["device=cpu", "data.train_subset=50"])
    data = load_dataset("digits", val_size=0.15, seed=0)
    clean, robust = (build_net(t, data) for t in (cfg.teachers.clean, cfg.teachers.robust))
    trainer = build_trainer(cfg, data, clean, robust, torch.device("cpu"))
    assert torch.equal(trainer.data.train.y, data.train.y[:50])
    assert len(trainer.data.val) == len(data.val) and len(trainer.data.test) == len(data.test)
