"""Bounds of every size-like config value and of names, and the pydantic config all models share.

The bounds are far above anything a real run uses; they exist so that a typo or a hostile file
(``optim.epochs=99999999999999999999999``, a batch of 10^12 images) is refused by validation
with a message naming the field, instead of overflowing in torch or allocating until the machine
stops answering.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field

MAX_EPOCHS = 100_000
MAX_BATCH = 65_536  # images per batch
MAX_STEPS = 10_000  # attack iterations
MAX_SEED = 2**32 - 1  # numpy's RandomState (sklearn splits, Optuna) takes no more
MAX_IMAGES = 10_000_000  # sizes of subsets and hold-outs
MAX_TRIALS = 100_000  # trials of a search, concurrent trials, retries
# Cells (rows x seeds) of a grid, or of a search's confirm stage (top_k x seeds). Lower than
# MAX_TRIALS: every cell's config is validated before anything starts (a few ms each), so a
# 10^6-cell grid would hold the terminal for minutes before its first line of output.
MAX_CELLS = 10_000
MAX_MODEL_KWARG = 4_096  # integer architecture arguments: width, depth, widen factor

# Unknown keys are errors, and so are inf/nan: no field is meaningful at infinity, and YAML's
# `.inf`/`.nan` would otherwise slip through every `gt=0`/`le=1` bound (nan compares false).
# Strict types: no value is converted to another type (`optim.epochs=true` is not 1 epoch,
# `2.5` or `2.0` is not the integer 2, the text '3' is not a number), except an integer where a
# float is expected (`lr: 1`).
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


def without_defaults(dumped: Any, late: Mapping[str, Any]) -> Any:
    """A model's dump without the fields of ``late`` (a field added after configs were
    already hashed -> the value that keeps the old behaviour) that hold that value: hashes,
    run names, teacher cache keys and resumable searches of older configs stay what they
    were."""
    if isinstance(dumped, dict):
        for key, default in late.items():
            if key in dumped and dumped[key] == default:
                dumped.pop(key)
    return dumped

Epoch = Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="a seed in [0, 2^32)")]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def safe_name(value: str) -> str:
    """``value`` if it is a safe slug, else ValueError."""
    # A name becomes a directory (runs/NAME-HASH, Ray's STORAGE/NAME-HASH) and an MLflow
    # experiment whose artifacts live in mlartifacts/NAME: `../../x` would write outside.
    if not _NAME.fullmatch(value) or ".." in value:
        shown = repr(value if len(value) <= 60 else value[:60] + "...")  # a 100 KB name
        raise ValueError(f"{shown} is not a safe name: 1-100 letters, digits, '.', '_' or "
                         "'-', starting with a letter or digit, without '..'")
    return value


SafeName = Annotated[str, AfterValidator(safe_name)]


def _bounded_kwarg(value: int | float | str) -> int | float | str:
    # Widths and depths multiply into parameter counts: 10^6 would allocate until the machine
    # stops answering rather than fail.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_MODEL_KWARG:
        raise ValueError(f"{value} is beyond the limit of {MAX_MODEL_KWARG}")
    return value


ModelKwarg = Annotated[int | float | str, AfterValidator(_bounded_kwarg)]
