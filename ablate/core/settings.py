"""The :class:`~ablate.core.trainer.Trainer`'s settings, in the groups of the experiment config
(``optim``, ``attack``, ``itt``, ``eval``, ``compute``) and with its field names, so the config
fills each group as it is (``OptimSettings(**cfg.optim.model_dump())``). Plain frozen
dataclasses: the core takes plain values, never config objects. Units and meanings are those
of the config fields' descriptions (``ablate.config``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class OptimSettings:
    """The student's SGD and learning-rate schedule."""

    epochs: int
    batch_size: int = 64
    lr: float = 0.1
    lr_min: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 2e-4
    schedule: str = "cosine"  # cosine | code | step
    milestones: Sequence[int] = ()  # step schedule: epochs from which the LR is ×gamma
    gamma: float = 0.1


@dataclass(frozen=True)
class AttackSettings:
    """The training-time inner maximisation (one PGD loop, the method's objective)."""

    eps: float
    step_size: float
    steps: int = 10
    objective: str | None = None  # None: the method's own
    start: str = "normal"  # normal | uniform | none
    student_mode: str = "eval"
    clean_pass_first: bool = False


@dataclass(frozen=True)
class IttSettings:
    """Iterative Teacher Training: the robust teacher's update from ``freeze_epochs`` on."""

    enabled: bool = True
    freeze_epochs: int = 50
    teacher_lr: float = 1e-5
    momentum: float = 0.1
    weight_decay: float = 2e-4
    schedule: str = "constant"  # constant | code
    bn: str = "train"  # teacher BatchNorm mode while updated
    frozen_bn: str = "eval"  # ... and while not updated


@dataclass(frozen=True)
class EvalSettings:
    """Per-epoch validation (PGD-``val_steps``) and the final test's extra attacks."""

    w: float = 0.5  # clean weight of W-acc
    eps: float | None = None  # None: the attack's eps
    step_size: float | None = None  # None: the attack's step size
    val_steps: int = 10
    val_subset: int | None = None
    attacks: Sequence[str] = ()
    autoattack_subset: int | None = 500


@dataclass(frozen=True)
class ComputeSettings:
    """How the training step computes: mixed precision, memory layout, compilation, graphs."""

    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool = False  # the step captured and replayed (ablate.core.graphs); CUDA only
