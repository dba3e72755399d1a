"""``ablate train`` (one student, one MLflow run, resumable from its run directory) and
``ablate teachers train`` (train and cache a config's teachers, print their accuracy)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from ablate import names
from ablate.build import (
    build_data,
    build_trainer,
    check_resume,
    prepare_teachers,
    resolve_device,
    save_config,
)
from ablate.config import ExperimentConfig, redact
from ablate.core.accuracy import evaluate
from ablate.core.integrity import digest_path, save_verified
from ablate.core.trainer import Trainer
from ablate.report import attack_line, plot_curves, progress_line, test_line
from ablate.tracking import Tracker, browse_line


def run_train(cfg: ExperimentConfig, *, run_dir: Path, resume: bool, tracking_uri: str | None,
              command: str) -> int:
    """Train to the last epoch, checkpointing every epoch to ``run_dir`` and logging to one
    MLflow run; then test the best epoch. Returns the exit code (130 after Ctrl-C, with the
    ``command`` that continues)."""
    if resume:  # before the teachers are trained: a refused resume writes nothing
        check_resume(run_dir)
    device = resolve_device(cfg.device)
    data = build_data(cfg)
    clean, robust = prepare_teachers(cfg, data, device)
    trainer = build_trainer(cfg, data, clean, robust, device)
    resumed = resume and trainer.restore(run_dir)
    tracker = Tracker(tracking_uri)
    run_id = _open_run(tracker, cfg, run_dir, resume)
    print(f"MLflow run {run_id} in {redact(tracker.uri)}; checkpoints in {run_dir}"
          + (f" (resumed after epoch {trainer.epoch})" if resumed else ""))
    try:
        tick = time.perf_counter()
        for m in trainer.run(run_dir):
            tracker.log_metrics(run_id, m, step=int(m[names.EPOCH]))
            print(progress_line(m, cfg.optim.epochs, time.perf_counter() - tick), flush=True)
            tick = time.perf_counter()
        test = trainer.test()
        tracker.log_metrics(run_id, names.prefixed(names.TEST, test), step=cfg.optim.epochs)
        _log_artifacts(tracker, run_id, cfg, trainer)
    except KeyboardInterrupt:
        tracker.end(run_id, "KILLED")
        print(f"interrupted after epoch {trainer.epoch}; continue with: {command} --resume",
              file=sys.stderr)
        return 130
    except BaseException:
        tracker.end(run_id, "FAILED")
        raise
    tracker.end(run_id, "FINISHED")
    print(f"test (best epoch {int(test['best_epoch'])}): {test_line(test)}")
    if cfg.eval.attacks:
        print(attack_line(test, cfg.eval.attacks))
    print(browse_line(tracker, run_id, tracking_uri))
    return 0


def _open_run(tracker: Tracker, cfg: ExperimentConfig, run_dir: Path, resume: bool) -> str:
    """The run recorded in ``run_dir`` when resuming, else a new one recorded there."""
    id_file = run_dir / names.RUN_ID_FILE
    if resume and id_file.exists():
        run_id = id_file.read_text().strip()
        tracker.reopen(run_id)
        return run_id
    run_id = tracker.start(cfg.name, f"train-{cfg.digest()}", params=cfg.model_dump(mode="json"),
                           tags={names.CONFIG_HASH: cfg.digest(),
                                 names.METHOD: cfg.method.name, names.SEED: str(cfg.seed),
                                 names.KIND: names.KIND_TRAIN,
                                 names.CHECKPOINT: str(run_dir.resolve())})
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run_id)
    save_config(cfg, run_dir)
    return run_id


def _log_artifacts(tracker: Tracker, run_id: str, cfg: ExperimentConfig,
                   trainer: Trainer) -> None:
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        tracker.log_artifact(run_id, save_config(cfg, tmp))
        student = tmp / Path(names.BEST_STUDENT).name
        save_verified(trainer.best["student"], student)
        for path in (student, digest_path(student)):
            tracker.log_artifact(run_id, path, str(Path(names.BEST_STUDENT).parent))
        plot_curves(trainer.history, tmp / "curves.png", title=f"{cfg.name} ({cfg.method.name})")
        tracker.log_artifact(run_id, tmp / "curves.png", names.PLOTS)


def train_teachers(cfg: ExperimentConfig) -> None:
    """Train (or load from the cache) both teachers; print their validation accuracy."""
    device = resolve_device(cfg.device)
    data = build_data(cfg)
    clean, robust = prepare_teachers(cfg, data, device)
    val = data.val.to(device)
    eps = cfg.eval.eps if cfg.eval.eps is not None else cfg.attack.eps
    for name, model in (("clean", clean), ("robust", robust)):
        r = evaluate(model, val, eps=eps, step_size=eps / 4, steps=20)
        print(f"{name} teacher ({getattr(cfg.teachers, name).label}): val clean "
              f"{100 * r['clean_acc']:.1f}%  PGD_SAT (20 x eps/4) {100 * r['robust_acc']:.1f}%"
              f" at eps={eps:.4g}")
