"""``ablate ui`` and the ``browse:`` lines: the MLflow UI, opened on the results.

MLflow 3 opens an experiment on its GenAI overview; the runs table of model training is the page
with ``workflowType=machine_learning``, and every URL printed here points there (or at a run).
"""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from ablate.config import redact
from ablate.core.errors import ConfigError
from ablate.tracking.tracker import Tracker, ui_command

DEFAULT_PORT = 5000
START_TIMEOUT_S = 120.0  # the MLflow server migrates a new store before it answers


def ui_base(tracking_uri: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> str:
    """Where the UI of the store answers: the tracking server itself, else ``ablate ui``."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # a browser needs an address
    return f"http://{shown}:{port}"


def runs_url(base: str, experiment_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def browse_line(tracker: Tracker, run_id: str, tracking_uri: str | None) -> str:
    """The last line of a command: how to open its (parent) run."""
    url = run_url(ui_base(tracker.uri), tracker.run_info(run_id)["experiment_id"], run_id)
    if tracker.uri.startswith(("http://", "https://")):
        return f"browse: {url}"
    flag = f" --tracking-uri {redact(tracking_uri)}" if tracking_uri else ""
    return f"browse: ablate ui{flag}, then {url}"


def check_port(host: str, port: int) -> None:
    """Refuse a port another server holds (uvicorn would print its error and exit 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc})"
            raise ConfigError(f"--port {port}: {host}:{port} {why}; choose another port with "
                              "--port") from None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own URL)
            return response.status == 200
    except OSError:
        return False


def _experiment(tracker: Tracker, name: str | None) -> str | None:
    if name is None:
        return tracker.newest_experiment()
    found = tracker.experiment_by_name(name)
    if found is None:
        raise ConfigError(f"--experiment {name!r}: no such experiment in {redact(tracker.uri)}")
    return found


def serve(tracking_uri: str, *, host: str, port: int, experiment: str | None = None,
          log: Callable[[str], None] = print) -> int:
    """Start the MLflow UI, wait until it answers, print the runs table's URL; run until
    Ctrl-C. Returns the exit code."""
    tracker = Tracker(tracking_uri)
    experiment_id = _experiment(tracker, experiment) if tracker.exists() else None
    check_port(host, port)
    proc = subprocess.Popen(ui_command(tracking_uri, port=port, host=host),
                            stdout=subprocess.DEVNULL, stderr=sys.stderr)
    base = ui_base("", host, port)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(f"{base}/health"):
            if proc.poll() is not None:
                log(f"ablate: the MLflow UI exited with code {proc.returncode} before it "
                    "answered (see its messages above)")
                return proc.returncode or 1
            if time.monotonic() > deadline:
                proc.terminate()
                log(f"ablate: the MLflow UI did not answer on {base} within "
                    f"{START_TIMEOUT_S:g} s")
                return 1
            time.sleep(0.5)
        url = runs_url(base, experiment_id) if experiment_id else base
        log(f"MLflow UI for {redact(tracking_uri)}: {url}  (Ctrl-C stops it)")
        sys.stdout.flush()
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
