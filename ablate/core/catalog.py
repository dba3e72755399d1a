"""What a config may name, as plain data without torch: datasets, architectures, PGD
objectives, evaluation attacks, and every registered method with its knobs.

A config is validated (and a bad one refused) against this module alone, before torch loads.
The registries that implement these names (``core.models``, ``core.attacks``,
``core.robustness``, ``core.methods``) must hold exactly them; ``tests/core/test_catalog.py``
checks that they do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializationInfo,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from ablate.core.limits import STRICT, Epoch, without_defaults


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset a config may name (``data.name``): what building its models, checking the
    inputs and estimating the cost need to know of it before it is loaded."""

    name: str
    channels: int
    classes: int
    side: int  # images are side x side pixels
    augment: bool  # random crop (pad 4) and horizontal flip on training batches
    train_images: int | None  # the official training set the hold-out comes from (None:
    #                           split by its loader from a bundled or generated set)
    on_disk: bool  # files under data.root, checked (and refused if missing) before a run
    zoo: str | None  # the RobustBench dataset whose models can teach on it
    summary: str
    system_dirs: tuple[str, ...] = ()  # where its files are looked for when not under data.root


DEFAULT_DATA_ROOT = "data"  # data.root's default: ./data


DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("digits", 1, 10, 8, augment=False, train_images=None, on_disk=False, zoo=None,
                summary="scikit-learn's bundled 8x8 digits (1,797 images, offline)"),
    DatasetInfo("cifar10", 3, 10, 32, augment=True, train_images=50_000, on_disk=True,
                zoo="cifar10", summary="CIFAR-10 in torchvision's layout under data.root"),
    DatasetInfo("cifar100", 3, 100, 32, augment=True, train_images=50_000, on_disk=True,
                zoo="cifar100", summary="CIFAR-100 in torchvision's layout under data.root"),
    DatasetInfo("synthetic", 3, 10, 32, augment=True, train_images=None, on_disk=False,
                zoo="cifar10", summary="random CIFAR-shaped images (tests and benchmarks)"),
    DatasetInfo("fashion_mnist", 1, 10, 28, augment=False, train_images=60_000, on_disk=True,
                zoo=None, summary="Fashion-MNIST (70,000 28x28 grey images): its idx files "
                "under data.root, else Debian's dataset-fashion-mnist",
                system_dirs=("/usr/share/datasets/fashion-mnist",)),
)}
ZOO_DATASETS: tuple[str, ...] = tuple(sorted({d.zoo for d in DATASETS.values() if d.zoo}))

ARCHITECTURES: tuple[str, ...] = (
    "small_cnn", "flat_cnn", "resnet18", "mobilenet_v2", "resnet56", "wide_resnet", "wrn34_10",
    "wrn22_6", "wrn70_16")
OBJECTIVES: tuple[str, ...] = (
    "ce", "kl_clean_teacher", "kl_clean_teacher_detached", "trades_kl", "kl_robust_teacher_nat",
    "kl_robust_teacher")
ATTACKS: tuple[str, ...] = ("fgsm", "pgd_sat", "pgd_trades", "cw_inf", "square", "autoattack",
                            "transfer_pgd_trades", "transfer_cw_inf")
ATTACK_LABELS: dict[str, str] = {
    "fgsm": "FGSM", "pgd_sat": "PGD_SAT", "pgd_trades": "PGD_TRADES", "cw_inf": "CW∞",
    "square": "Square", "autoattack": "AutoAttack", "transfer_pgd_trades": "Transfer PGD_TRADES",
    "transfer_cw_inf": "Transfer CW∞",
}


def check_attacks(names: Iterable[str]) -> None:
    """ValueError naming the first name that is not an attack of the final protocol."""
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack {unknown[0]!r}; known: {', '.join(ATTACKS)}")


# --- Methods -------------------------------------------------------------------------------------

class MethodParams(BaseModel):
    """A method's knobs (fields, ``name`` first) and its fixed facts (class variables): what
    ``ablate methods`` prints; its loss lives in ``ablate.core.methods``."""

    model_config = STRICT
    summary: ClassVar[str]  # one line: the paper and its outer loss
    objective: ClassVar[str]  # the inner max's default objective (a name in OBJECTIVES)
    teachers: ClassVar[tuple[str, ...]] = ()  # which teachers the loss reads: clean, robust
    itt: ClassVar[bool] = False  # whether the loss trains the robust teacher (ITT, Eq. 8)
    # Knobs added after a method first shipped, with the value that keeps its old behaviour:
    # left out of JSON dumps (what is hashed, saved and logged) at that value, so config
    # hashes, run names and resumable searches of configs that do not use them stay what they
    # were. Python dumps, what the losses read, carry every knob.
    late: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _without_late_defaults(self, handler: Any, info: SerializationInfo) -> Any:
        out = handler(self)
        return without_defaults(out, self.late) if info.mode_is_json() else out


KlReduction = Literal["batchmean", "mean"]
_RED_DOC = "KL averaging: per sample (batchmean, the paper's KL) or per entry (mean, released code)"


# --- CIARD (ICCV 2025) ---------------------------------------------------------------------------

class CiardParams(MethodParams):
    """CIARD loss knobs (Eq. 7, Alg. 1). Defaults are the paper's; switches select the code's."""

    summary: ClassVar[str] = ("CIARD (ICCV 2025): α·KL(s(x)‖t(x)) + β·KL(s(x*)‖t'(x*)) − λ·Push; "
                              "ITT")
    objective: ClassVar[str] = "kl_clean_teacher"
    teachers: ClassVar[tuple[str, ...]] = ("clean", "robust")
    itt: ClassVar[bool] = True
    name: Literal["ciard"] = "ciard"
    alpha: float = Field(0.5, ge=0, description="weight of KL(s(x) ‖ t(x)), clean knowledge "
                         "(paper: α + β = 1, Eq. 4; released code 1)")
    beta: float = Field(0.5, ge=0, description="weight of KL(s(x*) ‖ t'(x*)), robust knowledge "
                        "(released code 1)")
    lam: float | Literal["auto"] = Field(
        "auto",
        description="push weight λ ≥ 0, or 'auto' (released code: a power of ten that gives the "
        "push term the magnitude of the smaller KL term, every step)",
    )
    push: bool = Field(True, description="use the contrastive push loss (Table 7 'w/ push')")
    push_student_temp: float = Field(4.0, gt=0, description="push temperature, student side "
                                     "(paper 4; released code 5)")
    push_teacher_temp: float = Field(4.0, gt=0, description="push temperature, teacher side "
                                     "(paper 4; released code 1)")
    adaptive_temps: bool = Field(False, description="released code's adaptive teacher "
                                 "temperatures τ_adv, τ_nat for the two KL targets")
    temp_lr: float = Field(1e-3, gt=0, description="adaptive temperature step per batch")
    adaptive_temps_decay_epochs: list[Epoch] = Field(
        [], description="epochs (counted from 0) in which the temperature step shrinks ×0.1 "
        "after every batch (released code: [214, 259, 284]: `if epoch in [215,260,285]: "
        "temp_learn_rate *= 0.1` sits in its batch loop); between them the step stays where "
        "it got to; [] = never")
    temp_min: float = Field(1.0, gt=0, description="lower clip of adaptive temperatures")
    temp_max: float = Field(10.0, gt=0, description="upper clip of adaptive temperatures")
    kl_reduction: KlReduction = Field(
        "batchmean", description="KL averaging: per sample (batchmean) or per entry "
        "(mean, released code: 1/num_classes as large)")
    kl_eps: float = Field(0.0, ge=0, description="eps in the teacher's p·log(p + eps) of every "
                          "KL term (released code: 1e-5); shifts the loss values, hence λ auto, "
                          "not the gradients")

    late: ClassVar[dict[str, Any]] = {"adaptive_temps_decay_epochs": []}

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "adaptive_temps_freeze_epoch" in raw:
            if raw["adaptive_temps_freeze_epoch"] is None:  # "never", as older dumps say it
                return {k: v for k, v in raw.items() if k != "adaptive_temps_freeze_epoch"}
            raise ValueError("`adaptive_temps_freeze_epoch` was replaced by "
                             "`adaptive_temps_decay_epochs` (a list of 0-based epochs; the "
                             "released code's is [214, 259, 284]); delete the old key")
        return raw

    @field_validator("lam")
    @classmethod
    def _lam(cls, v: float | str) -> float | str:
        if isinstance(v, float) and v < 0:
            raise ValueError("must be >= 0 or 'auto'")
        return v

    @field_validator("temp_max")
    @classmethod
    def _temps(cls, v: float, info: ValidationInfo) -> float:
        if v < info.data.get("temp_min", 0.0):
            raise ValueError("must be >= temp_min")
        return v


# --- PGD-AT and TRADES (no teacher) ------------------------------------------------------------

class PgdAtParams(MethodParams):
    """PGD-AT has no loss knobs: min E[max CE(f(x+δ), y)]."""

    summary: ClassVar[str] = "PGD-AT (Madry et al., ICLR 2018): CE(s(x*), y), no teacher"
    objective: ClassVar[str] = "ce"
    name: Literal["pgd_at"] = "pgd_at"


class TradesParams(MethodParams):
    """TRADES (Zhang et al. 2019)."""

    summary: ClassVar[str] = ("TRADES (Zhang et al., ICML 2019): CE(s(x), y) + β·KL(s(x*)‖s(x)), "
                              "no teacher")
    objective: ClassVar[str] = "trades_kl"
    name: Literal["trades"] = "trades"
    beta: float = Field(6.0, ge=0, description="weight β of KL(f(x*) ‖ f(x)) (paper value 6)")


# --- ARD, RSLAD, MTARD, AdaAD (adversarial distillation) ----------------------------------------

class ArdParams(MethodParams):
    """ARD (Goldblum et al. 2020); defaults are the paper's CIFAR-10 values."""

    summary: ClassVar[str] = ("ARD (Goldblum et al., AAAI 2020): α·T²·KL(s(x*)/T‖t'(x)/T) "
                              "+ (1−α)·CE(s(x), y)")
    objective: ClassVar[str] = "ce"
    teachers: ClassVar[tuple[str, ...]] = ("robust",)
    name: Literal["ard"] = "ard"
    alpha: float = Field(1.0, ge=0, le=1, description="weight α of the distillation term; "
                         "1 − α goes to CE(S(x), y) (paper value 1.0 on CIFAR-10)")
    temp: float = Field(30.0, gt=0, description="distillation temperature T, the KL is scaled "
                        "by T² (paper value 30 on CIFAR-10)")
    kl_reduction: KlReduction = Field("batchmean", description=_RED_DOC)
    clean_pass: bool = Field(False, description="run the student's clean pass s(x) (train "
                             "mode) even when α = 1 leaves it out of the loss, as the released "
                             "code does: it moves only the student's BatchNorm running "
                             "statistics (after s(x*), in ARD's order)")
    late: ClassVar[dict[str, Any]] = {"clean_pass": False}


class RsladParams(MethodParams):
    """RSLAD (Zi et al. 2021): robust soft labels T(x) in both terms and the inner max."""

    summary: ClassVar[str] = ("RSLAD (Zi et al., ICCV 2021): 5/6·KL(s(x*)‖t'(x)) "
                              "+ 1/6·KL(s(x)‖t'(x))")
    objective: ClassVar[str] = "kl_robust_teacher_nat"
    teachers: ClassVar[tuple[str, ...]] = ("robust",)
    name: Literal["rslad"] = "rslad"
    alpha: float = Field(5 / 6, ge=0, le=1, description="weight of KL(S(x*) ‖ T(x)); 1 − α goes "
                         "to KL(S(x) ‖ T(x)) (paper value 5/6)")
    kl_reduction: KlReduction = Field("batchmean", description=_RED_DOC)
    kl_eps: float = Field(0.0, ge=0, description="eps in the teacher's p·log(p + eps) of "
                          "both KL terms (released code: 1e-5); shifts the loss values, "
                          "not the gradients")
    late: ClassVar[dict[str, Any]] = {"kl_eps": 0.0}


class MtardParams(MethodParams):
    """MTARD (Zhao et al. 2022): clean and robust teachers, adaptive normalised weights."""

    summary: ClassVar[str] = ("MTARD (Zhao et al., ECCV 2022): w_nat·KL(s(x)‖t(x)) "
                              "+ w_adv·KL(s(x*)‖t'(x*)), adaptive weights")
    objective: ClassVar[str] = "ce"
    teachers: ClassVar[tuple[str, ...]] = ("clean", "robust")
    name: Literal["mtard"] = "mtard"
    weight_lr: float = Field(0.025, gt=0, le=1, description="step η of the weights toward the "
                             "normalised relative losses (paper/released code value 0.025)")
    weight_lr_milestones: list[Epoch] = Field(
        [215, 260, 285], description="epochs (counted from 0) from which η is multiplied by "
        "0.1, as the released code does with the student LR at 215/260/285 of 300 epochs")
    kl_reduction: KlReduction = Field("batchmean", description=_RED_DOC)
    kl_eps: float = Field(0.0, ge=0, description="eps in the teacher's p·log(p + eps) of "
                          "both KL terms (released code: 1e-5); shifts the loss values, "
                          "hence the adaptive weights, not the gradients")
    late: ClassVar[dict[str, Any]] = {"kl_eps": 0.0}


class AdaadParams(MethodParams):
    """AdaAD (Huang et al. 2023, Eq. 9 inner, Eq. 11 outer)."""

    summary: ClassVar[str] = ("AdaAD (Huang et al., CVPR 2023): α·KL(s(x*)‖t'(x*)) "
                              "+ (1−α)·KL(s(x)‖t'(x))")
    objective: ClassVar[str] = "kl_robust_teacher"
    teachers: ClassVar[tuple[str, ...]] = ("robust",)
    name: Literal["adaad"] = "adaad"
    alpha: float = Field(1.0, ge=0, le=1, description="weight α of KL(S(x*) ‖ T(x*)); 1 − α goes "
                         "to KL(S(x) ‖ T(x)) (paper value 1.0)")
    temp: float = Field(1.0, gt=0, description="temperature τ of the adversarial term, both "
                        "sides, no τ² factor (Eq. 11; paper/released code value 1)")
    kl_reduction: KlReduction = Field("batchmean", description=_RED_DOC)
    clean_pass: bool = Field(False, description="run the student's clean pass s(x) (train "
                             "mode) even when α = 1 leaves it out of the loss, as the released "
                             "code does: it moves only the student's BatchNorm running "
                             "statistics (before s(x*), in AdaAD's order)")
    late: ClassVar[dict[str, Any]] = {"clean_pass": False}


METHOD_PARAMS: tuple[type[MethodParams], ...] = (
    CiardParams, PgdAtParams, TradesParams, ArdParams, RsladParams, MtardParams, AdaadParams)
METHOD_NAMES: tuple[str, ...] = tuple(p.model_fields["name"].default for p in METHOD_PARAMS)
