"""Configuration of the networks: the student's and teachers' architectures, how a teacher is
obtained (a checkpoint, trained and cached, or the RobustBench zoo), and :class:`Strict`, the
base of every config model. Re-exported by :mod:`ablate.config`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_serializer, model_validator

from ablate.core.catalog import ARCHITECTURES, ZOO_DATASETS
from ablate.core.limits import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_IMAGES,
    MAX_STEPS,
    STRICT,
    ModelKwarg,
    without_defaults,
)


class Strict(BaseModel):
    """Base of every config model: unknown keys and inf/nan are errors (see core.limits)."""

    model_config = STRICT


class NormalizeConfig(Strict):
    mean: list[float] = Field(description="per-channel mean, inputs in [0,1]")
    std: list[float] = Field(description="per-channel std")


class ModelConfig(Strict):
    arch: str = Field(description="registered architecture name (ablate.core.models)")
    kwargs: dict[str, ModelKwarg] = Field(default_factory=dict,
                                          description="extra builder arguments, e.g. width")
    normalize: NormalizeConfig | None = Field(None, description="input normalisation layer")

    @model_validator(mode="after")
    def _known_arch(self) -> ModelConfig:
        if self.arch is not None and self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; known: {sorted(ARCHITECTURES)}")
        return self


class TeacherTrainConfig(Strict):
    method: Literal["ce", "pgd_at"] = Field(description="clean CE or PGD adversarial training")
    epochs: int = Field(15, ge=1, le=MAX_EPOCHS, description="epochs")
    lr: float = Field(0.05, gt=0, description="SGD learning rate (cosine to 0)")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="images per batch")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    eps: float = Field(0.2, ge=0, le=1, description="PGD-AT radius, L∞ in [0,1] pixel units")
    step_size: float = Field(0.05, gt=0, description="PGD-AT step, pixel units")
    steps: int = Field(10, ge=1, le=MAX_STEPS, description="PGD-AT steps")
    subset: int | None = Field(None, ge=1, le=MAX_IMAGES, description="train on the first "
                               "N images of the (shuffled, seeded) training split; None = all "
                               "of it. Independent of data.train_subset, which cuts only the "
                               "student's: every preset on a dataset can share one cached "
                               "teacher")

    @model_serializer(mode="wrap")
    def _without_unset_subset(self, handler: Any) -> Any:
        # Left out when unset: teacher cache keys from before the field stay what they were.
        return without_defaults(handler(self), {"subset": None})


class TeacherConfig(ModelConfig):
    """A teacher from a checkpoint (``arch`` + ``checkpoint``), trained and cached (``arch`` +
    ``train``), or from the RobustBench zoo (``robustbench`` + ``dataset`` + ``threat_model``)."""

    arch: str | None = Field(None, description="registered architecture name "
                             "(ablate.core.models); not with `robustbench`")
    checkpoint: str | None = Field(None, description="state-dict file; None = train and cache")
    train: TeacherTrainConfig | None = Field(None, description="recipe when no checkpoint")
    robustbench: str | None = Field(None, description="a RobustBench model name, e.g. "
                                    "Zhang2019Theoretically (the TRADES WRN-34-10); needs "
                                    "ablate[robustbench]; takes [0,1] inputs")
    dataset: Literal[ZOO_DATASETS] | None = Field(  # type: ignore[valid-type]
        None, description="RobustBench: the model's dataset; None = data.name")
    threat_model: Literal["Linf", "L2", "corruptions"] = Field(
        "Linf", description="RobustBench: the leaderboard the model is from")
    model_dir: str | None = Field(None, description="RobustBench: its model_dir (files in "
                                  "DATASET/THREAT_MODEL/NAME.pt); None = the teacher cache's "
                                  "robustbench/ folder")
    download: bool = Field(True, description="RobustBench: download a missing checkpoint "
                           "(needs the network); false = exit 2 naming the path")

    @model_validator(mode="after")
    def _source(self) -> TeacherConfig:
        if self.robustbench is not None:
            given = [k for k in ("arch", "checkpoint", "train", "normalize")
                     if getattr(self, k) is not None] + (["kwargs"] if self.kwargs else [])
            if given:
                raise ValueError(f"`robustbench` names the model: drop {', '.join(given)}")
            return self
        if self.arch is None:
            raise ValueError("a teacher needs `arch` (with `checkpoint` or `train`) or "
                             "`robustbench`")
        if self.checkpoint is None and self.train is None:
            raise ValueError("a teacher needs either `checkpoint` or `train`")
        return self

    @property
    def label(self) -> str:
        """What the teacher is, for logs: its architecture or its RobustBench name."""
        if self.robustbench is not None:
            return f"RobustBench {self.robustbench} ({self.dataset} {self.threat_model})"
        return str(self.arch)

    @model_serializer(mode="wrap")
    def _without_unused_zoo_fields(self, handler: Any) -> Any:
        # A teacher not from the zoo dumps as before the zoo fields existed: config hashes,
        # teacher cache keys and resumable searches stay what they were.
        out = handler(self)
        if isinstance(out, dict) and self.robustbench is None:
            for key in ZOO_FIELDS:
                out.pop(key, None)
        return out


ZOO_FIELDS = ("robustbench", "dataset", "threat_model", "model_dir", "download")


class TeachersConfig(Strict):
    clean: TeacherConfig
    robust: TeacherConfig
