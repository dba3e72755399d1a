"""The ``--tracking-uri`` check, run while the command line is parsed: before MLflow (or torch)
is imported and before any store is opened, so a URI MLflow could not use is one line and
exit 2, not a traceback after the command started. Without ``--tracking-uri`` the store is
``$MLFLOW_TRACKING_URI`` when set, else ``./mlflow.db``; the same check applies to either."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlsplit

from ablate.core.errors import ConfigError, StoreBroken

DEFAULT_DB = "mlflow.db"
MIN_FREE = 8 * 1024**2  # bytes free beside a SQLite store below which a command refuses
QUICK_CHECK_MAX = 64 * 1024**2  # bytes of a store up to which every command runs quick_check
ENV_VAR = "MLFLOW_TRACKING_URI"

_SERVERS = ("http", "https")
_URI_FORMS = ("sqlite:///PATH, file:///DIR, an existing directory, http(s)://HOST, "
              "postgresql://..., mysql://..., mssql://... or databricks")
# SQLAlchemy driver name -> (module it imports, what provides it). MLflow opens a database
# store through SQLAlchemy, which imports the driver only then: a missing one is a traceback
# after the command started.
_DRIVERS = {
    # ablate[postgres] installs both: SQLAlchemy >= 2.1 defaults to psycopg (3), older to 2
    "psycopg": ("psycopg", "pip install 'ablate[postgres]'"),
    "psycopg2": ("psycopg2", "pip install 'ablate[postgres]'"),
    "pg8000": ("pg8000", "pip install pg8000"),
    "mysqldb": ("MySQLdb", "pip install mysqlclient"),
    "pymysql": ("pymysql", "pip install pymysql"),
    "mysqlconnector": ("mysql", "pip install mysql-connector-python"),
    "mariadbconnector": ("mariadb", "pip install mariadb"),
    "pyodbc": ("pyodbc", "pip install pyodbc"),
    "pymssql": ("pymssql", "pip install pymssql"),
}
# Database -> (its name in messages, the drivers that serve it; for MySQL and SQL Server the
# first is SQLAlchemy's default, for PostgreSQL see _default_driver).
_DATABASES = {
    "postgresql": ("PostgreSQL", ("psycopg", "psycopg2", "pg8000")),
    "mysql": ("MySQL", ("mysqldb", "pymysql", "mysqlconnector", "mariadbconnector")),
    "mssql": ("SQL Server", ("pyodbc", "pymssql")),
}


def check_tracking_uri(uri: str | None, *, existing: bool = False) -> None:
    """Refuse a tracking URI MLflow could not open (it would fail with a traceback after the
    command started); ``None``: the default store, checked when ``$MLFLOW_TRACKING_URI`` names
    it. ``existing``: the store must already be there (read-only commands). Local stores need
    their directory: MLflow creates the file, not its parent."""
    where = f"--tracking-uri {redact(uri)!r}"
    if uri is None:
        uri = env_uri()
        if uri is None:  # ./mlflow.db: the working directory exists
            check_sqlite_file(Path(DEFAULT_DB), f"the store {Path(DEFAULT_DB).resolve()}")
            return
        where = f"{ENV_VAR}={redact(uri)!r}"
    if uri == "databricks":
        return
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError as exc:
        raise ConfigError(f"{where}: malformed URI ({exc})") from None
    scheme = parts.scheme.lower()
    database, _, driver = scheme.partition("+")
    if scheme == "sqlite":
        _check_sqlite(uri, where, existing)
    elif scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{where}: a file store must be on this machine")
        _check_store_dir(Path(parts.path), where, existing)
    elif scheme in _SERVERS or database in _DATABASES:
        if not parts.hostname:
            raise ConfigError(f"{where}: no host")
        if database in _DATABASES:
            _check_driver(database, driver, where)
    elif scheme == "databricks":
        return
    elif not scheme and uri:  # a plain path: MLflow's file store, in a directory that exists
        if not Path(uri).is_dir():
            raise ConfigError(f"{where}: no such directory; expected {_URI_FORMS}")
    else:
        raise ConfigError(f"{where}: unsupported URI; expected {_URI_FORMS}")


def _check_driver(database: str, driver: str, where: str) -> None:
    """The Python driver SQLAlchemy will import for ``database+driver://`` is installed
    (looked up, not imported: refusals stay fast)."""
    label, drivers = _DATABASES[database]
    wanted = driver or _default_driver(database)
    module, install = _DRIVERS.get(wanted, (wanted, f"pip install {wanted}"))
    if _installed(module):
        return
    if driver:
        raise ConfigError(f"{where}: the {label} driver {module} is not installed "
                          f"({install})")
    present = [d for d in drivers if d != wanted and d in _DRIVERS
               and _installed(_DRIVERS[d][0])]
    other = (f"; or name an installed driver: {database}+{present[0]}://..." if present
             else "")
    raise ConfigError(f"{where}: the {label} driver {module} (SQLAlchemy's default for "
                      f"{database}://) is not installed ({install}){other}")


def _default_driver(database: str) -> str:
    """SQLAlchemy's driver for a URI that names none: psycopg (3) for PostgreSQL from
    SQLAlchemy 2.1 on, psycopg2 before; MySQLdb for MySQL; pyodbc for SQL Server."""
    if database != "postgresql":
        return _DATABASES[database][1][0]
    try:
        major, minor = (int(p) for p in version("sqlalchemy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return "psycopg2"
    return "psycopg" if (major, minor) >= (2, 1) else "psycopg2"


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package, or a bad name
        return False


def _check_sqlite(uri: str, where: str, existing: bool) -> None:
    if not uri.startswith("sqlite:///") or not uri.removeprefix("sqlite:///").split("?")[0]:
        raise ConfigError(f"{where}: a SQLite store is sqlite:///RELATIVE/PATH.db or "
                          "sqlite:////ABSOLUTE/PATH.db")
    path = Path(uri.removeprefix("sqlite:///").split("?")[0])
    if not path.parent.is_dir():
        raise ConfigError(f"{where}: directory {path.parent} does not exist")
    if path.is_dir() or (existing and not path.is_file()):
        raise ConfigError(f"{where}: no SQLite store at {path}")
    check_sqlite_file(path, where)


def check_sqlite_file(path: Path, where: str) -> None:
    """A SQLite store that is there can be read (its header, its schema, and for a store
    up to 64 MB SQLite's ``quick_check``), and its disk has room: a damaged file or a full
    disk is one line now, not pages of SQLAlchemy after teachers trained and Ray started."""
    free = shutil.disk_usage(path.parent if str(path.parent) else ".").free
    if free < MIN_FREE:
        raise StoreBroken(f"{where}: the disk is full ({free // 1024} KB free in "
                          f"{path.parent.resolve()})")
    if not path.is_file() or path.stat().st_size == 0:
        return  # MLflow creates it
    damaged = f"{where}: {path} is not a readable SQLite database"
    with open(path, "rb") as handle:
        if handle.read(16) != b"SQLite format 3\x00":
            raise StoreBroken(f"{damaged} (no SQLite header)")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True,
                                                timeout=30)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if path.stat().st_size <= QUICK_CHECK_MAX:
                (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
                if verdict != "ok":
                    raise StoreBroken(f"{damaged} (quick_check: {' '.join(verdict.split())})")
    except sqlite3.DatabaseError as exc:
        raise StoreBroken(f"{damaged} ({' '.join(str(exc).split())})") from None


def _check_store_dir(path: Path, where: str, existing: bool) -> None:
    if path.is_dir():
        return
    if existing or path.exists() or not path.parent.is_dir():
        raise ConfigError(f"{where}: no such directory: {path}")


def env_uri() -> str | None:
    """``$MLFLOW_TRACKING_URI``, when set and not empty."""
    return os.environ.get(ENV_VAR) or None


def default_uri(directory: str | os.PathLike = ".") -> str:
    """The store every command uses without ``--tracking-uri``: ``$MLFLOW_TRACKING_URI``
    when set (as MLflow itself does), else the local SQLite store ``DIRECTORY/mlflow.db``."""
    return env_uri() or f"sqlite:///{(Path(directory) / DEFAULT_DB).resolve()}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a local SQLite store (None for any other store)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def store_exists(uri: str) -> bool:
    """Whether the store is there (a SQLite file that was never written is not)."""
    db = sqlite_file(uri)
    return db is None or db.is_file()


def redact(uri: str) -> str:
    """The URI as shown in messages and logs: a password in it becomes ``***``."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    if not password:
        return uri
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def not_a_target(target: str, uri: str) -> str:
    """How ``ablate eval`` refuses a target that is neither a path nor a run id of ``uri``."""
    return f"{target!r}: neither a checkpoint path nor a run id in {redact(uri)}"


def check_eval_target(target: str, uri: str) -> None:
    """Refuse a target that is no path when the store does not exist (opening a missing
    SQLite store would create it); needs neither torch nor MLflow."""
    if not Path(target).exists() and not store_exists(uri):
        raise ConfigError(not_a_target(target, uri) + " (no such store)")
