"""One job per experiment directory: the claim :func:`experiment_dir` takes is atomic between
real processes started together, lasts as long as its job, and dies with it (even SIGKILL)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ablate.cli import main
from ablate.config import load_search_spec
from ablate.core.errors import ConfigError
from ablate.runtime import experiment_dir
from tests.helpers import SPEC, write

# fork: the children start at once with ablate already imported (a spawned child would spend
# seconds importing Ray, and the race would not be a race).
CTX = multiprocessing.get_context("fork")


def _claim(root: str, how: dict[str, bool], go: Any, out: Any, hold: Any) -> None:
    """A job's start: wait for the others, claim, report, hold the claim until told."""
    go.wait(timeout=30)
    try:
        claim = experiment_dir(root, "s", **how)
    except Exception as exc:  # noqa: BLE001 - reported to the test, which checks the type
        out.put(("refused", f"{type(exc).__name__}: {exc}"))
        return
    out.put(("claimed", claim.path))
    hold.wait(timeout=60)
    claim.release()


@contextmanager
def _race(root: str, how: dict[str, bool], n: int = 2) -> Iterator[list[tuple[str, str]]]:
    go, hold, out = CTX.Barrier(n), CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_claim, args=(root, how, go, out, hold)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield sorted(out.get(timeout=60) for _ in procs)
    finally:
        hold.set()
        for p in procs:
            p.join(timeout=30)


def _ran(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for


def test_two_identical_jobs_started_together_get_one_directory(tmp_path: Path) -> None:
    with _race(str(tmp_path), {"resume": False, "fresh": False}) as results:
        (won, path), (lost, why) = results
        assert (won, lost) == ("claimed", "refused"), results
        assert path == f"{tmp_path}/s"
        assert why.startswith("ConfigError: ") and f"{tmp_path}/s is in use" in why
        assert "another job (pid " in why and "unknown" not in why


def test_two_fresh_jobs_started_together_get_a_directory_each(tmp_path: Path) -> None:
    _ran(tmp_path / "s")
    with _race(str(tmp_path), {"resume": False, "fresh": True}, n=3) as results:
        assert [r[0] for r in results] == ["claimed"] * 3
        assert sorted(r[1] for r in results) == [f"{tmp_path}/s-{i}" for i in (2, 3, 4)]


def _hold_until_killed(root: str, out: Any) -> None:
    experiment_dir(root, "s", resume=True, fresh=False)  # never released: only its death ends it
    out.put("claimed")
    time.sleep(60)


def test_a_resume_is_refused_while_held_and_the_holders_death_frees_it(tmp_path: Path) -> None:
    _ran(tmp_path / "s")
    out = CTX.Queue()
    holder = CTX.Process(target=_hold_until_killed, args=(str(tmp_path), out))
    holder.start()
    try:
        assert out.get(timeout=60) == "claimed"
        with pytest.raises(ConfigError, match=rf"pid {holder.pid}\).*before resuming"):
            experiment_dir(str(tmp_path), "s", resume=True, fresh=False)
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in it, the kernel drops its lock
        holder.join(timeout=30)
    with experiment_dir(str(tmp_path), "s", resume=True, fresh=False) as path:
        assert path == f"{tmp_path}/s"


def test_search_refuses_while_another_job_holds_its_directory(workdir: Path, capsys) -> None:
    spec = write(workdir / "s.yaml", SPEC)
    name = f"tiny-search-{load_search_spec(spec).digest()}"
    hold, out = CTX.Event(), CTX.Queue()
    holder = CTX.Process(target=_hold_named, args=(str(workdir / "runs" / "ray"), name, out,
                                                   hold))
    holder.start()
    try:
        assert out.get(timeout=60) == "claimed"
        code = main(["search", str(spec)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"{name} is in use: another job (pid {holder.pid})" in err
        assert not (workdir / "mlflow.db").exists()  # nothing started
    finally:
        hold.set()
        holder.join(timeout=30)


def _hold_named(root: str, name: str, out: Any, hold: Any) -> None:
    with experiment_dir(root, name, resume=False, fresh=False):
        out.put("claimed")
        hold.wait(timeout=60)
