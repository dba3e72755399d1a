"""Where Ray keeps a search's or grid's experiment state, and whether it may be restored.

Ray restores an experiment by unpickling it, so a resumable directory is code: it is created
private and refused on ``--resume`` when another user owns or can write any part of it.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from ablate.core.errors import ConfigError


def storage_path(storage: str | None) -> str:
    """Ray's experiment storage: a local directory (made absolute) or a URI (s3://, gs://)."""
    if storage and "://" in storage:
        return storage
    return str(Path(storage or "runs/ray").resolve())


LOCK_FILE = ".ablate.lock"  # held (flock) by the one job running in an experiment directory


@dataclass
class Claim:
    """An experiment directory and the lock this job holds on it (None for a URI, which
    cannot be locked). The kernel drops the lock when the process dies, even by SIGKILL, so
    a crashed job never blocks the next one; :meth:`release` (or leaving the ``with``) ends it
    earlier."""

    path: str
    fd: int | None = None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.release()


def experiment_dir(storage: str | None, name: str, *, resume: bool, fresh: bool) -> Claim:
    """Claim where the Ray experiment lives: ``STORAGE/NAME``, or ``NAME-2``, ``NAME-3``...
    for ``--fresh`` runs. ``--resume`` takes the newest; a plain run never reuses an old one.

    One job per directory: the claim is an exclusive ``flock`` on ``LOCK_FILE`` in it, taken
    before the directory is judged (so two jobs started together cannot both see it unused)
    and held until the job ends. A directory another live job holds is refused at once, for a
    plain run and ``--resume`` alike; ``--fresh`` moves on to the next number."""
    root = storage_path(storage).rstrip("/")

    def nth(i: int) -> str:
        return f"{root}/{name}" + (f"-{i}" if i > 1 else "")

    runs = 0
    while tune.Tuner.can_restore(nth(runs + 1)):
        runs += 1
    if "://" in root:  # remote storage: no lock to take, the old existence checks only
        return Claim(_choose(nth, runs, resume=resume, fresh=fresh))
    if resume:
        claim = _lock(_choose(nth, runs, resume=True, fresh=False), "before resuming it")
        check_private(Path(root), Path(claim.path))
        return claim
    if not fresh:
        claim = _lock(_choose(nth, runs, resume=False, fresh=False),
                      "before running it again, or pass --fresh to start another")
        if tune.Tuner.can_restore(claim.path):  # its job ended between the count and the lock
            claim.release()
            raise _earlier_run(claim.path)
        return claim
    i = runs + 1
    while True:  # --fresh: the first number no live job holds and no run has used
        claim = _lock(nth(i), None)
        if claim is not None and not tune.Tuner.can_restore(claim.path):
            return claim
        if claim is not None:
            claim.release()
        i += 1


def _choose(nth: Callable[[int], str], runs: int, *, resume: bool, fresh: bool) -> str:
    if resume:
        if not runs:
            raise ConfigError(f"--resume: no search to resume at {nth(1)}")
        return nth(runs)
    if runs and not fresh:
        raise _earlier_run(nth(runs))
    return nth(runs + 1)


def _earlier_run(path: str) -> ConfigError:
    return ConfigError(f"{path} holds an earlier run of this spec: pass --resume to continue "
                       "it, or --fresh to start another")


def _lock(path: str, busy: str | None) -> Claim | None:
    """Lock ``path`` (created private) for this job. Held by another job: a ConfigError naming
    it and the holder's pid that ends with ``busy``, or None when ``busy`` is None (the caller
    tries another directory)."""
    make_private(path)
    # os.open's descriptor is not inherited by the Ray processes this job starts, so the lock
    # ends with this process.
    fd = os.open(Path(path) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        if busy is None:
            return None
        raise ConfigError(f"{path} is in use: another job (pid {holder}) is running this "
                          f"experiment; wait for it to end {busy}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message of a job refused here
    return Claim(path, fd)


def _holder(fd: int) -> str:
    """The pid in a held lock file; the holder writes it just after locking, so an empty file
    is read again for a moment before the pid is called unknown."""
    for _ in range(50):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "unknown"


def make_private(path: str) -> None:
    """Create a local experiment directory (and the storage root) readable by its owner only."""
    if "://" not in path:
        Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        Path(path).mkdir(mode=0o700, exist_ok=True)


def check_private(root: Path, experiment: Path) -> None:
    """Ray restores an experiment by unpickling its state (``tuner.pkl``, trial and searcher
    state), so whoever can write those files can run code in this process. Like ssh with its
    keys, refuse a storage root or experiment whose directories or files another user owns or
    can write."""
    me = os.geteuid()
    for path in (root, experiment, *sorted(experiment.rglob("*"))):
        info = path.lstat()
        why = ("is owned by another user" if info.st_uid != me else
               f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
               if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) else "")
        if why:
            raise ConfigError(
                f"--resume: {path} {why}; Ray unpickles the experiment state in {experiment} "
                "to restore it, which runs code, so it must be private to you (if you trust "
                f"its contents: chown -R and chmod -R go-w {experiment})")
