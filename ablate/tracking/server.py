"""The MLflow UI served from this process: MLflow's own FastAPI app under one uvicorn server.

``mlflow ui`` starts a CLI process, a uvicorn process with 4 workers by default, and with job
execution on (MLflow's default) a job runner and 7 huey consumers: about 11 processes and
2 GB here, for features (scorers, issue detection) this use never calls. Here: one process,
about 250 MB, job execution off, and MLflow's and uvicorn's log lines and warnings out of the
terminal unless ``verbose``. What ``mlflow server`` sets up before it starts uvicorn
(``mlflow.server._run_server``) is set up here the same way: the store URIs in the environment
the app reads, the store migrated, artifacts served from beside a SQLite store.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from typing import Any

from ablate.config import sqlite_file

JOB_EXECUTION = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def _environment(uri: str) -> dict[str, str]:
    """The variables ``mlflow server`` passes its workers, for ``uri`` with artifacts served."""
    from mlflow.environment_variables import _MLFLOW_SERVER_BOOT_ID, _MLFLOW_SGI_NAME
    from mlflow.server import (
        ARTIFACT_ROOT_ENV_VAR,
        ARTIFACTS_DESTINATION_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        REGISTRY_STORE_URI_ENV_VAR,
        SERVE_ARTIFACTS_ENV_VAR,
    )

    db = sqlite_file(uri)
    # New experiments made in the UI keep artifacts beside the store, as ablate's own do.
    destination = str(db.parent / "mlartifacts") if db is not None else "./mlartifacts"
    return {BACKEND_STORE_URI_ENV_VAR: uri, REGISTRY_STORE_URI_ENV_VAR: uri,
            ARTIFACT_ROOT_ENV_VAR: "mlflow-artifacts:/", SERVE_ARTIFACTS_ENV_VAR: "true",
            ARTIFACTS_DESTINATION_ENV_VAR: destination, JOB_EXECUTION: "false",
            _MLFLOW_SGI_NAME.name: "uvicorn", _MLFLOW_SERVER_BOOT_ID.name: uuid.uuid4().hex}


def _quiet(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.ERROR
    for name in ("mlflow", "alembic", "uvicorn", "uvicorn.error", "uvicorn.access", "huey"):
        logging.getLogger(name).setLevel(level)
    if not verbose:
        warnings.filterwarnings("ignore")  # MLflow's deprecation warnings at import time


def mlflow_server(uri: str, *, host: str, port: int, verbose: bool = False) -> Any:
    """A ``uvicorn.Server`` of MLflow's app for the store ``uri`` (``.run()`` serves until
    Ctrl-C, with uvicorn's own signal handling)."""
    _quiet(verbose)
    os.environ.update(_environment(uri))
    import uvicorn
    from mlflow.server.handlers import initialize_backend_stores

    initialize_backend_stores(uri, uri, "mlflow-artifacts:/")  # migrates an older store
    from mlflow.server.fastapi_app import app

    config = uvicorn.Config(app, host=host, port=port, workers=1, access_log=verbose,
                            log_level="info" if verbose else "error", log_config=None)
    return uvicorn.Server(config)

