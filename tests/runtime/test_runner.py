"""Ray plumbing: storage paths, the trust check on resume, the cluster address timeout, and the
callbacks of a restored Tuner."""

from __future__ import annotations

import os
import pickle
import stat
import time
from pathlib import Path

import pytest

from ablate.cli import main
from ablate.config import load_search_spec
from ablate.core.errors import ConfigError
from ablate.runtime import experiment_dir, storage_path
from ablate.runtime.storage import make_private
from tests.helpers import SPEC, write


def test_storage_path_keeps_uris_and_makes_directories_absolute() -> None:
    assert storage_path("s3://bucket/ablate") == "s3://bucket/ablate"
    assert Path(storage_path("runs/x")).is_absolute()
    assert storage_path(None).endswith("runs/ray")


def test_experiment_dir_refuses_reuse_and_numbers_fresh_runs(tmp_path: Path) -> None:
    root = str(tmp_path)

    def ran(name: str) -> None:  # what Tuner.can_restore looks for
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "tuner.pkl").write_bytes(b"")

    def claimed(**how: bool) -> str:
        with experiment_dir(root, "s", **how) as path:
            return path

    with pytest.raises(ConfigError, match="no search to resume"):
        experiment_dir(root, "s", resume=True, fresh=False)
    assert claimed(resume=False, fresh=False) == f"{root}/s"
    ran("s")
    with pytest.raises(ConfigError, match="pass --resume to continue it, or --fresh"):
        experiment_dir(root, "s", resume=False, fresh=False)
    assert claimed(resume=True, fresh=False) == f"{root}/s"
    assert claimed(resume=False, fresh=True) == f"{root}/s-2"
    ran("s-2")
    assert claimed(resume=True, fresh=False) == f"{root}/s-2"
    assert claimed(resume=False, fresh=True) == f"{root}/s-3"


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


def test_a_restored_tuner_logs_through_this_invocations_callbacks(tmp_path: Path) -> None:
    """The one use of Ray internals: fails loudly if Ray moves the restored run config."""
    from ray import tune

    from ablate.runtime.runner import replace_callbacks

    def trainable(config: dict) -> None:
        return None

    first, second = tune.Callback(), tune.Callback()
    tune.Tuner(trainable, run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path),
                                                    callbacks=[first]))
    tuner = replace_callbacks(tune.Tuner.restore(str(tmp_path / "exp"), trainable=trainable),
                              [second])
    assert tuner._local_tuner.get_run_config().callbacks == [second]
