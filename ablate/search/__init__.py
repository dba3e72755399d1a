"""``ablate search``: Optuna (TPE or random) through Ray Tune with ASHA (:class:`SearchJob`), the
summary in the parent run (trials table, plots, importances, the Optuna study, the best trial's
test), and the stages after a search: the confirm stage (:func:`run_confirm`) and the
one-at-a-time grid around its best configuration (:func:`around_grid`)."""

from __future__ import annotations

from ablate.search.around import around_grid
from ablate.search.confirm import ConfirmJob, run_confirm
from ablate.search.job import SearchJob, StoppedAsPruned, plan, run_search
from ablate.search.summary import launch_test, report_search, report_stages
from ablate.search.trials import SearchFacts

__all__ = [
    "ConfirmJob",
    "SearchFacts",
    "SearchJob",
    "StoppedAsPruned",
    "around_grid",
    "launch_test",
    "plan",
    "report_search",
    "report_stages",
    "run_confirm",
    "run_search",
]
