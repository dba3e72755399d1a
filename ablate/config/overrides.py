"""``key.sub=value`` overrides: parsed as YAML values, set at dotted paths of a raw config, and
what happens when one switches the method (the old method's fields the new one lacks are
dropped, with a note saying which).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel

from ablate.config.explain import section
from ablate.config.safe_yaml import YamlRefused, parse_yaml
from ablate.core.catalog import METHOD_PARAMS
from ablate.core.errors import ConfigError

Config = TypeVar("Config", bound=BaseModel)  # the experiment config (any validated model)


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b.c=value`` as its key and its value parsed as YAML (one-line ConfigError)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {shown_override(item)}: expected key.sub=value")
    try:
        return key, parse_yaml(value)
    except YamlRefused as exc:
        raise ConfigError(f"override {shown_override(item)}: {exc}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict copy.

    Keys that themselves contain dots (a search space's ``method.alpha``) are matched as a whole:
    ``space.method.alpha.high=0.9`` reaches ``space["method.alpha"]["high"]``.
    """
    out = json.loads(json.dumps(raw))
    for item in overrides:
        key, value = parse_override(item)
        set_path(out, key, value, where=f"override {shown_override(item)}")
    return out


def refuse_section_resets(overrides: list[str] | None, model: type[BaseModel]) -> None:
    """Refuse ``optim={}`` (``base.optim={}``, ``overrides.optim={}`` on a spec): an empty
    mapping replaces the whole group, so every field in it silently went back to its default
    (300 epochs) instead of what the file set. A whole non-empty mapping stays allowed: it
    says what it holds."""
    for item in overrides or []:
        key, value = parse_override(item)
        if value != {} or not isinstance(value, dict):
            continue
        path = "base." + key.removeprefix("overrides.") if key.startswith("overrides.") else key
        group = section(model, path)
        if group is None:
            continue
        example = next((k for k in group.model_fields if k != "name"), "name")
        raise ConfigError(f"override {shown_override(item)}: `{key}={{}}` would reset every "
                          f"field of `{key}` to its default; set fields one by one, e.g. "
                          f"{key}.{example}=VALUE")


def set_path(tree: dict[str, Any], key: str, value: Any, *, where: str = "") -> None:
    """Set ``tree[a][b][c] = value`` for ``key = "a.b.c"`` in place, the value as it is (no
    text round trip: 1e-05 stays a float). Keys that contain dots (``space["method.alpha"]``)
    are matched whole; missing sections are created."""
    node, parts = tree, _split_key(tree, key.split("."))
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where or key}: {part!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def shown_override(item: str, limit: int = 60) -> str:
    """An override as quoted in an error, shortened: the line must stay readable."""
    return repr(item if len(item) <= limit else item[:limit] + "...")


def _split_key(tree: dict[str, Any], parts: list[str]) -> list[str]:
    """Group dotted parts into the keys present in ``tree`` (longest match first)."""
    out, node, i = [], tree, 0
    while i < len(parts):
        j = next((j for j in range(len(parts), i, -1)
                  if isinstance(node, dict) and ".".join(parts[i:j]) in node), i + 1)
        out.append(".".join(parts[i:j]))
        node = node.get(out[-1]) if isinstance(node, dict) else None
        i = j
    return out


# --- Switching the method ------------------------------------------------------------------------

_PARAMS = {p.model_fields["name"].default: p for p in METHOD_PARAMS}
_NOTES = "_ablate_notes"  # kept out of the fields: never dumped, hashed or compared


def method_name(tree: dict[str, Any]) -> str | None:
    """The method a raw experiment names (a ``method`` without ``name`` is CIARD)."""
    method = tree.get("method")
    return method.get("name", "ciard") if isinstance(method, dict) else None


def switch_method(tree: dict[str, Any], before: str | None, keys: Iterable[str]) -> str | None:
    """After overrides (dotted ``keys``) changed ``method.name`` from ``before``, drop the old
    method's fields the new one lacks, except those the overrides set (a wrong one stays an
    error). Returns the one-line note saying what was dropped and what was kept."""
    keys = list(keys)
    method, after = tree.get("method"), method_name(tree)
    old, new = _PARAMS.get(before or ""), _PARAMS.get(after or "")
    if (old is None or new is None or old is new or not isinstance(method, dict)
            or "method" in keys):  # a whole new `method` mapping holds only what was written
        return None
    explicit = {k.removeprefix("method.").split(".")[0] for k in keys if k.startswith("method.")}
    inherited = [k for k in method if k != "name" and k not in explicit]
    dropped = [k for k in inherited if k not in new.model_fields]
    kept = [k for k in inherited if k in new.model_fields]
    for key in dropped:
        method.pop(key)
    old_label, new_label = _label(old), _label(new)
    parts = []
    if dropped:
        parts.append(f"dropped {old_label} fields {', '.join(dropped)} (not {new_label} "
                     "parameters)")
    if kept:  # same name, maybe another meaning (CIARD's beta 0.5 is no TRADES beta 6)
        values = ", ".join(f"{k}={method[k]!r}" for k in kept)
        defaults = ", ".join(f"{k}={new.model_fields[k].default!r}" for k in kept)
        parts.append(f"kept {values} from the {old_label} settings ({new_label} defaults: "
                     f"{defaults})")
    return f"method.name={after}: {'; '.join(parts)}" if parts else None


def _label(params: type[BaseModel]) -> str:
    return str(getattr(params, "summary", params.__name__)).split(" ", 1)[0]


def with_notes(cfg: Config, notes: list[str]) -> Config:
    """Attach what loading changed on its own (dropped method fields) to ``cfg``; the CLI
    prints it with :func:`config_warnings`."""
    if notes:
        cfg.__dict__[_NOTES] = list(notes)
    return cfg


def config_notes(cfg: BaseModel) -> list[str]:
    return list(cfg.__dict__.get(_NOTES, ()))
