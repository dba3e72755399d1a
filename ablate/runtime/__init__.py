"""Ray: one Ray Tune job (a search or a grid) run or resumed by :func:`run_job`, with Ray
started locally or joined on a cluster, the trials logged to MLflow by the driver's
:class:`TrialLogger`, a heartbeat line, and Ray's experiment directory kept private."""

from __future__ import annotations

from ablate.runtime.cluster import init_ray, machine_resources, wait_for_cluster
from ablate.runtime.job import Job, JobFields, Options
from ablate.runtime.progress import Heartbeat
from ablate.runtime.runner import run_job, teacher_states
from ablate.runtime.storage import experiment_dir, storage_path
from ablate.runtime.trial_logger import TrialLogger, cell_dirname, trial_dirname

__all__ = [
    "Heartbeat",
    "Job",
    "JobFields",
    "Options",
    "TrialLogger",
    "cell_dirname",
    "experiment_dir",
    "init_ray",
    "machine_resources",
    "run_job",
    "storage_path",
    "teacher_states",
    "trial_dirname",
    "wait_for_cluster",
]
