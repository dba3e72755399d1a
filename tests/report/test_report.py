"""Report helpers: the Pareto front against a brute-force check, plots written as PNG files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ablate.grid.table import aggregate
from ablate.report import (
    optuna_figures,
    pareto_front,
    plot_grid,
    plot_importances,
    plot_objective,
    plot_pareto,
    write_html,
)
from ablate.search.trials import trials_markdown


def brute_force_front(points: list[tuple[float, float]]) -> set[int]:
    """Point i is on the front iff no j is >= in both coordinates and > in one."""
    front = set()
    for i, a in enumerate(points):
        if not any(b[0] >= a[0] and b[1] >= a[1] and (b[0] > a[0] or b[1] > a[1])
                   for b in points):
            front.add(i)
    return front


def test_pareto_front_matches_brute_force_on_random_and_tied_points() -> None:
    rng = random.Random(0)
    for n in (1, 2, 5, 30):
        pts = [(rng.choice([0.1, 0.2, 0.3, 0.4]), rng.choice([0.5, 0.6, 0.7])) for _ in range(n)]
        assert set(pareto_front(pts)) == brute_force_front(pts)
    assert pareto_front([(0.9, 0.1), (0.5, 0.5), (0.1, 0.9), (0.4, 0.4)]) == [0, 1, 2]
    assert pareto_front([(0.5, 0.5), (0.5, 0.5)]) == [0, 1]  # duplicates do not dominate


def test_plots_are_written(tmp_path: Path) -> None:
    values = [0.4, None, 0.6, 0.5]
    points = [(0.9, 0.2), (None, None), (0.8, 0.4), (0.7, 0.3)]
    front = [True, False, True, False]
    for path in (plot_objective(values, tmp_path / "o.png"),
                 plot_pareto(points, front, tmp_path / "p.png"),
                 plot_importances({"a": 0.7, "b": 0.3}, tmp_path / "i.png"),
                 plot_importances({}, tmp_path / "empty.png"),
                 plot_grid(grid_table(), ["clean_acc"], tmp_path / "g.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_plots_show_the_data_they_are_given(tmp_path: Path, monkeypatch) -> None:
    """What is drawn, not only that a PNG exists: points, the running best, the front, bars."""
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep each figure to look at it
    plot_objective([0.4, None, 0.6, 0.5], tmp_path / "o.png")
    plot_pareto([(0.9, 0.2), (None, None), (0.8, 0.4), (0.7, 0.3)], [True, False, True, False],
                tmp_path / "p.png")
    plot_importances({"a": 0.7, "b": 0.3}, tmp_path / "i.png")
    objective, pareto, importance = (f.axes[0] for f in figures)

    trials, failed = (c.get_offsets().ravel().tolist() for c in objective.collections)
    assert trials == pytest.approx([0, 40, 2, 60, 3, 50]) and failed == [1, 0]
    (running,) = objective.lines
    assert list(running.get_ydata()) == pytest.approx([40, 40, 60, 60])
    (points,) = pareto.collections
    assert points.get_offsets().ravel().tolist() == pytest.approx([90, 20, 80, 40, 70, 30])
    (front,) = pareto.lines
    assert list(front.get_xdata()) == [80, 90] and list(front.get_ydata()) == [40, 20]
    bars = {t.get_text(): b.get_width() for t, b in zip(importance.get_yticklabels(),
                                                        importance.patches, strict=True)}
    assert bars == {"b": 0.3, "a": 0.7}


def grid_table() -> list[dict]:
    cells = [{"row": r, "seed": s, "status": "finished", "clean_acc": 0.5 + 0.1 * s}
             for r in ("a", "b") for s in (0, 1)]
    return aggregate(cells, rows=["a", "b"], baseline="a", seeds=[0, 1, 2],
                     metrics=["clean_acc"], paper={"b": {"clean_acc": 55.0}})


def test_grid_plot_shows_every_seed_and_clips_intervals_to_0_100(tmp_path: Path,
                                                                 monkeypatch) -> None:
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at it
    cells = [{"row": "a", "seed": s, "status": "finished", "clean_acc": v}
             for s, v in enumerate((1.0, 0.02, 0.99))]  # CI beyond [0, 100] with 3 seeds
    table = aggregate(cells, rows=["a"], baseline="a", seeds=[0, 1, 2], metrics=["clean_acc"])
    assert table[0]["clean_acc_ci_high"] > 100 and table[0]["clean_acc_ci_low"] < 0
    plot_grid(table, ["clean_acc"], tmp_path / "g.png")
    ax = figures[0].axes[0]
    dots = sorted(y for c in ax.collections for _, y in c.get_offsets())
    assert dots == pytest.approx([2.0, 99.0, 100.0])
    (interval,) = ax.lines
    assert list(interval.get_ydata()) == [0.0, 100.0]


def test_trials_markdown_lists_every_trial_with_percentages_and_escapes_pipes() -> None:
    rows = [{"trial": 1, "status": "failed", "epochs": 0, "param/method_alpha": 0.123456,
             "param/optim_lr": 1e30, "val/best_w_acc": None, "val/best_clean_acc": None,
             "val/best_robust_acc": None, "pareto": False, "push_active": None,
             "push_empty": None, "error": "FloatingPointError: a | b"},
            {"trial": 2, "status": "stopped", "epochs": 2, "param/method_alpha": 0.5,
             "param/optim_lr": 0.1, "val/best_w_acc": 0.6, "val/best_clean_acc": 0.9,
             "val/best_robust_acc": 0.3, "pareto": True, "push_active": 0.2,
             "push_empty": 0.0, "error": ""}]
    md = trials_markdown(rows, ["param/method_alpha", "param/optim_lr"])
    lines = md.splitlines()
    assert lines[0] == ("| trial | status | epochs | param/method_alpha | param/optim_lr | "
                        "val W-acc (%) | val clean (%) | val PGD (%) | Pareto | push | error |")
    assert lines[2] == ("| 1 | failed | 0 | 0.1235 | 1e+30 | – | – | – |  | – | "
                        "FloatingPointError: a \\| b |")
    assert lines[3].startswith("| 2 | stopped | 2 | 0.5 | 0.1 | 60.0 | 90.0 | 30.0 | yes | J ")


def test_optuna_figures_are_written_as_offline_html(tmp_path: Path) -> None:
    import optuna

    space = {"a.b": optuna.distributions.FloatDistribution(0, 1),
             "c": optuna.distributions.CategoricalDistribution([1, 2])}
    single = optuna.create_study(direction="maximize")
    multi = optuna.create_study(directions=["maximize", "maximize"])
    for i in range(6):
        params = {"a.b": i / 6, "c": 1 + i % 2}
        single.add_trial(optuna.trial.create_trial(params=params, distributions=space,
                                                   value=i / 10))
        multi.add_trial(optuna.trial.create_trial(params=params, distributions=space,
                                                  values=[i / 10, 1 - i / 10],
                                                  user_attrs={"w": i / 5}))
    figures, skipped = optuna_figures(single, target_name="W", title="s",
                                      importance_title="importances at epoch 3")
    assert set(figures) == {"history", "parallel_coordinate", "slice", "contour",
                            "importances"} and not skipped
    assert figures["importances"].layout.title.text == "importances at epoch 3"
    assert figures["slice"].layout.title.text.startswith("s: ")
    figures, skipped = optuna_figures(multi, target=lambda t: t.user_attrs["w"],
                                      target_name="W", title="m", pareto_names=("x", "y"))
    assert "pareto_front" in figures and "history" in figures and not skipped
    path = write_html(figures, tmp_path / "optuna" / "figures.html", title="m")
    page = path.read_text()
    assert page.count("<h2>") == len(figures) and "<h2>pareto front</h2>" in page
    assert '<script src="http' not in page and len(page) > 1_000_000  # plotly.js inline
    assert page.count("plotly.js v") == 1  # once, not once per figure
