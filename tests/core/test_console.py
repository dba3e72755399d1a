"""Console folding: every line fits, and no word is lost, split or reordered."""

from __future__ import annotations

import random

from ablate.core.console import clock, fit


def test_fit_folds_every_line_and_keeps_every_word() -> None:
    rng = random.Random(0)
    for _ in range(200):
        words = ["".join(rng.choices("abc;,()", k=rng.randint(1, 15))) for _ in range(60)]
        text = "  " + " ".join(words) + "\nshort\n" + "; ".join(words[:20])
        out = fit(text, width=50)
        assert all(len(line) <= 50 for line in out.splitlines())
        assert out.split() == text.split()


def test_fit_prefers_clauses_and_indents_continuations() -> None:
    line = "objective: W-acc (clean weight 0.5); searcher: Optuna TPE (seed 0, 10 startup)"
    assert fit(line, width=60).splitlines() == [
        "objective: W-acc (clean weight 0.5);",
        "    searcher: Optuna TPE (seed 0, 10 startup)"]
    assert fit("  a " + "b" * 30, width=20).splitlines() == ["  a", "      " + "b" * 30]
    assert fit("x" * 30, width=20) == "x" * 30  # a word wider than the line: left whole
    assert fit("fits", width=20) == "fits"


def test_clock() -> None:
    assert (clock(245), clock(3720), clock(-1)) == ("4m05s", "1h02m", "0m00s")
