"""``ablate ui`` and the ``browse:`` lines: the MLflow UI, opened on the results.

MLflow 3 opens an experiment on its GenAI overview and its runs table on a collapsed parent row
with no metric column. Every URL printed here opens the model-training view
(``workflowType=machine_learning``) on a *view* of ablate's: the state MLflow's Share button
stores as the experiment tag ``mlflow.sharedViewState.KEY`` and opens with
``viewStateShareKey=KEY``. A view lists the trials (or cells) as rows, sorted by the objective,
with the percent accuracies (:data:`ablate.names.TABLE_METRICS`) and the sampled parameters as
columns. Each job writes one for its own trials (KEY = its parent run id) when it starts, so the
URL works while it runs, and merges its columns into the experiment's view of every trial
(KEY = :data:`VIEW_ALL`), which ``ablate ui`` opens.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from ablate import names
from ablate.config import redact
from ablate.core.errors import ConfigError
from ablate.tracking.server import mlflow_server
from ablate.tracking.tracker import Tracker

DEFAULT_PORT = 5000
START_TIMEOUT_S = 120.0  # the MLflow server migrates a new store before it answers


def ui_base(tracking_uri: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> str:
    """Where the UI of the store answers: the tracking server itself, else ``ablate ui``."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # a browser needs an address
    return f"http://{shown}:{port}"


SHARED_VIEW = "mlflow.sharedViewState."  # MLflow's: + KEY, the view the Share button stores
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow's: the view an experiment opens in
MODEL_TRAINING = "custom_model_development"  # ... the runs table, not the GenAI overview
VIEW_ALL = "ablate"  # the view of every trial and cell of an experiment
ML_VIEW = "workflowType=machine_learning"


def runs_url(base: str, experiment_id: str, view: str | None = None) -> str:
    """The runs table of the experiment, on ablate's ``view`` (a parent run id or
    :data:`VIEW_ALL`) when given."""
    key = f"&viewStateShareKey={view}" if view else ""
    return f"{base}/#/experiments/{experiment_id}/runs?{ML_VIEW}{key}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's charts, the percent validation curves first (see :data:`names.PERCENT`)."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics?{ML_VIEW}"


def run_link(tracker: Tracker, run_id: str) -> str:
    """The URL of a run's charts in the UI of ``tracker``'s store."""
    return run_url(ui_base(tracker.uri), tracker.run_info(run_id)["experiment_id"], run_id)


def view_state(params: list[str], parent: str | None = None) -> dict[str, Any]:
    """MLflow's shared view state: the trials (of ``parent`` only, when given) sorted by the
    objective, the percent accuracies and the ``params`` as columns."""
    where = f"tags.`{names.KIND}` = '{names.KIND_TRIAL}'"
    if parent is not None:
        where += f" and tags.`{names.PARENT_RUN}` = '{parent}'"
    columns = ([f"metrics.`{m}`" for m in names.TABLE_METRICS]
               + [f"params.`{p}`" for p in params])
    return {"searchFilter": where, "orderByKey": f"metrics.`{names.PCT_OBJECTIVE}`",
            "orderByAsc": False, "startTime": "ALL", "lifecycleFilter": "Active",
            "datasetsFilter": [], "modelVersionFilter": "All Runs",
            "selectedColumns": columns,
            # Wide enough for the header: MLflow's default width cuts `pct/val_robust`.
            "columnWidths": {c: 30 + 8 * len(c.split("`")[1]) for c in columns},
            "runListHidden": False, "viewMaximized": False}


def publish_views(tracker: Tracker, parent: str, params: list[str]) -> None:
    """Write the view of the job whose parent run is ``parent`` (its trials, ``params`` as
    columns) and merge ``params`` into the experiment's view of every trial."""
    experiment = tracker.run_info(parent)["experiment_id"]
    tags = tracker.experiment_tags(experiment)
    try:
        known = json.loads(tags.get(SHARED_VIEW + VIEW_ALL, "{}")).get("selectedColumns", [])
    except (ValueError, AttributeError):  # edited by hand: rebuilt
        known = []
    merged = [c.split("`")[1] for c in known if c.startswith("params.`")]
    merged += [p for p in params if p not in merged]
    fresh = {SHARED_VIEW + parent: json.dumps(view_state(params, parent)),
             SHARED_VIEW + VIEW_ALL: json.dumps(view_state(merged))}
    if EXPERIMENT_KIND not in tags:  # a kind the user chose stays
        fresh[EXPERIMENT_KIND] = MODEL_TRAINING
    tracker.set_experiment_tags(experiment, fresh)


def browse_line(tracker: Tracker, run_id: str, tracking_uri: str | None) -> str:
    """The last line of a command: how to open its trials (a job's parent run) or its charts
    (a single run)."""
    experiment = tracker.run_info(run_id)["experiment_id"]
    base = ui_base(tracker.uri)
    url = (runs_url(base, experiment, run_id)
           if SHARED_VIEW + run_id in tracker.experiment_tags(experiment)
           else run_url(base, experiment, run_id))
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
          verbose: bool = False, log: Callable[[str], None] = print) -> int:
    """Serve the MLflow UI from this process (:mod:`ablate.tracking.server`), print the URL of
    the runs table once it answers; serve until Ctrl-C. Returns the exit code."""
    if tracking_uri.startswith(("http://", "https://")):
        raise ConfigError(f"--tracking-uri {redact(tracking_uri)}: a tracking server is its "
                          "own UI; open it in a browser")
    tracker = Tracker(tracking_uri)
    experiment_id = _experiment(tracker, experiment) if tracker.exists() else None
    check_port(host, port)
    server = mlflow_server(tracking_uri, host=host, port=port, verbose=verbose)
    base = ui_base("", host, port)
    view = (VIEW_ALL if experiment_id and SHARED_VIEW + VIEW_ALL
            in tracker.experiment_tags(experiment_id) else None)
    url = runs_url(base, experiment_id, view) if experiment_id else base
    announce = threading.Thread(target=_announce, daemon=True,
                                args=(server, f"{base}/health", url, tracking_uri, log))
    announce.start()
    try:
        server.run()  # uvicorn's signal handling: Ctrl-C shuts down, then is raised again
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 1


def _announce(server: Any, health: str, url: str, tracking_uri: str,
              log: Callable[[str], None]) -> None:
    """Print the URL once the server answers (a browser opened earlier gets an error)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(health):
        if server.should_exit or time.monotonic() > deadline:
            if not server.should_exit:
                log(f"ablate: the MLflow UI did not answer on {health} within "
                    f"{START_TIMEOUT_S:g} s")
                server.should_exit = True
            return
        time.sleep(0.2)
    log(f"MLflow UI for {redact(tracking_uri)}: {url}  (Ctrl-C stops it)")
    sys.stdout.flush()
