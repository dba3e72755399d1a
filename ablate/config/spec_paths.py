"""Where search specs and grids are found: a path as given, or a name looked up first in
``./search_spaces/`` (the current directory, so a project's own specs win), then in the specs
shipped with the package.

The shipped specs are the repository's top-level ``search_spaces/``, installed as the data-only
package ``ablate_specs`` (``[tool.setuptools.package-dir]`` in pyproject.toml maps the one onto
the other): in a wheel they sit in ``site-packages/ablate_specs/``, in an editable install they
are the checkout's ``search_spaces/``. A spec's ``base: base/digits.yaml`` is relative to the
spec file, and ``base/`` is shipped beside the specs, so it resolves wherever the spec was found.

No torch, Ray or MLflow here: names resolve (and misses are refused) in milliseconds.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ablate.core.errors import ConfigError

SPEC_DIR = "search_spaces"  # under the current directory
SHIPPED_PACKAGE = "ablate_specs"  # the installed copy of the repository's search_spaces/
SUFFIXES = (".yaml", ".yml")

__all__ = ["SHIPPED_PACKAGE", "SPEC_DIR", "available_specs", "resolve_spec", "shipped_dir"]


def shipped_dir() -> Path | None:
    """The directory of the specs shipped with ``ablate``, or None if there are none.

    The installed ``ablate_specs`` package (a wheel or an editable install) if there is one,
    else the ``search_spaces/`` beside the ``ablate`` package (a source tree run without
    installing, e.g. with ``PYTHONPATH``)."""
    for folder in (*_package_dirs(), Path(__file__).resolve().parents[2] / SPEC_DIR):
        if folder.is_dir():
            return folder
    return None


def _package_dirs() -> list[Path]:
    try:
        spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    except (ImportError, ValueError):
        return []
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def _spec_dirs() -> list[Path]:
    """Where names are looked up, in order: ./search_spaces, then the shipped specs."""
    dirs = [Path(SPEC_DIR)]
    shipped = shipped_dir()
    if shipped is not None and not _same_dir(shipped, dirs[0]):
        dirs.append(shipped)
    return dirs


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def available_specs() -> list[str]:
    """The names a bare argument can take: every spec file directly in ./search_spaces or
    among the shipped specs (the experiments under ``base/`` are not specs)."""
    names = {p.stem for d in _spec_dirs() if d.is_dir() for p in d.iterdir()
             if p.suffix in SUFFIXES and p.is_file()}
    return sorted(names)


def resolve_spec(name_or_path: str | os.PathLike[str]) -> Path:
    """The spec file an argument of ``ablate search`` / ``ablate grid`` names.

    An existing path, or anything ending in ``.yaml`` / ``.yml``, is used as given (the reader
    reports a missing file by its name). A bare name (``ablation_table7``) is
    ``./search_spaces/NAME.yaml`` in the current directory if that exists, else the shipped
    ``NAME.yaml``. A name found in neither place is a one-line :class:`ConfigError` that lists
    the available names.
    """
    given = os.fspath(name_or_path)
    path = Path(given)
    # lexists: a symlink loop or a dangling link is a path the reader names as what it is,
    # not a spec name to look up.
    if path.suffix in SUFFIXES or os.path.lexists(path):
        return path
    if not given.strip():
        raise ConfigError(f"no spec given; available: {_listing()}")
    dirs = _spec_dirs()
    for folder in dirs:
        for suffix in SUFFIXES:
            candidate = folder / f"{given}{suffix}"
            if candidate.is_file():
                return candidate
    where = " and ".join(str(d) if d.is_absolute() else f"./{d}" for d in dirs)
    raise ConfigError(f"no spec named {given!r} (looked for {given}.yaml in {where}); "
                      f"available: {_listing()}")


def _listing() -> str:
    return ", ".join(available_specs()) or "none"
