"""A search's trials as rows (one per trial: status, sampled values under dot-free column
names, best validation metrics), from Ray's results or back from the MLflow child runs, and as
a Markdown table; what a search's summary needs to know of its spec (:class:`SearchFacts`).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from pydantic import ValidationError
from ray import tune
from ray.tune.result import TRAINING_ITERATION

from ablate import names
from ablate.config import Param, SearchSpec, YamlRefused, parse_yaml
from ablate.core.errors import ConfigError
from ablate.report import push_cell

optuna.logging.set_verbosity(optuna.logging.WARNING)


def describe(config: dict[str, Any]) -> str:
    return " ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float)
                    else f"{k.split('.')[-1]}={v}" for k, v in sorted(config.items()))


ENDED = ("finished", "stopped", "failed")  # statuses of trials that ended


@dataclass(frozen=True)
class SearchFacts:
    """What a search's summary needs from its spec: from the spec of a running search, or
    rebuilt from its parent run's params and tags by ``ablate report``."""

    name: str  # the MLflow experiment
    digest: str  # the spec hash
    space: dict[str, Param]
    multi: bool  # objective [clean_acc, robust_acc]
    epochs: int  # of a trial that is not stopped early
    attacks: tuple[str, ...] = ()  # eval.attacks of the final test

    @classmethod
    def of(cls, spec: SearchSpec) -> SearchFacts:
        return cls(spec.name, spec.digest(), dict(spec.space), spec.objective.multi,
                   spec.base.optim.epochs, tuple(spec.base.eval.attacks))

    @classmethod
    def from_run(cls, info: dict[str, Any]) -> SearchFacts:
        """From a search's parent run (:meth:`Tracker.run_info`): its params are the spec
        flattened (``search.space.method.alpha.low``), each value as ``str()`` wrote it."""
        params, fields = info["params"], set(Param.model_fields)
        space_prefix = names.param(names.PARAMS_SEARCH, "space", "")
        epochs = names.param(names.PARAMS_BASE, "optim.epochs")
        raw: dict[str, dict[str, Any]] = {}
        for name, text in params.items():
            key, _, field = name.removeprefix(space_prefix).rpartition(".")
            if name.startswith(space_prefix) and key and field in fields:
                raw.setdefault(key, {})[field] = literal(text)
        if not raw or epochs not in params:
            raise ConfigError(f"run {info['run_id']}: its params do not hold a search spec "
                              f"({space_prefix}*, {epochs})")
        order = literal(params.get(names.param(names.PARAMS_SEARCH, names.SPACE_ORDER),
                                   "[]"))  # older runs: none
        order = order if isinstance(order, list) else []
        raw = {k: raw[k] for k in order if k in raw} | raw
        try:
            space = {k: Param.model_validate(v) for k, v in raw.items()}
        except ValidationError as exc:
            raise ConfigError(f"run {info['run_id']}: its search space does not parse: "
                              f"{exc.errors()[0]['msg']}") from None
        metric = params.get(names.param(names.PARAMS_SEARCH, "objective.metric"), "w_acc")
        attacks = params.get(names.param(names.PARAMS_BASE, "eval.attacks"), "[]")
        return cls(info["experiment"], info["tags"].get(names.SPEC_HASH, ""), space,
                   isinstance(literal(metric), list), int(params[epochs]),
                   tuple(literal(attacks) or ()))


def literal(text: str) -> Any:
    """A param value back from ``str()``: numbers, booleans, None, lists; else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def param_columns(keys: Iterable[str]) -> dict[str, str]:
    """The trials table's column of each searched value: ``param/`` and the space key with
    every dot made an underscore (``method.alpha`` -> ``param/method_alpha``, ``push_temp`` ->
    ``param/push_temp``). MLflow's table view reads a dot in a column name as a path into
    nested data and shows such a column blank. Should two keys then share a name (``a.b``
    beside ``a_b``), the later in sorted order gets ``_2`` (``_3``, ...)."""
    keys = list(keys)
    taken: dict[str, str] = {}
    for key in sorted(keys):
        name = base = names.PARAM_COLUMN + key.replace(".", "_")
        n = 1
        while name in taken.values():
            n += 1
            name = f"{base}_{n}"
        taken[key] = name
    return {k: taken[k] for k in keys}


def sampled_values(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """A trials-table row's sampled values, keyed by the space keys again."""
    return {k: row.get(c) for k, c in columns.items()}


def trials_table(spec: SearchSpec, results: tune.ResultGrid) -> list[dict[str, Any]]:
    """One row per trial (from Ray's results): trial number, trial id, status, epochs, sampled
    values (:func:`param_columns`), best-epoch and last-epoch validation metrics, push set."""
    columns = param_columns(spec.space)
    rows = []
    for result in results:
        m, cfg = result.metrics or {}, result.config or {}
        epochs = int(m.get(TRAINING_ITERATION, 0))
        status = ("failed" if result.error else
                  "stopped" if epochs < spec.base.optim.epochs else "finished")
        number = Path(result.path).name.split("_")[1] if result.path else "0"
        row: dict[str, Any] = {"trial": int(number) if number.isdigit() else 0,
                               "trial_id": m.get("trial_id", ""), "status": status,
                               "epochs": epochs}
        row.update({columns[k]: cfg.get(k) for k in spec.space})
        row.update(_metrics(m))
        row["error"] = str(result.error).strip().splitlines()[-1][:300] if result.error else ""
        rows.append(row)
    rows.sort(key=lambda r: (r["trial"], r["trial_id"]))
    return rows


def _metrics(m: dict[str, Any]) -> dict[str, float | None]:
    row: dict[str, float | None] = {}
    for key in (names.OBJECTIVE, *names.PARETO, names.VAL_W, names.VAL_CLEAN, names.VAL_ROBUST):
        row[key] = float(m[key]) if m.get(key) is not None else None
    for key in names.PUSH_KEYS:  # over the epochs the trial trained
        value = m.get(names.run_mean(key))
        row[key] = float(value) if value is not None else None
    return row


def trials_from_runs(facts: SearchFacts, children: list[dict[str, Any]]
                     ) -> list[dict[str, Any]]:
    """The rows of :func:`trials_table` from the trials' MLflow child runs (their tags
    ``trial_id``, ``trial_number``, ``sampled``, ``epochs_trained``, ``stopped_early``,
    ``error`` and latest metrics), for ``ablate report``: no Ray state needed. A trial of an
    interrupted search that did not end has the status ``interrupted`` (or ``running``)."""
    columns = param_columns(facts.space)
    rows = []
    for run in children:
        tags, m = run["tags"], run["metrics"]
        if names.TRIAL_ID not in tags:
            continue
        try:
            sampled = parse_yaml(tags.get(names.SAMPLED) or "{}")
        except YamlRefused:
            sampled = None
        sampled = sampled if isinstance(sampled, dict) else {}
        if names.EPOCHS_TRAINED in tags:
            epochs = int(tags[names.EPOCHS_TRAINED])
        else:  # failed or interrupted: the epochs it logged
            epochs = int(m[names.EPOCH]) if names.EPOCH in m else 0
        stopped = names.is_set(tags.get(names.STOPPED_EARLY))
        status = {"FINISHED": "stopped" if stopped else "finished",
                  "FAILED": "failed", "KILLED": "interrupted"}.get(run["status"], "running")
        number = tags.get(names.TRIAL_NUMBER, "0")
        row: dict[str, Any] = {"trial": int(number) if number.isdigit() else 0,
                               "trial_id": tags[names.TRIAL_ID], "status": status,
                               "epochs": epochs}
        row.update({columns[k]: sampled.get(k) for k in facts.space})
        row.update(_metrics(m))
        row["error"] = tags.get(names.ERROR, "")[:300]
        rows.append(row)
    rows.sort(key=lambda r: (r["trial"], r["trial_id"]))
    return rows


def trials_markdown(rows: Sequence[Mapping[str, Any]], params: Sequence[str]) -> str:
    """A search's trials as a Markdown table (``trials.md``; the MLflow UI previews it): trial,
    status, epochs, the sampled values (``params``: their column names), validation W-acc,
    clean and PGD accuracy at the best epoch (percent), Pareto membership, the push set, error."""
    header = ["trial", "status", "epochs", *params, "val W-acc (%)", "val clean (%)",
              "val PGD (%)", "Pareto", "push", "error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r["trial"]), str(r["status"]), str(r["epochs"]),
                 *(_value(r.get(p)) for p in params),
                 *(_percent(r.get(k)) for k in (names.OBJECTIVE, *names.PARETO)),
                 "yes" if r.get("pareto") else "", push_cell(r), str(r.get("error") or "")]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    note = ("val W-acc, clean and PGD: at each trial's best epoch by W-acc so far (its "
            "checkpoint), on the validation split; stopped = stopped early by ASHA; param/ "
            "columns: the sampled values, named after the space key with its dots as "
            "underscores.")
    return "\n".join([*lines, "", note]) + "\n"


def _value(v: Any) -> str:
    if v is None:
        return "–"
    return format(v, ".4g") if isinstance(v, float) else str(v)


def _percent(v: float | None) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f}"


