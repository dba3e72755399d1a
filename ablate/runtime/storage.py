"""Where Ray keeps a search's or grid's experiment state, and whether it may be restored.

Ray restores an experiment by unpickling it, so a resumable directory is code: it is created
private and refused on ``--resume`` when another user owns or can write any part of it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ray import tune

from ablate.core.errors import ConfigError


def storage_path(storage: str | None) -> str:
    """Ray's experiment storage: a local directory (made absolute) or a URI (s3://, gs://)."""
    if storage and "://" in storage:
        return storage
    return str(Path(storage or "runs/ray").resolve())


def experiment_dir(storage: str | None, name: str, *, resume: bool, fresh: bool) -> str:
    """Where the Ray experiment lives: ``STORAGE/NAME``, or ``NAME-2``, ``NAME-3``... for
    ``--fresh`` runs. ``--resume`` takes the newest; a plain run never reuses an old one."""
    root = storage_path(storage).rstrip("/")

    def nth(i: int) -> str:
        return f"{root}/{name}" + (f"-{i}" if i > 1 else "")

    runs = 0
    while tune.Tuner.can_restore(nth(runs + 1)):
        runs += 1
    if resume:
        if not runs:
            raise ConfigError(f"--resume: no search to resume at {nth(1)}")
        if "://" not in root:
            check_private(Path(root), Path(nth(runs)))
        return nth(runs)
    if runs and not fresh:
        raise ConfigError(f"{nth(runs)} holds an earlier run of this spec: pass --resume to "
                          "continue it, or --fresh to start another")
    return nth(runs + 1)


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
