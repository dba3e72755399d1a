"""YAML parsing for user input (config, spec and grid files, ``key=value`` overrides).

``yaml.safe_load`` never runs code, but it still lets a few hundred bytes hang the program: an
alias bomb ("billion laughs") is composed in linear time into a graph of shared references that
every later step (the JSON copy of the overrides, pydantic, hashing) expands exponentially. Our
configs never need aliases, so :func:`parse_yaml` refuses the first one. It also keeps
timestamps as text and refuses values that are not plain JSON data (``!!binary``, ``!!set``), so
every later step sees only dicts, lists, strings, numbers, booleans and null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ablate.core.errors import ConfigError

MAX_YAML_BYTES = 1 << 20  # config files are a few KiB; anything this large is not a config


class YamlRefused(ValueError):
    """The text is not YAML we accept; the message is one line, with the line number if known."""


class _AliasRefused(yaml.YAMLError):
    def __init__(self, event: yaml.events.AliasEvent) -> None:
        super().__init__()
        self.problem = (f"YAML aliases are not allowed (found *{event.anchor}; write the "
                        "value out in full)")
        self.problem_mark = event.start_mark


class NoAliasLoader(yaml.SafeLoader):
    """``SafeLoader`` that raises at the first alias instead of composing it."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            raise _AliasRefused(self.peek_event())
        return super().compose_node(parent, index)


# `2024-01-01` stays a string: a date object would break the JSON round trip of overrides.
NoAliasLoader.add_constructor("tag:yaml.org,2002:timestamp",
                              lambda loader, node: loader.construct_scalar(node))


def parse_yaml(text: str) -> Any:
    """Parse ``text``; every failure is a :class:`YamlRefused` with a one-line message."""
    try:
        value = yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
        json.dumps(value)  # plain data only (and not nested beyond the recursion limit)
    except _AliasRefused as exc:
        raise YamlRefused(f"line {exc.problem_mark.line + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise YamlRefused(f"{where}malformed YAML: {problem}") from None
    except RecursionError:
        raise YamlRefused("malformed YAML: nested too deeply") from None
    except (TypeError, ValueError) as exc:  # !!binary/!!set; ints beyond Python's digit limit
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise YamlRefused(f"not plain data: {reason}") from None
    return value


class NoAliasDumper(yaml.SafeDumper):
    """``SafeDumper`` that writes a value shared by two keys out twice instead of as an anchor
    and alias, so what we write (``config.yaml`` beside a checkpoint) reads back here."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(value: Any, *, sort_keys: bool = False) -> str:
    """``value`` (plain data) as YAML that :func:`parse_yaml` accepts."""
    return yaml.dump(value, Dumper=NoAliasDumper, sort_keys=sort_keys, allow_unicode=True)
def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (no aliases, plain data, at most 1 MiB); a missing, oversized or
    malformed file is a one-line ConfigError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    size = p.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{p}: {size} bytes; a config file is at most {MAX_YAML_BYTES} bytes")
    try:
        raw = parse_yaml(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except YamlRefused as exc:
        raise ConfigError(f"{p}: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(raw).__name__}")
    return raw


