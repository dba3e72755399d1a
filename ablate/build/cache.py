"""Where the files a config names are kept: the teacher cache (trained teachers by config
hash, RobustBench checkpoints in its model_dir layout). Paths only: nothing is read here."""

from __future__ import annotations

import os
from pathlib import Path

from ablate.config import ExperimentConfig, TeacherConfig, config_hash


def cache_dir() -> Path:
    """Where trained teachers are cached: ``$ABLATE_CACHE`` if set, else
    ``$XDG_CACHE_HOME/ablate`` (an absolute ``XDG_CACHE_HOME`` only, as the XDG spec asks),
    else ``~/.cache/ablate``. The same for every working directory, so a teacher trained once
    is found again from anywhere."""
    own = os.environ.get("ABLATE_CACHE")
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "ablate"
    return Path.home() / ".cache" / "ablate"


def zoo_key(spec: TeacherConfig) -> tuple[str, str, str]:
    """(name, dataset, threat model) of a RobustBench teacher; the dataset is resolved by the
    experiment config (ExperimentConfig fills it in from data.name)."""
    assert spec.robustbench is not None and spec.dataset is not None, spec
    return spec.robustbench, spec.dataset, spec.threat_model


def zoo_dir(spec: TeacherConfig) -> Path:
    """RobustBench's model_dir for the teacher: its own, else the teacher cache's."""
    return Path(spec.model_dir).expanduser() if spec.model_dir else cache_dir() / "robustbench"


def teacher_cache_path(role: str, spec: TeacherConfig, cfg: ExperimentConfig) -> Path:
    """Cache file of a trained teacher. Every part of the name is safe as a path component:
    the dataset name is a Literal, the arch a registered model name, the key a hex hash."""
    # The student's training subset is not the teacher's: all presets on a dataset share it.
    data = cfg.data.model_dump(mode="json", exclude={"root", "download", "train_subset"})
    key = config_hash({"teacher": spec.model_dump(mode="json"), "data": data})
    return cache_dir() / "teachers" / f"{cfg.data.name}-{role}-{spec.arch}-{key}.pt"


