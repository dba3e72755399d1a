"""The epoch loop: schedules, ITT, per-epoch validation, best checkpoint, resumable state.

:meth:`Trainer.run` is the loop: it yields after every epoch, so a Ray Tune trainable can
report and checkpoint between epochs and ``ablate train`` can log and print.
Epochs are counted from 0; the robust teacher is updated in epoch e iff e >= freeze_epochs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ablate import names
from ablate.core.accuracy import correct, eval_mode, evaluate
from ablate.core.compute import Amp, grad_scaler, memory_format, peak_flops, prepare
from ablate.core.data import Dataset, augment_crop_flip, iterate_batches
from ablate.core.errors import ConfigError, one_line
from ablate.core.flop_counter import FlopCounter
from ablate.core.graphs import GraphedStep
from ablate.core.integrity import check_finite, save_verified
from ablate.core.methods import get_method
from ablate.core.models import CheckpointError, read_checkpoint
from ablate.core.robustness import run_suite, suite_metrics
from ablate.core.schedules import student_lr, teacher_lr
from ablate.core.settings import (
    AttackSettings,
    ComputeSettings,
    EvalSettings,
    IttSettings,
    OptimSettings,
)
from ablate.core.step import Divergence, StepMeans, step_tensors

TRAINER_KEYS = ("epoch", "student", "robust_teacher", "optimizer", "teacher_optimizer", "state",
                "best", "history", "rng")  # what Trainer.state_dict writes
CHECK_EVERY = 50  # steps between reads of the divergence flag (one host read each)
_FLOPS = "flops_per_image"  # train_epoch -> run_epoch only; logged as perf/gflop_per_image


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class Trainer:
    """One distillation run. All arguments are plain values; see ``ablate.config`` for units."""

    def __init__(
        self, *, student: nn.Module, clean_teacher: nn.Module | None,
        robust_teacher: nn.Module | None, data: Dataset, method: str = "ciard",
        method_params: dict[str, Any] | None = None, optim: OptimSettings,
        attack: AttackSettings, itt: IttSettings | None = None,
        eval: EvalSettings | None = None,  # noqa: A002 (the config's section name)
        compute: ComputeSettings | None = None, seed: int = 0,
        igdm: dict[str, Any] | None = None, surrogate: nn.Module | None = None,
    ) -> None:
        """The groups left out take their defaults; ``igdm`` (alpha, beta, gamma, distance)
        adds the IGDM term, ``surrogate`` is the transfer attacks' source model."""
        itt, eval, compute = (itt or IttSettings(), eval or EvalSettings(),
                              compute or ComputeSettings())
        spec = get_method(method)
        self.method, self.params = method, spec.params(**(method_params or {})).model_dump()
        self.student, self.clean_teacher = student, clean_teacher
        self.robust_teacher = robust_teacher
        self.optim, self.eval = optim, eval
        self.data, self.epochs, self.batch_size = data, optim.epochs, optim.batch_size
        self.device = next(student.parameters()).device
        for model in (student, clean_teacher, robust_teacher):
            if model is not None:
                prepare(model, channels_last=compute.channels_last, compile=compute.compile)
        self.memory_format = memory_format(compute.channels_last)
        self.amp: Amp = compute.amp  # type: ignore[assignment]
        self.step_flops: dict[bool, float] = {}  # per image, by whether ITT updates the teacher
        self.scaler = grad_scaler(self.device, self.amp)
        if compute.cuda_graph and self.device.type != "cuda":
            raise ConfigError(f"compute.cuda_graph: CUDA graphs need a CUDA device; this "
                              f"trainer's models are on {self.device.type}")
        self.graphed = GraphedStep() if compute.cuda_graph else None
        self.divergence = Divergence(self.device)  # one tensor: a captured step writes it
        self.step_kw = dict(objective=attack.objective, eps=attack.eps,
                            step_size=attack.step_size, steps=attack.steps, start=attack.start,
                            student_mode=attack.student_mode,
                            clean_pass_first=attack.clean_pass_first, teacher_bn=itt.bn,
                            frozen_teacher_bn=itt.frozen_bn, amp=self.amp, scaler=self.scaler)
        # ITT switched off is a freeze epoch past the last epoch: the teacher is never updated.
        self.freeze_epochs = itt.freeze_epochs if itt.enabled else optim.epochs
        self.teacher_lr_base, self.teacher_lr_schedule = itt.teacher_lr, itt.schedule
        self.eval_kw = dict(eps=eval.eps if eval.eps is not None else attack.eps,
                            step_size=eval.step_size or attack.step_size, steps=eval.val_steps,
                            w=eval.w)
        self.val = data.val.subset(eval.val_subset)
        self.igdm = igdm  # alpha, beta, gamma, distance; None = off
        self.surrogate = surrogate  # source model of the transfer attacks (the robust teacher)
        self.optimizer = torch.optim.SGD(student.parameters(), lr=optim.lr,
                                         momentum=optim.momentum,
                                         weight_decay=optim.weight_decay)
        self.teacher_optimizer = None
        if robust_teacher is not None and self.freeze_epochs < self.epochs:
            self.teacher_optimizer = torch.optim.SGD(
                robust_teacher.parameters(), lr=itt.teacher_lr, momentum=itt.momentum,
                weight_decay=itt.weight_decay)
        # The run owns its random streams (data order, attack starts), so runs in one process
        # neither disturb each other nor depend on what ran before: same seed, same result.
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = self._seeded_rng(seed)
        self.state: dict[str, Any] = spec.init_state()
        self.epoch = 0
        # Whether the robust teacher drifts from its checkpoint: ITT updates, or BatchNorm
        # statistics of a frozen teacher run in train mode; then the best epoch keeps its copy.
        self.teacher_drifts = robust_teacher is not None and spec.itt and (
            self.teacher_optimizer is not None or itt.frozen_bn == "train")
        self.fixed_val: dict[str, float] = {}  # teachers' clean accuracies while unchanged
        self.best: dict[str, Any] = {"w_acc": -1.0, "clean_acc": 0.0, "robust_acc": 0.0,
                                     "epoch": -1, "student": None, "robust_teacher": None}
        self.history: list[dict[str, float]] = []

    @property
    def done(self) -> bool:
        return self.epoch >= self.epochs

    def _seeded_rng(self, seed: int) -> dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=self._cuda_devices()):
            torch.manual_seed(seed)
            return self._get_rng()

    def _cuda_devices(self) -> list[torch.device]:
        return [self.device] if self.device.type == "cuda" else []

    def _get_rng(self) -> dict[str, torch.Tensor]:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run with this trainer's global-RNG state and store it back afterwards."""
        with torch.random.fork_rng(devices=self._cuda_devices()):
            torch.set_rng_state(self.rng["cpu"])
            if "cuda" in self.rng:
                torch.cuda.set_rng_state(self.rng["cuda"], self.device)
            yield
            self.rng = self._get_rng()

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training split; returns mean loss terms and the epoch's LRs."""
        with self._own_rng():
            return self._train_epoch()

    def _train_epoch(self) -> dict[str, float]:
        e = self.epoch
        o = self.optim
        lr = student_lr(o.schedule, e, self.epochs, o.lr, o.lr_min, o.milestones, o.gamma)
        _set_lr(self.optimizer, lr)
        update_teacher = self.teacher_optimizer is not None and e >= self.freeze_epochs
        t_lr = 0.0
        if update_teacher:
            t_lr = teacher_lr(self.teacher_lr_schedule, e, self.epochs, self.teacher_lr_base,
                              self.freeze_epochs)
            _set_lr(self.teacher_optimizer, t_lr)
        igdm = None
        if self.igdm is not None:  # IGDM's increasing T(α): linear up to alpha at the end
            igdm = dict(self.igdm, weight=self.igdm["alpha"] * (e + 1) / self.epochs)
        params = get_method(self.method).epoch_params(self.params, e)
        # A term a batch did not report (the push loss of a batch with J = ∅) is averaged over
        # the batches that did report it; sums and the finiteness flag stay on the device.
        means, divergence = StepMeans(), self.divergence
        divergence.reset()
        # Everything a captured step bakes in; a new key captures a new graph (ablate.core.graphs).
        graph_key = (update_teacher, lr, t_lr, repr(params), repr(igdm))
        graphed = None if self.graphed is None else functools.partial(self.graphed, graph_key)
        for i, (x, y) in enumerate(iterate_batches(self.data.train, self.batch_size,
                                                   shuffle=True, generator=self.generator)):
            if self.data.augment:
                x = augment_crop_flip(x, generator=self.generator)
            x = x.contiguous(memory_format=self.memory_format)
            counting = update_teacher not in self.step_flops  # first step of its kind
            step = step_tensors if counting or graphed is None else graphed
            with FlopCounter() if counting else contextlib.nullcontext() as counter:
                out = step(
                    method=self.method, params=params, state=self.state,
                    student=self.student, clean_teacher=self.clean_teacher,
                    robust_teacher=self.robust_teacher, x=x, y=y, optimizer=self.optimizer,
                    teacher_optimizer=self.teacher_optimizer, update_teacher=update_teacher,
                    igdm=igdm, divergence=divergence, **self.step_kw)
            if counting:
                self.step_flops[update_teacher] = counter.get_total_flops() / len(x)
            means.add(out)
            if (i + 1) % CHECK_EVERY == 0:  # a diverged run stops within CHECK_EVERY steps
                divergence.check(self.method)
        divergence.check(self.method)  # before validating or saving anything of this epoch
        metrics = means.read()
        metrics.update(lr=lr, teacher_lr=t_lr, **{k: float(v) for k, v in self.state.items()})
        metrics[_FLOPS] = self.step_flops.get(update_teacher, 0.0)
        if self.teacher_drifts and (update_teacher or self.step_kw["frozen_teacher_bn"] == "train"):
            self.fixed_val.pop("robust_teacher_clean_acc", None)  # this epoch changed it
        if igdm is not None:
            metrics["igdm_weight"] = igdm["weight"]
        return metrics

    def validate(self) -> dict[str, float]:
        """The student's validation accuracies and the teachers'; a teacher's clean accuracy
        is measured again only after an epoch that changed the teacher (the clean teacher
        never changes), which saves two of the four teacher passes of most epochs."""
        with self._own_rng():
            out = evaluate(self.student, self.val, clean_teacher=self.clean_teacher,
                           robust_teacher=self.robust_teacher, known=self.fixed_val,
                           **self.eval_kw)
        self.fixed_val = {k: out[k] for k in ("clean_teacher_clean_acc",
                                               "robust_teacher_clean_acc") if k in out}
        return out

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch, validate, keep the best student by W-acc; returns prefixed metrics
        (the history keeps them without the wall-clock ``perf/*``, so a resumed run's history
        equals an uninterrupted one's)."""
        start = time.perf_counter()
        try:
            train = self.train_epoch()
        except FloatingPointError as exc:  # a non-finite loss: say when, for the trial table
            raise FloatingPointError(f"diverged in epoch {self.epoch + 1}: {exc}") from None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        perf = self._perf(time.perf_counter() - start, train.pop(_FLOPS))
        val = self.validate()
        if val["w_acc"] > self.best["w_acc"]:
            teacher = (copy.deepcopy(self.robust_teacher.state_dict())
                       if self.teacher_drifts else None)
            self.best = {"w_acc": val["w_acc"], "clean_acc": val["clean_acc"],
                         "robust_acc": val["robust_acc"], "epoch": self.epoch,
                         "student": copy.deepcopy(self.student.state_dict()),
                         "robust_teacher": teacher}
        metrics = {names.EPOCH: float(self.epoch + 1)}  # 1-based: the MLflow step
        metrics.update({f"{names.TRAIN}{k}": v for k, v in train.items()})
        metrics.update(self._run_means(metrics))
        metrics.update({f"{names.VAL}{k}": v for k, v in val.items()})
        for k in ("w_acc", "clean_acc", "robust_acc"):  # at the best epoch so far
            metrics[f"{names.BEST_PREFIX}{k}"] = self.best[k]
        self.history.append(metrics)
        self.epoch += 1
        return {**metrics, **perf}

    def _perf(self, seconds: float, flops_per_image: float) -> dict[str, float]:
        """Training throughput of the epoch: images/s, and from the FLOPs counted on its first
        step (FlopCounterMode: matrix products and convolutions), TFLOP/s and, on a GPU whose
        peak is known, the model FLOPs utilisation."""
        img_per_s = len(self.data.train) / max(seconds, 1e-9)
        out = {f"{names.PERF}img_per_s": img_per_s, f"{names.PERF}epoch_s": seconds,
               f"{names.PERF}gflop_per_image": flops_per_image / 1e9,
               f"{names.PERF}tflops": img_per_s * flops_per_image / 1e12}
        peak = peak_flops(self.device, self.amp)
        if peak:
            out[f"{names.PERF}mfu"] = img_per_s * flops_per_image / peak
        return out

    def _run_means(self, metrics: dict[str, float]) -> dict[str, float]:
        """Push diagnostics over the run so far (every epoch has the same batches), so the last
        report of a trial or grid cell says how often the push term acted in the whole run."""
        out = {}
        for key in names.PUSH_KEYS:  # the step reports push_active_frac, push_empty_frac per batch
            name = f"{names.TRAIN}{key}_frac"
            now = metrics.get(name)
            if now is not None:
                values = [h[name] for h in self.history if name in h]
                out[names.run_mean(key)] = (sum(values) + now) / (len(values) + 1)
        return out

    def best_student(self) -> nn.Module:
        """A copy of the student at its best validation W-acc epoch (the current one if none)."""
        model = copy.deepcopy(self.student)
        if self.best["student"] is not None:
            model.load_state_dict(self.best["student"])
        return model.eval()

    def best_robust_teacher(self) -> nn.Module | None:
        """The robust teacher as it was at the best epoch (ITT may have changed it since)."""
        if self.robust_teacher is None or self.best.get("robust_teacher") is None:
            return self.robust_teacher
        model = copy.deepcopy(self.robust_teacher)
        model.load_state_dict(self.best["robust_teacher"])
        return model.eval()

    def test(self, *, attacks: Sequence[str] | None = None) -> dict[str, float]:
        """Evaluate the best student (by validation W-acc) once on the test split with the final
        protocol: clean, PGD_SAT (always: the test-time PGD, seeded) and ``attacks`` (default:
        the eval settings'; ``<attack>_acc``, ``_wr``; AutoAttack on the first
        ``autoattack_subset`` images), plus both teachers' accuracy on the clean and the
        PGD_SAT examples, the robust teacher as it was at the best epoch."""
        attacks = self.eval.attacks if attacks is None else attacks
        model, split = self.best_student(), self.data.test
        teachers = {name: net for name, net in (("clean_teacher", self.clean_teacher),
                                                ("robust_teacher", self.best_robust_teacher()))
                    if net is not None}
        n, x = max(len(split), 1), split.x  # x: converted to float once
        with eval_mode(*teachers.values()):
            out = {f"{label}_clean_acc": correct(net, x, split.y) / n
                   for label, net in teachers.items()}

        def teacher_accuracy(name: str, x_adv: torch.Tensor, y: torch.Tensor) -> None:
            if name == "pgd_sat":
                with eval_mode(*teachers.values()):
                    for label, net in teachers.items():
                        out[f"{label}_robust_acc"] = correct(net, x_adv, y) / n

        suite = ["pgd_sat", *(a for a in attacks if a != "pgd_sat")]
        results = run_suite(model, x, split.y, attacks=suite, eps=self.eval_kw["eps"],
                            w=self.eval_kw["w"], surrogate=self.surrogate,
                            autoattack_subset=self.eval.autoattack_subset, seed=self.seed,
                            on_adv=teacher_accuracy)
        out.update(suite_metrics(results))
        out["best_epoch"] = float(self.best["epoch"] + 1)  # 1-based, as the console counts
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit: models, optimizers, RNGs, method state."""
        return {
            "epoch": self.epoch,
            "student": self.student.state_dict(),
            "robust_teacher": self.robust_teacher.state_dict() if self.robust_teacher else None,
            "optimizer": self.optimizer.state_dict(),
            "teacher_optimizer": (self.teacher_optimizer.state_dict()
                                  if self.teacher_optimizer else None),
            "state": dict(self.state),
            "best": self.best,
            "history": self.history,
            "rng": dict(self.rng, generator=self.generator.get_state()),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.epoch = int(sd["epoch"])
        self.student.load_state_dict(sd["student"])
        if self.robust_teacher is not None and sd["robust_teacher"] is not None:
            self.robust_teacher.load_state_dict(sd["robust_teacher"])
        self.optimizer.load_state_dict(sd["optimizer"])
        if self.teacher_optimizer is not None and sd["teacher_optimizer"] is not None:
            self.teacher_optimizer.load_state_dict(sd["teacher_optimizer"])
        self.state = dict(sd["state"])
        self.best, self.history = {"robust_teacher": None, **sd["best"]}, list(sd["history"])
        rng = dict(sd["rng"])
        self.generator.set_state(rng.pop("generator"))
        self.rng = {k: v for k, v in rng.items() if k == "cpu" or self.device.type == "cuda"}
        if self.scaler is not None and sd.get("scaler"):  # fp16's loss scale goes on as it was
            self.scaler.load_state_dict(sd["scaler"])
        self.fixed_val = {}  # the teacher may differ from the one measured
        if self.graphed is not None:  # the optimizers' buffers are new tensors: capture anew
            self.graphed = GraphedStep()

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the resumable checkpoint atomically (a crash never leaves a half-written file),
        then its sha256 digest beside it (:func:`~ablate.core.integrity.save_verified`)."""
        return save_verified(self.state_dict(), Path(directory) / names.CHECKPOINT_FILE)

    def restore(self, directory: str | os.PathLike) -> bool:
        """Load the checkpoint in ``directory`` if there is one; returns whether it did. A file
        that is unsafe, truncated or from another config is a one-line CheckpointError."""
        path = Path(directory) / names.CHECKPOINT_FILE
        if not path.exists():
            return False
        sd = read_trainer_checkpoint(path)
        check_finite(sd, path)  # weights, optimizer buffers: never train on from NaN
        try:
            self.load_state_dict(sd)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # shapes, types
            why = one_line(exc, 300)
            raise CheckpointError(f"checkpoint {path} does not fit this config's trainer: "
                                  f"{type(exc).__name__}: {why}") from exc
        return True

    def run(self, checkpoint_dir: str | os.PathLike | None = None
            ) -> Iterator[dict[str, float]]:
        """The epoch loop (the only one: ``ablate train``, the Ray trainable and the tests run
        it): train the remaining epochs, yielding each epoch's metrics once the resumable
        checkpoint is in ``checkpoint_dir`` (when given)."""
        while not self.done:
            metrics = self.run_epoch()
            if checkpoint_dir is not None:
                self.save(checkpoint_dir)
            yield metrics


def read_trainer_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A ``trainer.pt`` read safely (weights_only) and checked to hold what
    :meth:`Trainer.state_dict` writes; otherwise a one-line CheckpointError naming the file."""
    sd = read_checkpoint(path)
    missing = [k for k in TRAINER_KEYS if not isinstance(sd, dict) or k not in sd]
    if missing:
        raise CheckpointError(f"checkpoint {os.fspath(path)} is not a trainer checkpoint "
                              f"(no {', '.join(missing[:3])})")
    return sd
