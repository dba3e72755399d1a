"""Tables and console lines of results: a table as Markdown, CSV and Parquet, the push set's
note, and the one-line summaries of an epoch and of a final test."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ablate import names
from ablate.core.catalog import ATTACK_LABELS


def push_cell(t: Mapping[str, Any]) -> str:
    """A table row's push column: :func:`push_note`, or '–' without a push term."""
    return push_note(t.get("push_active"), t.get("push_empty")) or "–"


def write_table(table: Sequence[Mapping[str, Any]], markdown: str, directory: str | os.PathLike,
                stem: str = "table") -> list[Path]:
    """Write <stem>.md, <stem>.csv (NaN/None as empty) and <stem>.parquet into directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path, parquet = (out / f"{stem}.{ext}" for ext in ("md", "csv", "parquet"))
    md.write_text(markdown)
    keys = list(table[0]) if table else []
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys)
        for t in table:
            writer.writerow([_csv_value(t.get(k)) for k in keys])
    pq.write_table(pa.Table.from_pylist([dict(t) for t in table]), parquet)
    return [md, csv_path, parquet]


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, list):  # per-seed values
        return ";".join(f"{x:g}" for x in v)
    return v


# A push term that acted in fewer than 10% of the batches is reported as inactive.
PUSH_INACTIVE_EMPTY_FRAC = 0.9


def push_inactive(empty_frac: float | None) -> bool:
    return empty_frac is not None and empty_frac > PUSH_INACTIVE_EMPTY_FRAC


def push_note(active_frac: float | None, empty_frac: float | None) -> str:
    """'J 31.2% of samples, empty in 0% of batches' (fractions in, percentages out; no '|', it
    sits in Markdown tables); '' if unknown."""
    if active_frac is None or empty_frac is None:
        return ""
    if push_inactive(empty_frac):
        return (f"push inactive: J empty in {100 * empty_frac:.0f}% of batches "
                f"({100 * active_frac:.1f}% of samples)")
    return f"J {100 * active_frac:.1f}% of samples, empty in {100 * empty_frac:.0f}% of batches"


def progress_line(m: Mapping[str, float], epochs: int, seconds: float) -> str:
    """The console line of one ``ablate train`` epoch."""
    pct = {k.removeprefix(names.VAL): 100 * v for k, v in m.items()
           if k.startswith(names.VAL)}
    loss = m.get(f"{names.TRAIN}loss", 0)
    line = (f"epoch {int(m[names.EPOCH]):>3}/{epochs}  loss {loss:+.4f}  "
            f"val clean {pct['clean_acc']:5.1f}%  PGD {pct['robust_acc']:5.1f}%  "
            f"W {pct['w_acc']:5.1f}%")
    if "robust_teacher_clean_acc" in pct:
        line += (f"  | t' {pct['robust_teacher_clean_acc']:.1f}/"
                 f"{pct['robust_teacher_robust_acc']:.1f}%  "
                 f"t {pct['clean_teacher_clean_acc']:.1f}/{pct['clean_teacher_robust_acc']:.1f}%")
    active, empty = (f"{names.TRAIN}{key}_frac" for key in names.PUSH_KEYS)
    if active in m:  # how much the push term acted this epoch
        line += f"  | push J {100 * m[active]:.0f}%, empty {100 * m[empty]:.0f}%"
    return line + f"  {seconds:.1f}s"


def attack_line(test: Mapping[str, float], attacks: Sequence[str]) -> str:
    """One console line of the final protocol's accuracies (``<attack>_acc`` keys), or ''."""
    parts = [f"{ATTACK_LABELS[a]} {100 * test[f'{a}_acc']:.1f}%" for a in attacks
             if f"{a}_acc" in test]
    return ("test under attack: " + "  ".join(parts)) if parts else ""


def test_line(test: Mapping[str, float]) -> str:
    """Clean, PGD_SAT and its W-R of a final test, for a console line."""
    return (f"clean {100 * test['clean_acc']:.1f}%  PGD_SAT {100 * test['pgd_sat_acc']:.1f}%  "
            f"W-R {100 * test['pgd_sat_wr']:.1f}%")


