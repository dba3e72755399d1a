"""From a checked config to live objects. :func:`check_inputs` checks, in one pass down the
config, the machine and every file the config names (dataset, teacher checkpoints, cached
teachers) before anything starts; the builders then assume a checked config: the device, the
data, the networks, the teachers (loaded, trained and cached, or from the RobustBench zoo) and
the :class:`~ablate.core.trainer.Trainer`."""

from __future__ import annotations

from ablate.build.cache import cache_dir, teacher_cache_path
from ablate.build.checks import check_inputs, check_resume, pending_downloads
from ablate.build.networks import build_net, build_spec
from ablate.build.teachers import prepare_teacher, prepare_teachers
from ablate.build.trainer import (
    build_data,
    build_trainer,
    resolve_device,
    save_config,
)

__all__ = [
    "build_data",
    "build_net",
    "build_spec",
    "build_trainer",
    "cache_dir",
    "check_inputs",
    "check_resume",
    "pending_downloads",
    "prepare_teacher",
    "prepare_teachers",
    "resolve_device",
    "save_config",
    "teacher_cache_path",
]
