"""Import structure of our own code, read with ``ast`` (nothing is imported): no cycles, and
``ablate.core`` stays plain PyTorch (issue 12).

The cycle graph has one edge per import that runs when a module is loaded: module level, class
bodies and ``try``/``if`` blocks, but not function bodies (deferred on purpose) nor
``if TYPE_CHECKING:`` blocks (never run). An edge goes to the module a statement names and, for
``from pkg import name``, also to ``pkg.name`` when that is a module. Parent packages are not
edges: Python runs ``pkg/__init__`` before any ``pkg.mod``, so counting them would flag every
package whose ``__init__`` imports its own submodules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ablate", "trainables")
CORE = "ablate.core"
CORE_BANNED = ("ray", "mlflow", "optuna")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = our_modules()
CORE_MODULES = sorted(m for m in MODULES if m == CORE or m.startswith(CORE + "."))


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


def imported(module: str, *, deferred: bool = False) -> set[str]:
    """Absolute names of the modules ``module`` imports (ours and third-party alike)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _statements(ast.parse(path.read_text(), str(path)).body, deferred=deferred):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: strip level − 1 trailing parts of the package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base:
                out.add(base)
            out.update(f"{base}.{a.name}".lstrip(".") for a in node.names
                       if f"{base}.{a.name}".lstrip(".") in MODULES)
    return out


def import_graph() -> dict[str, set[str]]:
    return {m: imported(m) & MODULES.keys() for m in MODULES}


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
    assert {"ablate.cli", "ablate.config", "ablate.core.step", "trainables.ciard"} <= set(MODULES)


def test_find_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_in_core_even_deferred() -> None:
    """Within core not even a type-only or function-level import may close a loop (issue 12:
    methods imported step for the ``Passes`` type while step imported methods)."""
    graph = {m: {n for n in imported(m, deferred=True) if n in CORE_MODULES}
             for m in CORE_MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in core: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_is_plain_pytorch(module: str) -> None:
    """Any import, deferred or type-only too: core must not depend on the orchestration layer."""
    bad = sorted(
        name for name in imported(module, deferred=True)
        if name.split(".")[0] in CORE_BANNED
        or (name.split(".")[0] == "ablate" and name != CORE and not name.startswith(CORE + "."))
    )
    assert not bad, f"{module} imports {', '.join(bad)}"


# What a trial needs to build and train its experiment; never the driver's modules.
TRAINABLE_DEPS = ("ablate.config", "ablate.model_config", "ablate.build", "ablate.recipe",
                  "ablate.core")


def test_trainables_depend_one_way() -> None:
    """``trainables/`` sits between the driver and the core: it imports the experiment-building
    layer only, and only the driver modules that launch trials import it."""
    trainables = {m for m in MODULES if m.split(".")[0] == "trainables"}
    for module in trainables:
        bad = sorted(n for n in imported(module, deferred=True)
                     if n.split(".")[0] == "ablate"
                     and not any(n == d or n.startswith(d + ".") for d in TRAINABLE_DEPS))
        assert not bad, f"{module} imports {', '.join(bad)}"
    importers = {m for m in MODULES.keys() - trainables
                 if any(n.split(".")[0] == "trainables" for n in imported(m, deferred=True))}
    assert importers == {"ablate.runner", "ablate.search_summary"}


# Names Ray pickled into the experiment state of searches and grids under their old module, before
# they moved (config -> model_config, runner -> trial_logger).
PICKLED_BEFORE_A_MOVE = {
    "ablate.config": ("NormalizeConfig", "TeacherConfig", "TeacherTrainConfig", "ModelConfig",
                      "TeachersConfig"),
    "ablate.runner": ("TrialLogger", "trial_dirname"),
}


@pytest.mark.parametrize("module", sorted(PICKLED_BEFORE_A_MOVE))
def test_names_pickled_before_a_move_still_unpickle(module: str) -> None:
    """A search interrupted before a class or function moved resumes after it: unpickling by
    the old ``module.name`` path must find the moved object (pickle protocol 0 opcode ``c``)."""
    import importlib
    import pickle

    for name in PICKLED_BEFORE_A_MOVE[module]:
        found = pickle.loads(f"c{module}\n{name}\n.".encode())
        moved = importlib.import_module(found.__module__)
        assert found is getattr(moved, name) and found.__module__ != module, name
