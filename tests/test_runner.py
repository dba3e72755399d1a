"""Ray plumbing: error reasons, trial numbering, storage paths, the trust check on resume,
the cluster address timeout, and which trials count as ended."""

from __future__ import annotations

import os
import pickle
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ablate.cli import main
from ablate.config import ConfigError
from ablate.runner import TrialLogger, error_reason, trial_dirname, trial_number
from ablate.search_spec import load_search_spec
from ablate.storage import experiment_dir, make_private, storage_path
from ablate.tracking import Tracker
from tests.helpers import SPEC, write

TRACE = """Failure # 1 (occurred at 2026-11-22_04-03-58)
ray::ImplicitFunc.train() (pid=1, ip=192.0.2.2, actor_id=ab)
  File "/work/main/trainables/ciard.py", line 59, in train_ciard
    raise FloatingPointError(f"diverged in epoch {epoch + 1}: {exc}") from None
FloatingPointError: diverged in epoch 1: ciard loss is not finite (nan)
"""


def test_error_reason_is_the_last_exception_line() -> None:
    assert error_reason(TRACE) == ("FloatingPointError: diverged in epoch 1: ciard loss is "
                                   "not finite (nan)")
    wrapped = TRACE + "\nThe above exception was the direct cause of:\nray.exceptions." \
        "RayTaskError(FloatingPointError): ray::train() failed: boom\n"
    assert error_reason(wrapped).startswith("ray.exceptions.RayTaskError(FloatingPointError)")
    assert error_reason(None) == "unknown error"
    assert error_reason("worker died\n\n") == "worker died"


def test_trial_numbers_come_from_the_experiment_tag() -> None:
    trial = SimpleNamespace(experiment_tag="12_method.alpha=0.5", trial_id="abc123")
    assert trial_number(trial) == 12 and trial_dirname(trial) == "trial_0012_abc123"
    assert trial_number(SimpleNamespace(experiment_tag="", trial_id="x")) == 0


def test_storage_path_keeps_uris_and_makes_directories_absolute() -> None:
    assert storage_path("s3://bucket/ablate") == "s3://bucket/ablate"
    assert Path(storage_path("runs/x")).is_absolute()
    assert storage_path(None).endswith("runs/ray")


def test_experiment_dir_refuses_reuse_and_numbers_fresh_runs(tmp_path: Path) -> None:
    root = str(tmp_path)

    def ran(name: str) -> None:  # what Tuner.can_restore looks for
        (tmp_path / name).mkdir()
        (tmp_path / name / "tuner.pkl").write_bytes(b"")

    with pytest.raises(ConfigError, match="no search to resume"):
        experiment_dir(root, "s", resume=True, fresh=False)
    assert experiment_dir(root, "s", resume=False, fresh=False) == f"{root}/s"
    ran("s")
    with pytest.raises(ConfigError, match="pass --resume to continue it, or --fresh"):
        experiment_dir(root, "s", resume=False, fresh=False)
    assert experiment_dir(root, "s", resume=True, fresh=False) == f"{root}/s"
    assert experiment_dir(root, "s", resume=False, fresh=True) == f"{root}/s-2"
    ran("s-2")
    assert experiment_dir(root, "s", resume=True, fresh=False) == f"{root}/s-2"
    assert experiment_dir(root, "s", resume=False, fresh=True) == f"{root}/s-3"


def test_trial_logger_logs_each_epoch_once_across_a_resume(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}")
    parent = tracker.start("exp", "parent")
    trial = SimpleNamespace(trial_id="t1", experiment_tag="1_x", config={"a": 1})

    def logger() -> TrialLogger:
        return TrialLogger(tracker, "exp", parent, run_params=dict, run_tags=lambda c: {},
                           describe=str, epochs=3, log=lambda _: None)

    first = logger()
    first.on_trial_start(0, [], trial)
    for epoch in (0, 1):
        first.on_trial_result(0, [], trial, {"epoch": float(epoch), "val/w_acc": 0.5})
    first.close_open()
    resumed = logger()  # a new invocation replays epoch 1 from an older checkpoint
    for epoch in (1, 2):
        resumed.on_trial_result(0, [], trial, {"epoch": float(epoch), "val/w_acc": 0.6})
    run = tracker.find_run("exp", {"trial_id": "t1"})
    assert run is not None
    history = tracker.client.get_metric_history(run, "val/w_acc")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.5), (2, 0.6)]


def test_only_runs_of_trials_ray_lost_are_discarded(tmp_path: Path) -> None:
    """After a restore, a child run whose trial Ray no longer knows is deleted; the runs of
    restored trials and of trials started since the last step (Ctrl-C can land before the
    next step) are kept."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}")
    parent = tracker.start("exp", "parent")
    logger = TrialLogger(tracker, "exp", parent, run_params=dict, run_tags=lambda c: {},
                         describe=str, epochs=3, log=lambda _: None)
    trials = {tid: SimpleNamespace(trial_id=tid, experiment_tag=f"{i}_x", config={},
                                   status="RUNNING")
              for i, tid in enumerate(["restored", "lost", "started"], 1)}
    for trial in trials.values():
        logger.on_trial_start(0, [], trial)
    fresh = TrialLogger(tracker, "exp", parent, run_params=dict, run_tags=lambda c: {},
                        describe=str, epochs=3, log=lambda _: None)
    fresh.on_step_begin(0, [trials["restored"]])  # what Ray restored: "lost" is gone
    fresh.on_trial_start(0, [], trials["started"])  # started within that step
    assert fresh.discard_orphans() == ["lost"]
    kept = {r["tags"]["trial_id"] for r in tracker.children(parent)}
    assert kept == {"restored", "started"}
    fresh.close_open()  # ends the open runs without touching the deleted one


class Payload:
    """Unpickling this runs a shell command: what a planted ``tuner.pkl`` would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def planted_experiment(workdir: Path) -> tuple[Path, Path, Path]:
    """A search spec and, in its Ray storage, an experiment whose ``tuner.pkl`` runs code."""

    spec = write(workdir / "s.yaml", SPEC)
    storage = workdir / "storage"
    exp = storage / f"tiny-search-{load_search_spec(spec).digest()}"
    exp.mkdir(parents=True)
    marker = workdir / "PWNED"
    (exp / "tuner.pkl").write_bytes(pickle.dumps(Payload(marker)))
    return spec, exp, marker


@pytest.mark.parametrize("make_unsafe, needle", [
    (lambda exp: exp.chmod(0o775), "is writable by other users (mode 775)"),
    (lambda exp: (exp / "tuner.pkl").chmod(0o666), "tuner.pkl is writable by other users"),
    (lambda exp: exp.parent.chmod(0o777), "storage is writable by other users"),
    pytest.param(lambda exp: os.chown(exp / "tuner.pkl", 65534, 65534),
                 "tuner.pkl is owned by another user",
                 marks=pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")),
], ids=["group-writable-dir", "world-writable-file", "writable-storage", "foreign-owner"])
def test_resume_refuses_experiment_state_others_can_write(workdir: Path, capsys, make_unsafe,
                                                          needle: str) -> None:
    spec, exp, marker = planted_experiment(workdir)
    make_unsafe(exp)
    code = main(["search", str(spec), "--resume", "--storage", str(exp.parent)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert "unpickles" in err and not marker.exists()
    assert not (workdir / "mlflow.db").exists()


def test_new_experiment_directories_are_private(tmp_path: Path) -> None:
    path = tmp_path / "storage" / "exp"
    make_private(str(path))
    for d in (path, path.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    make_private("s3://bucket/exp")  # a URI is left to its store


def test_an_address_nothing_answers_is_refused_within_the_timeout(workdir: Path,
                                                                  capsys) -> None:

    spec = write(workdir / "s.yaml", SPEC)
    start = time.monotonic()
    code = main(["search", str(spec), "--address", "127.0.0.1:1", "--connect-timeout", "1"])
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - start < 10
    assert code == 2 and len(err.splitlines()) == 1 and "--address 127.0.0.1:1" in err, err
    assert sorted(p.name for p in workdir.iterdir()) == ["s.yaml"]


def test_trial_logger_counts_only_trials_it_saw_end() -> None:
    """Ray marks the trials it stops on Ctrl-C TERMINATED; they must not count as ended."""
    logger = TrialLogger.__new__(TrialLogger)
    logger.known, logger.done, logger.stepped = set(), set(), False
    restored = [SimpleNamespace(trial_id="a", status="TERMINATED"),
                SimpleNamespace(trial_id="b", status="PAUSED")]
    logger.on_step_begin(0, restored)
    assert logger.done == {"a"} and logger.known == {"a", "b"}
    stopped = SimpleNamespace(num_terminated=3, num_errors=0)  # b and c stopped by Ctrl-C
    assert logger.unfinished(stopped, expected=3) == 2
    fresh = TrialLogger.__new__(TrialLogger)
    fresh.known, fresh.done, fresh.stepped = set(), set(), False
    assert fresh.unfinished(stopped, expected=3) == 0  # nothing ran: all had ended before


def test_a_restored_tuner_logs_through_this_invocations_callbacks(tmp_path: Path) -> None:
    """The one use of Ray internals: fails loudly if Ray moves the restored run config."""
    from ray import tune

    from ablate.runner import replace_callbacks

    def trainable(config: dict) -> None:
        return None

    first, second = tune.Callback(), tune.Callback()
    tune.Tuner(trainable, run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path),
                                                    callbacks=[first]))
    tuner = replace_callbacks(tune.Tuner.restore(str(tmp_path / "exp"), trainable=trainable),
                              [second])
    assert tuner._local_tuner.get_run_config().callbacks == [second]
