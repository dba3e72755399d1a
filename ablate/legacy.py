"""Module paths of earlier versions, kept importable for the Ray state they pickled.

Ray restores a search or grid (``--resume``) by unpickling its experiment state: ``tuner.pkl``
holds the job, its spec and configs, the searcher, the scheduler and the callbacks, and the
trial state names ``trial_dirname``, each by the module path it had when the search started.
Searches started before the package was split into layers name flat modules such as
``ablate.search_spec``; each of those old paths is an alias module here whose attributes are
looked up, on first use, in the modules that hold those names now. Nothing else should import
an old path (tests/test_legacy.py unpickles every name the earlier versions wrote).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# old module -> the modules its names live in now, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "ablate.around": ("ablate.search.around",),
    "ablate.confirm": ("ablate.search.confirm",),
    "ablate.cli_parser": ("ablate.cli.parser",),
    "ablate.cost_report": ("ablate.cost.estimate",),
    "ablate.explain": ("ablate.config.explain",),
    "ablate.grid_spec": ("ablate.config.grid_spec",),
    "ablate.grid_table": ("ablate.grid.table", "ablate.report.stats", "ablate.report.tables"),
    "ablate.inputs": ("ablate.build.checks",),
    "ablate.model_config": ("ablate.config.networks",),
    "ablate.overrides": ("ablate.config.overrides",),
    "ablate.progress": ("ablate.runtime.progress",),
    "ablate.recipe": ("ablate.config.recipe",),
    "ablate.resources": ("ablate.config.resources", "ablate.runtime.cluster"),
    "ablate.robustbench_entry": ("ablate.evaluation.robustbench",),
    "ablate.runner": ("ablate.runtime.runner", "ablate.runtime.job",
                      "ablate.runtime.trial_logger"),
    "ablate.safe_yaml": ("ablate.config.safe_yaml",),
    "ablate.search_spec": ("ablate.config.search_spec", "ablate.config.space"),
    "ablate.search_summary": ("ablate.search.summary",),
    "ablate.search_trials": ("ablate.search.trials", "ablate.search.study"),
    "ablate.spec_paths": ("ablate.config.spec_paths",),
    "ablate.storage": ("ablate.runtime.storage",),
    "ablate.tracking_uri": ("ablate.config.tracking_uri",),
    "ablate.training": ("ablate.cli.train",),
    "ablate.trial_logger": ("ablate.runtime.trial_logger",),
    "ablate.ui": ("ablate.tracking.ui",),
}


def _alias(old: str, homes: tuple[str, ...]) -> types.ModuleType:
    module = types.ModuleType(old, f"Moved: {', '.join(homes)} (ablate.legacy).")

    def __getattr__(name: str) -> Any:  # noqa: N807 (PEP 562: a module's attribute lookup)
        if name.startswith("__"):  # tools probe every module (inspect: __file__): no import
            raise AttributeError(name)
        for home in homes:
            found = getattr(importlib.import_module(home), name, None)
            if found is not None:
                return found
        raise AttributeError(f"module {old!r} (moved to {', '.join(homes)}) has no {name!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


def install() -> None:
    """Register the alias modules (cheap: nothing is imported until a name is looked up)."""
    for old, homes in MOVED.items():
        if old not in sys.modules:
            sys.modules[old] = _alias(old, homes)
