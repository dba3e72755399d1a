"""Reading a search spec or grid file: its base experiment (a path relative to the spec, or
inline), the spec's ``overrides`` and the command line's ``key=value`` items, in one order
(:func:`read_spec`). The spec's own model validates the result (:mod:`.search_spec`,
:mod:`.grid_spec`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ablate.config.explain import KINDS, check_kind, close_match, file_kind
from ablate.config.overrides import (
    method_name,
    parse_override,
    set_path,
    shown_override,
    switch_method,
)
from ablate.config.safe_yaml import read_yaml
from ablate.config.space import Param
from ablate.core.errors import ConfigError


def read_spec(path: str | Path, overrides: list[str] | None = None,
              kind: str = "search") -> tuple[dict[str, Any], list[str]]:
    """A search spec (or grid: ``kind``) as a dict with its base inlined and overridden, and
    the notes of a method switch in the base (:func:`~ablate.config.switch_method`).

    The base is built in this order: the base file (``base: PATH``, relative to the spec; a
    command-line ``base=PATH``, relative to the working directory, replaces it); then the
    spec's ``overrides`` (the file's, updated by command-line ``overrides.KEY=VALUE``, ``KEY`` a
    whole dotted config path); then command-line ``base.KEY=VALUE``. Every other command-line
    override sets a field of the spec itself (``num_samples=4``; in the space, whose keys are
    dotted paths, ``space.method.alpha.high=0.9`` sets ``high`` of ``method.alpha``)."""
    source = str(path)
    raw = read_yaml(path)
    check_kind(raw, path, kind)
    items = [(item, *parse_override(item)) for item in overrides or []]
    if isinstance(raw.get("base"), str):
        raw["base"] = _read_base(Path(path).parent / raw["base"], source)
    for _, key, value in items:
        if key == "base":
            raw["base"] = _read_base(Path(value), source) if isinstance(value, str) else value
    for item, key, value in items:
        if key == "overrides":
            raw["overrides"] = value
        elif key.startswith("overrides."):  # one entry, set (or added last, so it wins) whole
            block = raw.setdefault("overrides", {})
            if not isinstance(block, dict):
                raise ConfigError(f"{source}: override {shown_override(item)}: `overrides` "
                                  "is not a mapping")
            block[key.removeprefix("overrides.")] = value
    base_items = [(key.removeprefix("base."), value) for _, key, value in items
                  if key.startswith("base.")]
    notes = _build_base(raw, base_items, source)
    for item, key, value in items:
        where = f"{source}: override {shown_override(item)}"
        if key.startswith("space.") and isinstance(raw.get("space"), dict):
            _set_space(raw["space"], key.removeprefix("space."), value, where)
        elif key.split(".")[0] not in ("base", "overrides"):
            set_path(raw, key, value, where=where)
    return raw, notes


def read_spec_dict(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """:func:`read_spec` without the notes (and without checking the file's kind)."""
    return read_spec(path, overrides, kind=file_kind(read_yaml(path)) or "search")[0]


def _read_base(path: Path, source: str) -> dict[str, Any]:
    raw = read_yaml(path)
    kind = file_kind(raw)
    if kind not in (None, "experiment"):
        raise ConfigError(f"{source}: field `base`: {path} is {KINDS[kind][0]}, not an "
                          "experiment config")
    return raw


def _build_base(raw: dict[str, Any], base_items: list[tuple[str, Any]], source: str
                ) -> list[str]:
    """Apply the spec's ``overrides``, then the command line's ``base.*``, to ``raw["base"]``
    in place; the note of a method switch, if any."""
    base, block = raw.get("base"), raw.get("overrides")
    if not isinstance(base, dict):
        return []  # validation names the field
    before = method_name(base)
    pairs = list(block.items()) if isinstance(block, dict) else []
    for key, value in pairs:  # a copy: the spec's own `overrides` must not change with base
        set_path(base, key, copy.deepcopy(value), where=f"{source}: field `overrides.{key}`")
    for key, value in base_items:
        set_path(base, key, value, where=f"{source}: override `base.{key}`")
    note = switch_method(base, before, [k for k, _ in pairs + base_items])
    return [note] if note else []


def _set_space(space: dict[str, Any], key: str, value: Any, where: str) -> None:
    """``space.KEY[.FIELD]=value``: ``KEY`` is a whole key of the space (a dotted config path),
    ``FIELD`` a field of its :class:`Param`; a new ``KEY`` without ``FIELD`` adds a parameter.
    A ``FIELD`` of a missing ``KEY`` is a typo, not a new nested mapping."""
    parts = key.split(".")
    if any(".".join(parts[:j]) in space for j in range(len(parts), 0, -1)):
        set_path(space, key, value, where=where)  # matches the longest existing key
        return
    if len(parts) > 1 and parts[-1] in Param.model_fields:
        missing = ".".join(parts[:-1])
        match = close_match(missing, space)
        hint = (f"did you mean `{match}`?" if match else
                f"the space has {', '.join(f'`{k}`' for k in space)}; add a parameter whole: "
                f"space.{missing}={{type: float, low: ..., high: ...}}")
        raise ConfigError(f"{where}: field `space`: no parameter `{missing}` in the space "
                          f"({hint})")
    space[key] = value


