"""One-line explanations of bad input: every pydantic error with the field as the user writes
it, close matches for unknown keys (``num_sample`` -> ``num_samples``; on a spec, an experiment
path -> ``base.optim.epochs``), and which command a file of another kind belongs to.

Plain pydantic and difflib, no torch: refusals stay fast.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from ablate.core.catalog import METHOD_NAMES
from ablate.core.errors import ConfigError, shorten

# --- Which kind of file ------------------------------------------------------------------------

KINDS = {"experiment": ("an experiment config", "train"), "search": ("a search spec", "search"),
         "grid": ("a grid", "grid")}


def file_kind(raw: dict[str, Any]) -> str | None:
    """What a YAML document is, by its top-level keys (None: cannot tell)."""
    if "space" in raw:
        return "search"
    if "rows" in raw:
        return "grid"
    if "student" in raw or "teachers" in raw:
        return "experiment"
    return None


def check_kind(raw: dict[str, Any], path: str | Path, expected: str) -> None:
    """Refuse a file of another kind with the command that takes it, rather than with the
    dozen missing fields the wrong model would report."""
    kind = file_kind(raw)
    if kind is not None and kind != expected:
        what, command = KINDS[kind]
        raise ConfigError(f"{path} is {what}: use `ablate {command} {path}`")


MAX_FIELDS = 6  # fields listed on the line; the rest are counted ("... and 9994 more fields")


def format_validation_error(exc: ValidationError, source: str,
                            model: type[BaseModel] | None = None) -> str:
    """Every pydantic error on one line: 'SOURCE: field `a.b`: message; field `c`: ...'.
    ``model``, the model that was validated, lets an unknown key suggest close matches.
    At most :data:`MAX_FIELDS` fields are spelled out (10,000 unknown keys are one short line,
    and only the shown ones pay for a suggestion); the others are counted."""
    fields: dict[tuple[str, int], list[str]] = {}
    hidden: set[str] = set()
    for i, err in enumerate(exc.errors(include_url=False)):
        parts, alternative = _shown_loc(model, err["loc"])
        loc = shorten(".".join(parts) or "<root>", 80)
        key = (loc, -1 if alternative else i)
        if key not in fields and len(fields) >= MAX_FIELDS:
            hidden.add(loc)
            continue
        # A value that fits no member of a union gets one error per member: one field, "or".
        msgs = fields.setdefault(key, [])
        msg = _message(model, err)
        if msg not in msgs:
            msgs.append(msg)
    hidden -= {loc for loc, _ in fields}
    more = f"; ... and {len(hidden)} more field{'s' * (len(hidden) > 1)}" if hidden else ""
    return f"{source}: " + "; ".join(f"field `{loc}`: {' or '.join(msgs)}"
                                     for (loc, _), msgs in fields.items()) + more


_TYPE_ERRORS = ("int_type", "float_type", "bool_type", "string_type")


def _message(model: type[BaseModel] | None, err: Any) -> str:
    """One pydantic error's message, with the close matches of an unknown key or method."""
    msg = str(err["msg"]).replace("\n", " ")
    if err["type"] in _TYPE_ERRORS:  # strict types: say what was given (true, "yes", 2.0)
        msg += f", got {shorten(json.dumps(err.get('input'), default=str), 40)}"
    if err["type"] == "extra_forbidden":
        return "unknown key" + _did_you_mean(model, err["loc"], err.get("input"))
    if err["type"] == "union_tag_invalid":  # method.name=trade
        ctx = err.get("ctx") or {}
        tags = [t.strip(" '\"") for t in str(ctx.get("expected_tags", "")).split(",")]
        match = close_match(str(ctx.get("tag")), tags)
        msg += f" (did you mean `{match}`?)" if match else ""
    return msg


def section(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The model of the group of fields the dotted ``key`` names in ``model`` (``optim``,
    ``base.optim``, ``teachers.clean``; a union's first member), if that group always exists,
    so that setting it to ``{}`` could only reset every field in it to its default. None for
    a plain field, a dict (``student.kwargs``) or an optional group (a search's ``confirm``:
    ``confirm={}`` turns it on)."""
    ann: Any = model
    for part in key.split("."):
        ann = _step(ann, part)[0]
        if ann is None:
            return None
    while get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    if _is_union(ann) and type(None) in get_args(ann):
        return None
    members = _models(ann)
    return members[0] if members else None


def _strip(ann: Any) -> Any:
    """An annotation without ``Annotated`` and ``Optional``."""
    while True:
        if get_origin(ann) is Annotated:
            ann = get_args(ann)[0]
        elif _is_union(ann) and len(members := [a for a in get_args(ann)
                                                if a is not type(None)]) == 1:
            ann = members[0]
        else:
            return ann


def _is_union(ann: Any) -> bool:
    return get_origin(ann) in (Union, UnionType)


def _item_type(ann: Any) -> Any:
    """What a list or dict annotation holds (None for anything else)."""
    origin = get_origin(ann)
    if origin in (list, tuple, set, frozenset):
        return get_args(ann)[0] if get_args(ann) else Any
    if origin is dict:
        return get_args(ann)[1] if get_args(ann) else Any
    return None


def _models(ann: Any) -> list[type[BaseModel]]:
    members = get_args(ann) if _is_union(ann) else (ann,)
    return [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]


def _fields(ann: Any) -> dict[str, Any]:
    """Field name -> annotation of the models ``ann`` may hold (a union: all of them)."""
    out: dict[str, Any] = {}
    for m in _models(ann):
        out.update({k: f.annotation for k, f in m.model_fields.items() if k not in out})
    return out


def _tagged(ann: Any, part: str) -> type[BaseModel] | None:
    """The member of a discriminated union that ``part`` names (``ciard``), if any."""
    for m in _models(ann) if _is_union(ann) else ():
        name = m.model_fields.get("name")
        if name is not None and name.default == part:
            return m
    return None


def _step(ann: Any, part: str) -> tuple[Any, bool]:
    """One step of a pydantic error location: the next annotation, and whether ``part`` is a
    label pydantic inserted (a union member: ``ciard``, ``float``) rather than a key."""
    ann = _strip(ann)
    if ann is None or ann is Any:
        return None, False
    item = _item_type(ann)
    if item is not None:
        return item, False
    fields = _fields(ann)
    if part in fields:
        return fields[part], False
    if _is_union(ann):
        return _tagged(ann, part), True
    return None, False


def _shown_loc(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> tuple[list[str], bool]:
    """An error location as the user writes the path (``method.ciard.lam.float`` ->
    ``method.lam``), and whether a union member's label was dropped from it."""
    out, ann, alternative = [], model, False
    for part in map(str, loc):
        if part.startswith("function-"):  # a validator's wrapper, not a key
            continue
        if model is None:  # no types to go by: drop the method tag only
            if not (out and out[-1] == "method" and part in METHOD_NAMES):
                out.append(part)
            continue
        ann, label = _step(ann, part)
        alternative |= label and ann is None  # a scalar member (lam: float | 'auto')
        if not label:
            out.append(part)
    return out, alternative


def _did_you_mean(model: type[BaseModel] | None, loc: tuple[Any, ...], value: Any) -> str:
    """' (did you mean `a.b`?)' for an unknown key: close matches among the keys allowed
    there, and on a spec's top level the experiment's paths under ``base``."""
    if model is None:
        return ""
    parent: Any = model
    for part in map(str, loc[:-1]):
        if not part.startswith("function-"):
            parent = _step(parent, part)[0]
    shown = _shown_loc(model, loc[:-1])[0]
    parts = [str(loc[-1]), *_only_path(value)]
    found = [".".join([*shown, *fixed]) for fixed in [_fix(parent, parts)] if fixed]
    if not shown and parts[0] == "base" and "base" not in model.model_fields:
        # `ablate train c.yaml base.optim.epochs=3`: a spec's path on an experiment
        found += [".".join(fixed) for fixed in [_fix(model, parts[1:])] if fixed]
    base = model.model_fields.get("base") if not shown else None
    if base is not None and _fields(base.annotation):
        fixed = _fix(base.annotation, parts)
        exact = parts[0] in _fields(base.annotation)
        if fixed:
            found.insert(0 if exact else len(found), "base." + ".".join(fixed))
    return f" (did you mean {' or '.join(f'`{f}`' for f in found[:2])}?)" if found else ""


def _only_path(value: Any) -> list[str]:
    """The keys down to the single leaf of ``{epochs: 3}`` (what ``optim.epochs=3`` made)."""
    out = []
    while isinstance(value, dict) and len(value) == 1:
        key, value = next(iter(value.items()))
        out.append(str(key))
    return out


def _fix(ann: Any, parts: list[str]) -> list[str] | None:
    """``parts`` as a path of ``ann`` with every unknown key replaced by its closest match;
    the longest prefix that still resolves, None when the first key has no match."""
    out: list[str] = []
    for part in parts:
        ann = _strip(ann)
        item = _item_type(ann)
        if item is not None:
            out.append(part)
            ann = item
            continue
        fields = _fields(ann)
        name = part if part in fields else close_match(part, fields)
        if name is None:
            break
        out.append(name)
        ann = fields[name]
    return out or None


def close_match(word: str, options: Iterable[str]) -> str | None:
    """The closest of ``options`` to a mistyped ``word`` (difflib), if any is close."""
    found = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return found[0] if found else None


def suggest_path(tree: dict[str, Any], path: str) -> str:
    """' (did you mean `a.b`?)' for a dotted path missing from a plain tree (a dumped
    config), each key replaced by its closest match; '' when a key has none."""
    node: Any = tree
    out = []
    for part in path.split("."):
        name = (part if isinstance(node, dict) and part in node
                else close_match(part, node) if isinstance(node, dict) else None)
        if name is None:
            return ""
        out.append(name)
        node = node[name]
    return f" (did you mean `{'.'.join(out)}`?)"
