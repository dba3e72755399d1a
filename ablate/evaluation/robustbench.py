"""``ablate eval --robustbench-entry``: the JSON entry RobustBench's leaderboard keeps for a
model (``model_info/DATASET/THREAT_MODEL/NAME.json``, the fields of ``robustbench.utils.
ModelInfo``), written only for an evaluation that follows the leaderboard's protocol: standard
AutoAttack (L∞) on the whole CIFAR-10/100 test set (10,000 images) at ε = 8/255.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from ablate.config import ExperimentConfig
from ablate.core.catalog import DATASETS
from ablate.core.errors import ConfigError

LEADERBOARD_EPS = 8 / 255
TEST_IMAGES = 10_000  # CIFAR-10 and CIFAR-100 test sets
THREAT_MODEL = "Linf"  # the only threat model ablate attacks with


def check_protocol(cfg: ExperimentConfig, attacks: Sequence[str], autoattack_subset: int | None,
                   n_test: int, name: str = "") -> None:
    """Refuse (one-line ConfigError naming the reason) an evaluation whose numbers the
    leaderboard would not accept, or an entry name that is not a file name; called before any
    attack runs. ``name`` "" = the config's name."""
    if name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name):
        raise ConfigError(f"--robustbench-entry {name!r}: a model name is letters, digits, "
                          "'_', '.' and '-' (RobustBench's names are like Zhang2019Theoretically)")
    eps = cfg.eval.eps if cfg.eval.eps is not None else cfg.attack.eps
    reasons = []
    if DATASETS[cfg.data.name].zoo != cfg.data.name:  # RobustBench's own datasets
        reasons.append(f"data.name is {cfg.data.name}; the leaderboard is CIFAR-10/100")
    if not math.isclose(eps, LEADERBOARD_EPS, rel_tol=0, abs_tol=1e-6):
        reasons.append(f"eps is {eps:.6g} (eval.eps, else attack.eps); the leaderboard's L∞ "
                       f"eps is 8/255 = {LEADERBOARD_EPS:.6g}")
    if "autoattack" not in attacks:
        reasons.append("autoattack is not among --attacks; the leaderboard's robust accuracy "
                       "is standard AutoAttack's")
    elif autoattack_subset is not None and autoattack_subset < n_test:
        reasons.append(f"AutoAttack runs on the first {autoattack_subset} test images "
                       f"(eval.autoattack_subset); the leaderboard needs all: --aa-subset 0")
    if n_test != TEST_IMAGES:
        reasons.append(f"the test split has {n_test} images; the leaderboard needs the full "
                       f"{TEST_IMAGES}")
    if reasons:
        raise ConfigError("--robustbench-entry: not the leaderboard's protocol: "
                          + "; ".join(reasons))


def entry(cfg: ExperimentConfig, results: dict[str, dict[str, float]], *, link: str,
          n_test: int) -> dict[str, Any]:
    """The leaderboard entry (RobustBench's ModelInfo fields; accuracies as percent strings
    with two decimals, as ``robustbench.utils.update_json`` writes them)."""
    aa = results["autoattack"]
    assert int(aa["n"]) == n_test == TEST_IMAGES, (aa["n"], n_test)
    return {
        "link": link,
        "name": cfg.name,
        "authors": "",
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": cfg.data.name,
        "venue": "",
        "architecture": cfg.student.arch,
        "eps": "8/255",
        "clean_acc": _percent(results["clean"]["acc"]),
        "reported": "",
        "autoattack_acc": _percent(aa["robust"]),
        "footnote": f"{cfg.method.name} distillation, evaluated with ablate (standard "
                    f"AutoAttack, L∞ eps 8/255, {n_test} test images, seed {cfg.seed})",
    }


def entry_folder(cfg: ExperimentConfig) -> str:
    """The run's artifact folder of the entry: the leaderboard's model_info/ layout."""
    return f"robustbench/{cfg.data.name}/{THREAT_MODEL}"


def _percent(fraction: float) -> str:
    return str(round(100 * fraction, 2))
