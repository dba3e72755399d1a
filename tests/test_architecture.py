"""The package's layers, read with ``ast`` (nothing is imported): every import of our own code,
at module level, deferred in a function or type-only, runs downward in :data:`LAYERS`; imports
across packages go through the package's facade (its ``__init__`` and ``__all__``); no import
closes a circle; and the heavy libraries stay in the layers that need them.

An edge goes to the module a statement names and, for ``from pkg import name``, also to
``pkg.name`` when that is a module. Parent packages are not edges: Python runs ``pkg/__init__``
before any ``pkg.mod``, so counting them would flag every package whose ``__init__`` imports its
own submodules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ablate", "trainables")

# Bottom to top: a module may import its own unit and the units of lower floors, nothing else.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("ablate.names", "ablate.legacy"),  # plain Python: the shared vocabulary, old paths
    ("ablate",),  # the root package: installs the old paths
    ("ablate.core",),  # plain PyTorch
    ("ablate.config",),  # what a user writes, validated: no torch, Ray or MLflow
    ("ablate.build",),  # checked config -> live objects (torch)
    # MLflow | plots, tables | a trial | what a search or grid will cost
    ("ablate.tracking", "ablate.report", "trainables", "ablate.cost"),
    ("ablate.runtime", "ablate.evaluation"),  # Ray jobs | ablate eval
    ("ablate.grid",),
    ("ablate.search",),  # above grid: its confirm stage and around-grids are grids
    ("ablate.cli",),
)
FLOOR = {unit: i for i, units in enumerate(LAYERS) for unit in units}
# No facade: core's modules are imported by name (core/__init__ is empty), and so is the one
# trainable module.
NO_FACADE = ("ablate.core", "trainables", "ablate.names", "ablate.legacy")
# Third-party packages a unit may not import (deferred or not).
BANNED = {
    "ablate.names": ("torch", "ray", "mlflow", "optuna", "pydantic", "yaml"),
    "ablate.legacy": ("torch", "ray", "mlflow", "optuna", "pydantic", "yaml"),
    "ablate.core": ("ray", "mlflow", "optuna"),
    "ablate.config": ("torch", "ray", "mlflow", "optuna", "sklearn", "matplotlib", "scipy"),
}
MLFLOW_ONLY_IN = ("ablate.tracking.tracker", "ablate.tracking.server")  # client, UI server


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if p.name != "__main__.py"}


MODULES = our_modules()


def unit(module: str) -> str:
    """The layer unit a module belongs to: the longest entry of LAYERS that prefixes it."""
    found = [u for u in FLOOR if module == u or module.startswith(u + ".")]
    assert found, f"{module} is in no layer: add it to LAYERS"
    return max(found, key=len)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(body: list[ast.stmt], *, deferred: bool) -> Iterator[ast.stmt]:
    """Every statement of ``body``, descending into blocks; function bodies and TYPE_CHECKING
    blocks only when ``deferred`` (all imports, not just those run at load time)."""
    for node in body:
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not deferred:
            yield from _statements(node.orelse, deferred=deferred)
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not deferred:
            continue
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                yield from _statements([s for s in inner if isinstance(s, ast.AST)],
                                       deferred=deferred)


def import_statements(module: str, *, deferred: bool = True) -> Iterator[tuple[str, list[str]]]:
    """(module named, names imported from it) of each import statement, absolute."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _statements(ast.parse(path.read_text(), str(path)).body, deferred=deferred):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: strip level - 1 trailing parts of the package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield base, [a.name for a in node.names]


def imported(module: str, *, deferred: bool = True) -> set[str]:
    """Absolute names of the modules ``module`` imports (ours and third-party alike)."""
    out: set[str] = set()
    for base, names in import_statements(module, deferred=deferred):
        if base:
            out.add(base)
        out.update(f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES)
    return out


def ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def import_graph(*, deferred: bool = True) -> dict[str, set[str]]:
    return {m: (imported(m, deferred=deferred) & MODULES.keys()) - {m} for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (iterative DFS, three colours)."""
    colour = dict.fromkeys(graph, 0)  # 0 unseen, 1 on the current path, 2 done
    for start in sorted(graph):
        if colour[start]:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        colour[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                stack.pop()
            elif colour[nxt] == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour[nxt] == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_finds_our_modules() -> None:
    assert {"ablate.cli.main", "ablate.config.experiment", "ablate.core.step",
            "trainables.ciard", "ablate.search.job", "ablate.grid.job"} <= set(MODULES)


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        unit(module)


def test_find_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def test_no_import_cycle_even_deferred() -> None:
    """Not even a function-level or type-only import closes a loop."""
    cycle = find_cycle(import_graph(deferred=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_downward(module: str) -> None:
    """Any import, deferred or type-only too: its own unit or a lower floor."""
    here = unit(module)
    bad = sorted(name for name in imported(module) if ours(name) and name in MODULES
                 and unit(name) != here and FLOOR[unit(name)] >= FLOOR[here])
    assert not bad, f"{module} (floor {FLOOR[here]}) imports upward or sideways: {bad}"


def facade(package: str) -> set[str]:
    """The names in a package's ``__all__``."""
    tree = ast.parse(MODULES[package].read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "__all__"):
            return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
    return set()


FACADES = sorted(u for u in FLOOR if u.count(".") == 1 and not u.startswith(NO_FACADE))


@pytest.mark.parametrize("package", FACADES)
def test_each_package_has_a_facade_of_its_own_modules(package: str) -> None:
    """A short ``__init__`` naming the public surface: ``__all__``, imported from the
    package's own modules only."""
    names = facade(package)
    assert names, f"{package}/__init__.py has no __all__"
    exported = set()
    for base, imported_names in import_statements(package, deferred=False):
        if base == "__future__":
            continue
        assert base.startswith(package + "."), f"{package}/__init__ imports {base}"
        exported |= set(imported_names)
    assert names == exported, f"{package}: __all__ and the imports differ"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_across_packages_use_the_facade(module: str) -> None:
    """Another package is reached through its ``__init__`` and only for names in its
    ``__all__``: the facade is the whole surface one layer offers the ones above."""
    here = unit(module)
    for base, names in import_statements(module):
        if not ours(base) or unit(base) == here or unit(base).startswith(NO_FACADE):
            continue
        if base == "ablate" and all(f"ablate.{n}" in NO_FACADE for n in names):
            continue  # `from ablate import names`
        assert base == unit(base), f"{module} imports {base}: use the facade {unit(base)}"
        missing = sorted(set(names) - facade(base))
        assert not missing, f"{module} imports {missing} from {base}, not in its __all__"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_heavy_libraries_stay_where_they_belong(module: str) -> None:
    names = {n.split(".")[0] for n in imported(module)}
    banned = BANNED.get(unit(module), ())
    assert not names & set(banned), f"{module} imports {sorted(names & set(banned))}"
    if "mlflow" in names:
        assert module in MLFLOW_ONLY_IN, f"{module} imports mlflow (only {MLFLOW_ONLY_IN} may)"


def test_trainables_are_imported_only_where_trials_start_or_are_tested() -> None:
    importers = {m for m in MODULES if unit(m) != "trainables"
                 and any(n.split(".")[0] == "trainables" for n in imported(m))}
    assert importers == {"ablate.runtime.runner", "ablate.search.summary"}
