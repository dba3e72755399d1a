"""Searches and grids started by earlier versions resume: every name their Ray state pickled
(``tuner.pkl``, the trial and searcher state) unpickles under its old module path.

The list was read off real experiment state written by the version before the package was
split into layers (a search with a confirm stage and given points, a Pareto search, a grid, an
interrupted search and grid): every ``find_class`` call made while unpickling it, plus the
names an older version pickled before they moved out of ``ablate.config`` and
``ablate.runner``. A method (``GridJob.describe``) is pickled by its qualified name.
"""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys

import pytest

from ablate import legacy

PICKLED = {
    "ablate.config": ("AttackConfig", "ComputeConfig", "DataConfig", "EvalConfig",
                      "ExperimentConfig", "IgdmConfig", "IttConfig", "OptimConfig",
                      # before they moved to ablate.model_config
                      "NormalizeConfig", "TeacherConfig", "TeacherTrainConfig", "ModelConfig",
                      "TeachersConfig"),
    "ablate.confirm": ("ConfirmJob",),
    "ablate.core.catalog": ("CiardParams", "PgdAtParams", "TradesParams", "ArdParams",
                            "RsladParams", "MtardParams", "AdaadParams"),
    "ablate.grid": ("GridJob", "GridJob.describe", "GridJob.run_name", "GridJob.run_params",
                    "GridJob.run_tags"),
    "ablate.grid_spec": ("GridSpec", "Row"),
    "ablate.model_config": ("ModelConfig", "NormalizeConfig", "TeacherConfig",
                            "TeacherTrainConfig", "TeachersConfig"),
    "ablate.progress": ("Heartbeat",),
    "ablate.recipe": ("Recipe",),
    "ablate.resources": ("Resources",),
    "ablate.runner": ("JobFields", "JobFields.run_config",
                      # before they moved to ablate.trial_logger
                      "TrialLogger", "trial_dirname"),
    "ablate.search": ("SearchJob", "SearchJob.describe", "SearchJob.run_name",
                      "SearchJob.run_params", "SearchJob.run_tags", "StoppedAsPruned"),
    "ablate.search_spec": ("Confirm", "Objective", "Param", "Scheduler", "SearchSpec",
                           "Searcher"),
    "ablate.tracking": ("Tracker",),
    "ablate.trial_logger": ("TrialLogger", "trial_dirname"),
}


def unpickle(module: str, qualname: str) -> object:
    """What a protocol-4 pickle that names ``module`` and ``qualname`` loads (a dotted
    qualname is looked up attribute by attribute, as for a pickled method)."""
    return pickle.loads(b"\x80\x04c" + f"{module}\n{qualname}\n".encode() + b".")


@pytest.mark.parametrize(("module", "qualname"),
                         [(m, n) for m, names in sorted(PICKLED.items()) for n in names])
def test_a_name_pickled_by_an_earlier_version_unpickles(module: str, qualname: str) -> None:
    found = unpickle(module, qualname)
    home = importlib.import_module(found.__module__)
    obj: object = home
    for part in qualname.split("."):
        obj = getattr(obj, part)
    assert found is obj  # the object that lives on, not a copy


def test_every_old_module_is_registered_and_its_homes_import() -> None:
    for old, homes in legacy.MOVED.items():
        assert old in sys.modules, old
        for home in homes:
            importlib.import_module(home)
    with pytest.raises(AttributeError, match="NoSuchName"):
        unpickle("ablate.search_spec", "NoSuchName")


def test_old_paths_cost_nothing_until_used() -> None:
    """Registering the old paths imports none of their homes (the CLI's fast refusals), and a
    tool probing a module's dunders (inspect, pytest) does not import them either."""
    probe = ("import sys, inspect, ablate; "
             "m = sys.modules['ablate.search_summary']; "
             "assert not hasattr(m, '__file__'); inspect.getmodule(inspect); "
             "print(sorted(k for k in sys.modules if k.startswith('ablate.')"
             " and k not in __import__('ablate.legacy').legacy.MOVED))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "['ablate.legacy']"
