"""The ``--tracking-uri`` check, run while the command line is parsed: before MLflow (or torch)
is imported and before any store is opened, so a URI MLflow could not use is one line and
exit 2, not a traceback after the command started."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from ablate.config import ConfigError

DEFAULT_DB = "mlflow.db"

_SERVERS = ("http", "https", "postgresql", "mysql", "mssql")  # + "+driver" for databases
_URI_FORMS = ("sqlite:///PATH, file:///DIR, an existing directory, http(s)://HOST, "
              "postgresql://..., mysql://... or databricks")


def check_tracking_uri(uri: str, *, existing: bool = False) -> None:
    """Refuse a ``--tracking-uri`` MLflow could not open (it would fail with a traceback
    after the command started); ``existing``: the store must already be there (read-only
    commands). Local stores need their directory: MLflow creates the file, not its parent."""
    where = f"--tracking-uri {uri!r}"
    if uri == "databricks":
        return
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError as exc:
        raise ConfigError(f"{where}: malformed URI ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        _check_sqlite(uri, where, existing)
    elif scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{where}: a file store must be on this machine")
        _check_store_dir(Path(parts.path), where, existing)
    elif scheme.split("+", 1)[0] in _SERVERS:
        if not parts.hostname:
            raise ConfigError(f"{where}: no host")
    elif scheme == "databricks":
        return
    elif not scheme and uri:  # a plain path: MLflow's file store, in a directory that exists
        if not Path(uri).is_dir():
            raise ConfigError(f"{where}: no such directory; expected {_URI_FORMS}")
    else:
        raise ConfigError(f"{where}: unsupported URI; expected {_URI_FORMS}")


def _check_sqlite(uri: str, where: str, existing: bool) -> None:
    if not uri.startswith("sqlite:///") or not uri.removeprefix("sqlite:///").split("?")[0]:
        raise ConfigError(f"{where}: a SQLite store is sqlite:///RELATIVE/PATH.db or "
                          "sqlite:////ABSOLUTE/PATH.db")
    path = Path(uri.removeprefix("sqlite:///").split("?")[0])
    if not path.parent.is_dir():
        raise ConfigError(f"{where}: directory {path.parent} does not exist")
    if path.is_dir() or (existing and not path.is_file()):
        raise ConfigError(f"{where}: no SQLite store at {path}")


def _check_store_dir(path: Path, where: str, existing: bool) -> None:
    if path.is_dir():
        return
    if existing or path.exists() or not path.parent.is_dir():
        raise ConfigError(f"{where}: no such directory: {path}")


def default_uri(directory: str | os.PathLike = ".") -> str:
    """The local SQLite store every command uses without ``--tracking-uri``."""
    return f"sqlite:///{(Path(directory) / DEFAULT_DB).resolve()}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a local SQLite store (None for any other store)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def store_exists(uri: str) -> bool:
    """Whether the store is there (a SQLite file that was never written is not)."""
    db = sqlite_file(uri)
    return db is None or db.is_file()
