"""Typed experiment configuration: pydantic v2 models (``extra="forbid"``), YAML, overrides.

Every problem surfaces as :class:`ConfigError`, a one-line message naming the file and field;
the CLI turns it into exit code 2 before anything starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ablate.config.explain import check_kind, format_validation_error
from ablate.config.networks import (
    ModelConfig,
    Strict,
    TeachersConfig,
)
from ablate.config.overrides import (
    apply_overrides,
    config_notes,
    method_name,
    refuse_section_resets,
    switch_method,
    with_notes,
)
from ablate.config.safe_yaml import read_yaml
from ablate.core.catalog import (
    DATASETS,
    DEFAULT_DATA_ROOT,
    METHOD_PARAMS,
    OBJECTIVES,
    CiardParams,
    check_attacks,
)
from ablate.core.errors import ConfigError
from ablate.core.limits import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_IMAGES,
    MAX_SEED,
    MAX_STEPS,
    Epoch,
    SafeName,
    without_defaults,
)


class DataConfig(Strict):
    name: Literal[tuple(DATASETS)] = Field(  # type: ignore[valid-type]
        "digits", description="dataset: " + "; ".join(f"{d.name}: {d.summary}"
                                                      for d in DATASETS.values()))
    root: str = Field(DEFAULT_DATA_ROOT, description="directory holding the dataset's files "
                      "(CIFAR, Fashion-MNIST: torchvision's layout; Fashion-MNIST also flat); "
                      "Fashion-MNIST not found there is read where Debian's "
                      "dataset-fashion-mnist puts it")
    download: bool = Field(False, description="download the dataset into root if missing "
                           "(torchvision's downloader; needs the network)")
    val_size: float = Field(0.15, gt=0, le=MAX_IMAGES, description="validation hold-out: "
                            "fraction (<1) or count (>=1) of the training data")
    split_seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the train/val/test "
                            "split (fixed across trials so they are compared on the same "
                            "validation data)")
    train_subset: int | None = Field(
        None, ge=1, le=MAX_IMAGES, description="train the student on the first N images of "
        "the (shuffled, seeded) training split, the same N for every trial and seed; None = "
        "all. Teachers trained here take theirs from teachers.*.train.subset")

    @model_serializer(mode="wrap")
    def _without_unset_subset(self, handler: Any) -> Any:
        # Left out when unset: config hashes and resumable searches stay what they were.
        return without_defaults(handler(self), {"train_subset": None})


class AttackConfig(Strict):
    """Training-time inner maximisation (docs/ciard.md)."""

    objective: str | None = Field(
        None, description="PGD objective; None = the method's own. For CIARD it decides "
        "whether the push set J (clean teacher wrong on x*) is populated. Measured on digits "
        "(ε 0.2, 10×0.05, 12 epochs, 3 seeds), samples in J / batches with J = ∅ over the run: "
        "kl_clean_teacher (paper Eq. 6, gradient through student and clean teacher: x* goes "
        "where both agree) 15% / 20-27%, with J = ∅ in every batch of the first 2 epochs; "
        "kl_clean_teacher_detached (the teacher a stop-gradient target) 29% / 0%; "
        "ce (released code: CE on the student) 67% / 0%")
    eps: float = Field(8 / 255, ge=0, le=1, description="L∞ radius, [0,1] pixel units")
    step_size: float = Field(2 / 255, gt=0, description="PGD step, pixel units")
    steps: int = Field(10, ge=0, le=MAX_STEPS, description="PGD steps K")
    start: Literal["normal", "uniform", "uniform_unclamped", "none"] = Field(
        "normal", description="x + 0.001·N(0,I) (released code; the first gradient is taken "
        "there, unclamped), uniform in the ε-ball and clamped to [0,1] (Madry's code), "
        "uniform_unclamped (ARD's code: the first gradient is taken outside [0,1] where the "
        "noise leaves it), or x")
    student_mode: Literal["eval", "train"] = Field(
        "eval", description="student mode while x* is crafted (ARD's and Madry's code: train, "
        "which also moves its BatchNorm running statistics)")
    clean_pass_first: bool = Field(
        False, description="run the student's clean pass s(x) (train mode) before crafting x*, "
        "as the released CIARD code does: the eval-mode attack then sees BatchNorm statistics "
        "that include the current batch")

    @model_validator(mode="after")
    def _known_objective(self) -> AttackConfig:
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; known: {sorted(OBJECTIVES)}")
        return self


class OptimConfig(Strict):
    epochs: int = Field(300, ge=1, le=MAX_EPOCHS, description="student training epochs")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="images per batch")
    lr: float = Field(0.1, gt=0, description="initial student learning rate")
    lr_min: float = Field(1e-5, ge=0, description="final LR of the cosine schedule")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(2e-4, ge=0)
    schedule: Literal["cosine", "code", "step"] = Field(
        "cosine", description="paper cosine; released CIARD code: constant for the first half, "
        "then cosine×exp to 0; step: ×gamma at each of `milestones` (the baselines' recipes)")
    milestones: list[Epoch] = Field(default_factory=list, description="step schedule: epochs "
                                  "(counted from 0) from which the LR is multiplied by gamma")
    gamma: float = Field(0.1, gt=0, le=1, description="step schedule: LR factor per milestone")


class IttConfig(Strict):
    """Iterative Teacher Training (Eq. 8)."""

    enabled: bool = Field(True, description="false = 'w/o ITT' (Table 7): the robust teacher "
                          "is never updated")
    freeze_epochs: int = Field(50, ge=0, le=MAX_EPOCHS, description="epochs before the robust "
                               "teacher is updated; >= optim.epochs also means 'w/o ITT'")
    teacher_lr: float = Field(1e-5, gt=0, description="robust teacher SGD LR (paper 1e-5, "
                              "released code 1e-4)")
    momentum: float = Field(0.1, ge=0, lt=1, description="teacher SGD momentum (released code)")
    weight_decay: float = Field(2e-4, ge=0)
    schedule: Literal["constant", "code"] = Field(
        "constant", description="paper constant LR, or released code's cosine×exp decay")
    bn: Literal["train", "eval"] = Field("train", description="teacher BatchNorm mode while "
                                         "updated (released code: train)")
    frozen_bn: Literal["eval", "train"] = Field(
        "eval", description="teacher BatchNorm mode while not updated (before freeze_epochs, or "
        "always w/o ITT). Released code: train from epoch 1 (batch statistics in t'(x*), "
        "running statistics move; the weights stay frozen)")


class EvalConfig(Strict):
    w: float = Field(0.5, ge=0, le=1, description="clean weight of W-acc = w·clean+(1−w)·robust")
    eps: float | None = Field(None, ge=0, le=1, description="None = attack.eps")
    step_size: float | None = Field(None, gt=0, description="PGD step; None = attack.step_size")
    val_steps: int = Field(10, ge=1, le=MAX_STEPS, description="PGD steps for per-epoch validation")
    val_subset: int | None = Field(None, ge=1, le=MAX_IMAGES,
                                   description="fixed validation subset size")
    attacks: list[str] = Field(default_factory=list, description="final evaluation protocol "
                               "(docs/evaluation.md) run on the selected checkpoint at test "
                               "time, besides "
                               "clean and pgd_sat (always run): fgsm, pgd_trades, cw_inf, "
                               "square, autoattack, transfer_pgd_trades, transfer_cw_inf; step "
                               "sizes scale with eps")
    autoattack_subset: int | None = Field(500, ge=1, le=MAX_IMAGES, description="AutoAttack on "
                                          "the first N test images (None = all); printed with "
                                          "the table")

    @model_validator(mode="before")
    @classmethod
    def _removed_fields(cls, raw: Any) -> Any:
        for key in ("test_steps", "test_step_size"):
            if isinstance(raw, dict) and key in raw:
                raise ValueError(f"`{key}` was removed: the final test always runs PGD_SAT "
                                 "(20 steps of eps/4, seeded); delete the key")
        return raw

    @field_validator("attacks")
    @classmethod
    def _known_attacks(cls, attacks: list[str]) -> list[str]:
        check_attacks(attacks)
        return attacks


class IgdmConfig(Strict):
    """IGDM add-on (IGDM Eq. 8-9): α(epoch)·D(S(x+βδ) − S(x−γδ), T(x+βδ) − T(x−γδ))."""

    enabled: bool = Field(False, description="add the IGDM term to the method's loss")
    alpha: float = Field(1.0, ge=0, description="final weight; α(epoch) rises linearly to it "
                         "over the epochs (the paper's increasing T(α))")
    beta: float = Field(1.0, ge=0, description="forward step x+βδ along δ = x*−x")
    gamma: float = Field(1.0, ge=0, description="backward step x−γδ")
    distance: Literal["kl", "l1", "l2"] = Field("kl", description="D on the output "
                                                "differences (paper: KL)")


class ComputeConfig(Strict):
    """How the training step computes, not what: mixed precision, memory layout, compilation.
    Validation and the final test always run in fp32."""

    amp: Literal["none", "bf16", "fp16"] = Field(
        "none", description="autocast of the student and teacher passes of the training step "
        "(attack and loss); the perturbation, its projection and the loss reductions stay fp32; "
        "fp16 scales the loss for the backward pass")
    channels_last: bool = Field(False, description="models and input batches in channels-last "
                                "memory (faster convolutions on recent CPUs and GPUs)")
    compile: bool = Field(False, description="torch.compile the models (in place); falls back "
                          "to eager with a warning where the backend is missing")
    cuda_graph: bool = Field(False, description="capture the whole training step (attack, "
                             "passes, loss, backward, SGD steps) as a CUDA graph and replay it "
                             "per batch; CUDA only, not with amp fp16 or compile")

    @model_validator(mode="after")
    def _graphable(self) -> ComputeConfig:
        if self.cuda_graph and self.amp == "fp16":
            raise ValueError("cuda_graph cannot run with amp: fp16 (the gradient scaler reads "
                             "its overflow check back to the host every step); use amp: bf16")
        if self.cuda_graph and self.compile:
            raise ValueError("cuda_graph and compile are exclusive here (a compiled model "
                             "inside a captured step is untested); choose one")
        return self


# Every registered method's params, told apart by `name` (in ``ablate methods`` order).
AnyMethodParams = Annotated[Union[METHOD_PARAMS], Field(discriminator="name")]  # noqa: UP007


_DEFAULT_COMPUTE = ComputeConfig().model_dump()


class ExperimentConfig(Strict):
    """One distillation run: data, student, teachers, method, attack, optimiser, ITT, eval."""

    name: SafeName = Field("ciard", description="MLflow experiment name (a safe slug)")
    seed: int = Field(0, ge=0, le=MAX_SEED,
                      description="training seed: init, data order, attack starts")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda if present")
    data: DataConfig = Field(default_factory=DataConfig)
    student: ModelConfig
    teachers: TeachersConfig
    method: AnyMethodParams = Field(default_factory=CiardParams)  # type: ignore[valid-type]
    attack: AttackConfig = Field(default_factory=AttackConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    itt: IttConfig = Field(default_factory=IttConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    igdm: IgdmConfig = Field(default_factory=IgdmConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_method_name(cls, raw: Any) -> Any:
        # `method: {alpha: 0.3}` keeps meaning CIARD now that the union is discriminated by name.
        method = raw.get("method") if isinstance(raw, dict) else None
        if isinstance(method, dict) and "name" not in method:
            raw = {**raw, "method": {"name": "ciard", **method}}
        return raw

    @model_validator(mode="after")
    def _zoo_teachers_fit_the_data(self) -> ExperimentConfig:
        data = DATASETS[self.data.name]
        for role in ("clean", "robust"):
            t = getattr(self.teachers, role)
            if t.robustbench is None:
                continue
            zoo = t.dataset or data.zoo or data.name
            if zoo != data.zoo:  # its classes and image size: the zoo dataset the data fits
                raise ValueError(f"teachers.{role}: a RobustBench {zoo} model cannot teach on "
                                 f"data.name={data.name}")
            if t.dataset is None:  # resolved here, so the dump says which zoo model it is
                setattr(self.teachers, role, t.model_copy(update={"dataset": zoo}))
        return self

    @model_serializer(mode="wrap")
    def _without_default_compute(self, handler: Any) -> Any:
        # The default compute block is left out of every dump: configs, hashes, run names and
        # resumable experiments from before it existed stay what they were.
        out = handler(self)
        if isinstance(out, dict) and out.get("compute") == _DEFAULT_COMPUTE:
            out.pop("compute")
        return out

    def digest(self) -> str:
        """Stable short hash of the resolved config (tags, cache keys)."""
        return config_hash(self.model_dump(mode="json"))


def config_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def validate_model(model: type[BaseModel], raw: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, model)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment YAML. When an override changes
    ``method.name``, the old method's fields the new one lacks are dropped (a note says which;
    :func:`config_warnings` prints it)."""
    raw = read_yaml(path)
    check_kind(raw, path, "experiment")
    refuse_section_resets(overrides, ExperimentConfig)
    before = method_name(raw)
    raw = apply_overrides(raw, overrides or [])
    note = switch_method(raw, before, [item.partition("=")[0] for item in overrides or []])
    cfg = validate_model(ExperimentConfig, raw, str(path))
    return with_notes(cfg, [note] if note else [])


def itt_never_starts(cfg: ExperimentConfig) -> bool:
    """ITT is asked for but its freeze epoch is at or past the last epoch."""
    return (cfg.itt.enabled and cfg.method.itt
            and cfg.itt.freeze_epochs >= cfg.optim.epochs)


def config_warnings(cfg: ExperimentConfig, where: str = "") -> list[str]:
    """Settings that silently make a term inert, and what loading changed on its own (fields
    dropped with a method switch), one line each, naming the field."""
    out = [f"{where}{note}" for note in config_notes(cfg)]
    if itt_never_starts(cfg):
        out.append(f"{where}itt.freeze_epochs={cfg.itt.freeze_epochs} >= optim.epochs="
                   f"{cfg.optim.epochs}: ITT never starts (the run is 'w/o ITT')")
    return out


def effective_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config with inert settings canonicalised, so two configs that train the same way
    compare equal: ITT that never starts is ITT off, knobs of a disabled term are dropped, a
    null attack objective is the method's own."""
    d = cfg.model_dump(mode="json", exclude={"name"})
    method, spec = d["method"], cfg.method
    if not spec.itt:
        d.pop("itt")
    elif not cfg.itt.enabled or itt_never_starts(cfg):
        d["itt"] = {"enabled": False, "frozen_bn": cfg.itt.frozen_bn}
    if method["name"] == "ciard":
        if not method["push"] or method["lam"] == 0:
            for key in ("lam", "push_student_temp", "push_teacher_temp"):
                method.pop(key)
            method["push"] = False
        if not method["adaptive_temps"]:
            for key in ("temp_lr", "temp_min", "temp_max", "adaptive_temps_decay_epochs"):
                method.pop(key, None)
    if d["attack"]["objective"] is None:
        d["attack"]["objective"] = spec.objective
    if not cfg.igdm.enabled:
        d["igdm"] = {"enabled": False}
    if cfg.optim.schedule != "step":
        d["optim"].pop("milestones")
        d["optim"].pop("gamma")
    return d
