"""A tracking store's faults as one line each, not pages of MLflow retries and tracebacks.

Every call of the :class:`~ablate.tracking.Tracker` goes through :class:`Guarded`:

- a server that stops answering: one line when it first fails ("tracking server ...
  unreachable, retrying for N s"), retries with back-off for ``$ABLATE_TRACKING_WAIT`` seconds
  (default 120; MLflow's own retries are turned down so that this is the wait), one line when it
  answers again, and :class:`TrackingLost` once the wait is over (the caller stops as if
  interrupted: exit 75, ``--resume`` later);
- a full disk or a damaged SQLite file: :class:`StoreBroken`, one line naming the store, exit 2.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ablate.core.errors import EXIT_TRACKING_LOST, ConfigError, StoreBroken, TrackingLost

WAIT_ENV = "ABLATE_TRACKING_WAIT"
WAIT_DEFAULT = 120.0  # seconds: a server restart or a short network outage, not an outage

# Set before MLflow reads them (at each request): one quick attempt per call, since Guarded
# does the retrying and says so; MLflow's defaults retry for minutes without a word.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

_UNREACHABLE = ("Max retries exceeded", "Connection refused", "Failed to establish a new "
                "connection", "Read timed out", "Connection aborted", "RemoteDisconnected",
                "failed with code 502", "failed with code 503", "failed with code 504",
                "error code 502", "error code 503", "error code 504")
_FULL = ("database or disk is full", "No space left on device", "[Errno 28]")
_MALFORMED = ("database disk image is malformed", "file is not a database")


__all__ = ["EXIT_TRACKING_LOST", "Guarded", "StoreBroken", "TrackingLost", "broken_line",
           "fault", "wait_seconds"]


def wait_seconds() -> float:
    raw = os.environ.get(WAIT_ENV, "")
    try:
        return max(float(raw), 0.0) if raw else WAIT_DEFAULT
    except ValueError:
        raise ConfigError(f"{WAIT_ENV}={raw!r}: a number of seconds") from None


def fault(exc: BaseException) -> str | None:
    """'unreachable', 'full', 'malformed', or None for an error that is not the store's."""
    text = f"{type(exc).__name__}: {exc}"
    for kind, marks in (("full", _FULL), ("malformed", _MALFORMED),
                        ("unreachable", _UNREACHABLE)):
        if any(m in text for m in marks):
            return kind
    if isinstance(exc, ConnectionError | TimeoutError):
        return "unreachable"
    return None


class Guarded:
    """``MlflowClient`` with its store's faults turned into the rules above; ``where``: the
    store as messages name it (the SQLite file, or the redacted URI)."""

    def __init__(self, client: Any, where: str, say: Callable[[str], None] | None = None,
                 wait: float | None = None) -> None:
        self._client, self._where = client, where
        self._say = say or (lambda line: print(f"ablate: {line}", file=sys.stderr, flush=True))
        self._wait = wait_seconds() if wait is None else wait
        self._down_since: float | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_client", "_where", "_say", "_wait"):
            raise AttributeError(name)  # pickling and copying look for these before __init__
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self._call(attr, args, kwargs)

    def _call(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        backoff = 1.0
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                kind = fault(exc)
                if kind is None:
                    raise
                if kind != "unreachable":
                    raise StoreBroken(broken_line(self._where, kind, exc)) from None
                backoff = self._wait_or_give_up(backoff)
                continue
            if self._down_since is not None:
                self._say(f"tracking server {self._where} answers again after "
                          f"{time.monotonic() - self._down_since:.0f} s")
                self._down_since = None
            return result

    def _wait_or_give_up(self, backoff: float) -> float:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._say(f"tracking server {self._where} unreachable, retrying for "
                      f"{self._wait:g} s ({WAIT_ENV})")
        left = self._down_since + self._wait - now
        if left <= 0:
            raise TrackingLost(f"tracking server {self._where} unreachable for "
                               f"{self._wait:g} s") from None
        time.sleep(min(backoff, left))
        return min(2 * backoff, 15.0)


def broken_line(where: str, kind: str, exc: BaseException) -> str:
    """The one line of a store that is full or damaged, with the store's own words."""
    what = "the disk is full" if kind == "full" else "the database is damaged"
    detail = " ".join(str(exc).split())
    cut = detail if len(detail) <= 160 else detail[:160] + "…"
    return f"tracking store {where}: {what} ({cut})"
