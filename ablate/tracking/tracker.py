"""MLflow logging. With :mod:`ablate.tracking.server` (the UI's server), the only module that
imports mlflow.

Default store: a SQLite file ``mlflow.db`` in the working directory, artifacts beside it in
``mlartifacts/``. All writes go through an explicit run id (no global active run), so one
writer process can log many runs (parent + children) without mixing them up.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablate import names
from ablate.config import default_uri, redact, sqlite_file, store_exists
from ablate.core.errors import ConfigError
from ablate.tracking.guard import Guarded, StoreBroken, broken_line, fault

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr to errors
# A server store prints "View run ... at:" for every run it ends: the trials' are ablate's to say.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as their string form."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _open_client(uri: str, where: str) -> MlflowClient:
    """``MlflowClient(uri)``; a SQLite store creates and migrates its schema here, which a
    full disk or a damaged file fails."""
    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as exc:
        kind = fault(exc)
        if kind in ("full", "malformed"):
            raise StoreBroken(broken_line(where, kind, exc)) from None
        raise


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                               check=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """Thin wrapper over ``MlflowClient`` for one tracking store."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or default_uri()
        self._client: MlflowClient | None = None
        self._opening = threading.Lock()

    @property
    def client(self) -> MlflowClient:
        # Created on first use: opening a SQLite store creates the file, which a command that
        # stops on bad input must not leave behind. Guarded: a store's faults as one line each.
        with self._opening:  # one client, also while open_in_background runs
            if self._client is None:
                where = str(self.sqlite_path or redact(self.uri))
                with self._store_lock():  # creating the client creates and migrates the schema
                    self._client = Guarded(_open_client(self.uri, where), where)
        return self._client  # type: ignore[return-value]  # MlflowClient's methods, guarded

    def check(self) -> None:
        """Open the store and read it once: a server that does not answer, a full disk or a
        damaged database stops a job here, before teachers train or Ray starts."""
        self.client.search_experiments(max_results=1)

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks, which hold this
        # The client is opened again where it is unpickled (a fresh wait, this process's say)
        return {k: v for k, v in self.__dict__.items() if k not in ("_opening", "_client")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _opening=threading.Lock(), _client=None)

    def open_in_background(self) -> None:
        """Open the store (a new SQLite store: ~2 s of schema migrations) in a thread while
        the caller does other work, e.g. starts Ray. The first use of :attr:`client` waits
        for it; if it failed, that use opens the store again and raises."""
        def open_store() -> None:
            with contextlib.suppress(Exception):
                _ = self.client

        threading.Thread(target=open_store, name="mlflow-open", daemon=True).start()

    @contextlib.contextmanager
    def _store_lock(self) -> Iterator[None]:
        """Serialise creating a local SQLite store across processes: two commands creating
        ``mlflow.db`` at once race in alembic's migration and one of them loses its run."""
        if self.sqlite_path is None:
            yield
            return
        with open(f"{self.sqlite_path}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a local SQLite store (None for any other store)."""
        return sqlite_file(self.uri)

    def exists(self) -> bool:
        """Whether the store is there (a SQLite file that was never written is not)."""
        return store_exists(self.uri)

    def _artifact_root(self, name: str) -> str | None:
        # Keep artifacts next to a local SQLite store rather than in whatever cwd MLflow picks.
        db = self.sqlite_path
        return None if db is None else (db.parent / "mlartifacts" / name).resolve().as_uri()

    def experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name,
                                                 artifact_location=self._artifact_root(name))
        except MlflowException:  # another process created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        return dict(self.client.get_experiment(experiment_id).tags)

    def set_experiment_tags(self, experiment_id: str, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_experiment_tag(experiment_id, k, v)

    def start(self, experiment: str, run_name: str, *, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, str] | None = None, parent_run_id: str | None = None) -> str:
        all_tags = {names.GIT_COMMIT: git_commit(), **(tags or {})}
        if parent_run_id:
            all_tags[names.PARENT_RUN] = parent_run_id
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name,
                                     tags=all_tags)
        run_id = run.info.run_id
        if params:
            self.log_params(run_id, params)
        return run_id

    def reopen(self, run_id: str) -> str:
        """Mark a stopped run as running again (a resumed training continues the same run);
        returns the status it had, which a resume that fails on bad input puts back."""
        before = self.client.get_run(run_id).info.status
        self.client.update_run(run_id, status="RUNNING")
        return before

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def delete(self, run_id: str) -> None:
        """Soft-delete a run (hidden from the UI and from searches; ``mlflow gc`` purges it)."""
        self.client.delete_run(run_id)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        # None is an unset option, not a value: logged, it only adds empty-looking columns.
        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items() if v is not None]
        for i in range(0, len(flat), 100):
            self.client.log_batch(run_id, params=flat[i:i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        """Log at ``step``, with the percent copy (:data:`names.PERCENT`) of each accuracy the
        runs table shows, first in the batch."""
        ts = mlflow.utils.time.get_current_time_millis()
        batch = [Metric(k, float(v), ts, step) for k, v in with_percent(metrics).items()]
        for i in range(0, len(batch), 500):
            self.client.log_batch(run_id, metrics=batch[i:i + 500])

    def log_summary(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        """Log metrics that are new or changed only: a summary written again by a resumed
        job (or a second ``ablate report``) adds no duplicate rows to the run."""
        logged = self.client.get_run(run_id).data.metrics
        fresh = {k: v for k, v in metrics.items()
                 if k not in logged or not _same(logged[k], float(v))}
        if fresh:
            self.log_metrics(run_id, fresh, step)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def delete_tag(self, run_id: str, key: str) -> None:
        with contextlib.suppress(MlflowException):  # not set: nothing to delete
            self.client.delete_tag(run_id, key)

    def find_run(self, experiment: str, tags: Mapping[str, str]) -> str | None:
        """The newest run of the experiment carrying all the given tags, if any."""
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([exp.experiment_id], filter_string=query,
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def last_step(self, run_id: str, key: str) -> int:
        """The highest step logged for ``key`` in the run (-1 when none)."""
        return max((m.step for m in self.client.get_metric_history(run_id, key)), default=-1)

    def children(self, parent_run_id: str) -> list[dict[str, Any]]:
        """Child runs of a parent as plain dicts: run_id, status, tags, metrics (latest), params,
        start_time and end_time (ms since the epoch; end None while running)."""
        parent = self.client.get_run(parent_run_id)
        runs = self.client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{names.PARENT_RUN}` = '{parent_run_id}'", max_results=10000)
        return [{"run_id": r.info.run_id, "status": r.info.status, "tags": dict(r.data.tags),
                 "metrics": dict(r.data.metrics), "params": dict(r.data.params),
                 "start_time": r.info.start_time, "end_time": r.info.end_time} for r in runs]

    def run_info(self, run_id: str) -> dict[str, Any]:
        """A run as a plain dict (run_id, experiment name, status, tags, params)."""
        run = self.client.get_run(run_id)
        exp = self.client.get_experiment(run.info.experiment_id)
        return {"run_id": run_id, "experiment": exp.name, "experiment_id": exp.experiment_id,
                "status": run.info.status,
                "tags": dict(run.data.tags), "params": dict(run.data.params)}

    def run_info_or_none(self, run_id: str) -> dict[str, Any] | None:
        """:meth:`run_info`, or None when the store holds no run of that id (or the text is no
        run id at all)."""
        try:
            return self.run_info(run_id)
        except MlflowException:
            return None

    def resolve_run(self, target: str, kinds: Sequence[str], what: str) -> dict[str, Any]:
        """:meth:`run_info` of the run a command names: a run id, or an experiment name for
        its newest run whose ``kind`` tag is the first of ``kinds`` found there. Neither is a
        one-line ConfigError starting with ``what`` (how the command quotes the target)."""
        info = self.run_info_or_none(target)
        if info is not None:
            return info
        for kind in kinds:
            run_id = self.find_run(target, {names.KIND: kind})
            if run_id is not None:
                return self.run_info(run_id)
        raise ConfigError(f"{what}: neither a run id nor an experiment with a "
                          f"{' or '.join(kinds)} run in {redact(self.uri)}")

    def experiment_by_name(self, name: str) -> str | None:
        exp = self.client.get_experiment_by_name(name)
        return None if exp is None else exp.experiment_id

    def newest_experiment(self) -> str | None:
        """The id of the most recently created experiment (MLflow's empty 'Default' only when
        there is no other)."""
        exps = self.client.search_experiments(order_by=["creation_time DESC"])
        named = [e for e in exps if e.name != "Default"] or exps
        return named[0].experiment_id if named else None

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_table(self, run_id: str, columns: Mapping[str, list[Any]], name: str) -> None:
        """An MLflow table artifact (shown in the UI); logged once, as MLflow appends to it."""
        if not any(f.path == name for f in self.client.list_artifacts(run_id)):
            self.client.log_table(run_id, data=dict(columns), artifact_file=name)

    def replace_table(self, run_id: str, columns: Mapping[str, list[Any]], name: str) -> None:
        """An MLflow table artifact (shown in the UI) holding exactly ``columns``: logged
        like :meth:`log_table` the first time, overwritten (not appended to) after that, so a
        summary written again (``ablate report``, a resumed search) replaces the old table."""
        folder = os.path.dirname(name) or None
        if not any(f.path == name for f in self.client.list_artifacts(run_id, folder)):
            self.client.log_table(run_id, data=dict(columns), artifact_file=name)
            return
        import pandas as pd  # what MlflowClient.log_table writes with, in its JSON layout

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            pd.DataFrame(dict(columns)).to_json(path, orient="split", index=False,
                                                date_format="iso")
            self.log_artifact(run_id, path, folder)

    def metric_history(self, run_id: str, key: str) -> dict[int, float]:
        """Step -> value of one metric of a run (the latest value where a step repeats)."""
        points = sorted(self.client.get_metric_history(run_id, key),
                        key=lambda m: (m.step, m.timestamp))
        return {m.step: m.value for m in points}

    def metric_points(self, run_id: str, key: str) -> list[tuple[int, int, float]]:
        """(timestamp ms, step, value) of every logged value of one metric, in time order."""
        points = self.client.get_metric_history(run_id, key)
        return sorted((m.timestamp, m.step, m.value) for m in points)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The latest value of every metric of a run."""
        return dict(self.client.get_run(run_id).data.metrics)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the local SQLite store's lock (``mlflow.db.lock``; a no-op for other stores),
        e.g. while creating a database beside the store. Use it only once the client exists:
        creating the client takes the same lock."""
        return self._store_lock()

    def download(self, run_id: str, path: str, dst: str | os.PathLike) -> str:
        """Download one artifact of the run into ``dst``; returns the local path."""
        return self.client.download_artifacts(run_id, path, os.fspath(dst))

    def download_if_present(self, run_id: str, path: str, dst: str | os.PathLike) -> str | None:
        """:meth:`download`, or None when the run has no such artifact (or no such run)."""
        try:
            return self.download(run_id, path, dst)
        except (MlflowException, OSError):
            return None

    def log_artifact(self, run_id: str, path: str | os.PathLike, subdir: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path=subdir)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def with_percent(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` after their percent copies (:data:`names.PERCENT`), rounded to 0.01."""
    pct = {names.PERCENT[k]: round(100 * float(v), 2) for k, v in metrics.items()
           if k in names.PERCENT}
    return {**pct, **metrics}

