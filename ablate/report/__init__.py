"""Results as files and lines, from metrics already computed: plots (matplotlib, plotly), tables
(Markdown, CSV, Parquet), console lines, and the statistics over seeds they show."""

from __future__ import annotations

from ablate.report.plots import (
    optuna_figures,
    plot_curves,
    plot_grid,
    plot_importances,
    plot_objective,
    plot_pareto,
    write_html,
)
from ablate.report.stats import NAN, paired_test, pareto_front, seed_stats
from ablate.report.tables import (
    attack_line,
    progress_line,
    push_cell,
    push_inactive,
    push_note,
    test_line,
    write_table,
)

__all__ = [
    "NAN",
    "attack_line",
    "optuna_figures",
    "paired_test",
    "pareto_front",
    "plot_curves",
    "plot_grid",
    "plot_importances",
    "plot_objective",
    "plot_pareto",
    "progress_line",
    "push_cell",
    "push_inactive",
    "push_note",
    "seed_stats",
    "test_line",
    "write_html",
    "write_table",
]
