"""Where spec names resolve (ablate/config/spec_paths.py), that the specs are shipped with the
package (pyproject.toml), and where trained teachers are cached by default
(ablate.build.cache_dir)."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.config import available_specs, load_grid, load_search_spec, resolve_spec, shipped_dir
from ablate.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "search_spaces"


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory away from the checkout."""
    cwd = tmp_path / "project"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_shipped_specs_are_the_repository_search_spaces() -> None:
    found = shipped_dir()
    assert found is not None and found.resolve() == SHIPPED.resolve()


def test_a_shipped_spec_is_found_from_another_directory(elsewhere: Path) -> None:
    path = resolve_spec("ablation_table7_digits")
    assert path.is_absolute() and path.resolve() == (SHIPPED / "ablation_table7_digits.yaml")
    # Its base (`base: base/digits.yaml`, relative to the spec) resolves beside it.
    grid = load_grid(path)
    assert grid.base.data.name == "digits" and grid.rows
    assert load_search_spec(resolve_spec("quickstart")).base.data.name == "digits"


def test_the_copy_in_the_working_directory_wins(elsewhere: Path) -> None:
    own = elsewhere / "search_spaces"
    own.mkdir()
    (own / "quickstart.yaml").write_text("name: mine\n")
    (own / "only_mine.yml").write_text("name: only-mine\n")
    assert resolve_spec("quickstart") == Path("search_spaces/quickstart.yaml")
    assert resolve_spec("only_mine") == Path("search_spaces/only_mine.yml")
    assert resolve_spec("ciard").resolve() == SHIPPED / "ciard.yaml"  # the rest still shipped
    assert {"only_mine", "quickstart", "ciard", "ablation_table7"} <= set(available_specs())


def test_an_installed_ablate_specs_package_is_used(tmp_path: Path, elsewhere: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """What a wheel installs: site-packages/ablate_specs/ (the specs, base/ beside them)."""
    site = tmp_path / "site"
    (site / "ablate_specs" / "base").mkdir(parents=True)
    (site / "ablate_specs" / "base" / "digits.yaml").write_bytes(
        (SHIPPED / "base" / "digits.yaml").read_bytes())
    (site / "ablate_specs" / "wheel_only.yaml").write_bytes(
        (SHIPPED / "quickstart.yaml").read_bytes())
    monkeypatch.syspath_prepend(str(site))
    assert shipped_dir() == site / "ablate_specs"
    path = resolve_spec("wheel_only")
    assert path == site / "ablate_specs" / "wheel_only.yaml"
    assert load_search_spec(path).base.data.name == "digits"


def test_a_miss_is_one_line_listing_the_names_of_both_places(elsewhere: Path) -> None:
    (elsewhere / "search_spaces").mkdir()
    (elsewhere / "search_spaces" / "mine.yaml").write_text("name: mine\n")
    with pytest.raises(ConfigError) as err:
        resolve_spec("ablation_tabel7")
    msg = str(err.value)
    assert "\n" not in msg and "'ablation_tabel7'" in msg
    assert "./search_spaces" in msg and str(shipped_dir()) in msg
    listed = msg.split("available: ", 1)[1].split(", ")
    assert "mine" in listed and "ablation_table7" in listed and "quickstart" in listed
    assert "digits" not in listed  # base experiments are not specs


def test_a_path_is_used_as_given(elsewhere: Path) -> None:
    assert resolve_spec("missing.yaml") == Path("missing.yaml")  # the reader names it
    assert resolve_spec("some/dir/x.yml") == Path("some/dir/x.yml")
    (elsewhere / "quickstart").write_text("name: a-file-without-suffix\n")
    assert resolve_spec("quickstart") == Path("quickstart")  # an existing path beats a name
    absolute = SHIPPED / "ciard.yaml"
    assert resolve_spec(str(absolute)) == absolute
    assert resolve_spec(absolute) == absolute


def test_resolving_loads_neither_torch_nor_ray_nor_mlflow() -> None:
    code = ("import sys; from ablate.config.spec_paths import resolve_spec; resolve_spec('ciard'); "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "[]"


# --- packaging: a non-editable install must carry every package and every spec ----------------

def _setuptools_table() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_pyproject_lists_every_code_package() -> None:
    from setuptools import find_packages

    listed = set(_setuptools_table()["packages"])
    found = set(find_packages(str(REPO), include=["ablate", "ablate.*", "trainables",
                                                  "trainables.*"]))
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"


def test_pyproject_ships_every_yaml_under_search_spaces() -> None:
    table = _setuptools_table()
    assert table["package-dir"]["ablate_specs"] == "search_spaces"
    files = sorted(SHIPPED.rglob("*.y*ml"))
    assert len(files) >= 4
    for f in files:
        rel = f.relative_to(SHIPPED)
        package = ".".join(("ablate_specs", *rel.parent.parts))
        assert package in table["packages"], f"{rel}: add {package!r} to packages"
        globs = table["package-data"].get(package, [])
        assert any(fnmatch.fnmatch(rel.name, g) for g in globs), (
            f"{rel}: not matched by package-data[{package!r}]")


# --- the teacher cache (ablate.build.cache_dir) ------------------------------------------------

@pytest.fixture
def no_cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("ABLATE_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    return home


def test_teacher_cache_defaults_to_the_user_cache(no_cache_env: Path, elsewhere: Path) -> None:
    from ablate.build import cache_dir

    assert cache_dir() == no_cache_env / ".cache" / "ablate"  # not the working directory


def test_teacher_cache_follows_xdg_then_ablate_cache(no_cache_env: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.build import cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: absolute only
    assert cache_dir() == no_cache_env / ".cache" / "ablate"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "ablate"
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("ABLATE_CACHE", "")  # empty = unset
    assert cache_dir() == tmp_path / "xdg" / "ablate"
