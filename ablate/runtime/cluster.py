"""Ray itself: a local Ray of this machine's size or an existing cluster, and what the machine
offers. Ray is quietened on import (our callbacks print one line per trial)."""

from __future__ import annotations

import logging
import os
import socket
import time

import ray

from ablate.core import signals
from ablate.core.errors import ConfigError

# Quiet Ray: our callback prints one line per trial; Ray's tables, TensorBoard hints and
# snapshot-frequency warnings (every epoch checkpoints, on purpose) would drown it. Nor may Ray
# swap builtins.print for its progress-bar-safe print (it does on the first worker log line
# from a cluster): the callbacks hold `print` and are pickled into the experiment state.
for _key, _value in (("RAY_AIR_NEW_OUTPUT", "0"), ("RAY_TQDM_PATCH_PRINT", "0"),
                     ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")):
    os.environ.setdefault(_key, _value)


def machine_resources() -> dict[str, float]:
    """CPUs and GPUs of this machine (for a local Ray)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def local_resources() -> tuple[dict[str, float], str]:
    """What a job without ``--address`` runs on, and how to name it in an error: the Ray this
    process already started, if any (``init_ray`` leaves it alone; a program or test that
    declares resources the machine lacks, such as ``ray.init(num_gpus=4)`` on a CPU machine,
    gets Ray's scheduling of them), else this machine."""
    if ray.is_initialized():
        return ({k: float(v) for k, v in ray.cluster_resources().items()},
                "the Ray already running in this process")
    return machine_resources(), "this machine"


def init_ray(address: str | None, resources: dict[str, float]) -> dict[str, float]:
    """Start a local Ray (or join ``address``); returns the cluster's resources. A Ray this
    process already runs is used as it is."""
    if not ray.is_initialized():
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=True)
        with signals.held():  # SIGTERM to the process group: for the driver to handle
            if address:
                ray.init(address=address, **quiet)
            else:
                # "local": a new Ray of our own even when `ray start` runs one on this machine
                ray.init(address="local", num_cpus=int(resources["CPU"]),
                         num_gpus=int(resources["GPU"]), **quiet)
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def wait_for_cluster(address: str, timeout: float) -> None:
    """Give up on a cluster address that nothing answers within ``timeout`` seconds (Ray
    itself retries for minutes). ``auto`` and a local start need no probe."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise ConfigError(f"--address {address}: no Ray cluster answers there after "
                                  f"{timeout:g} s ({exc.strerror or exc}); is the head node "
                                  "up (`ray start --head`)? --connect-timeout sets the wait"
                                  ) from None
            time.sleep(1)


