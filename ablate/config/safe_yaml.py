"""YAML parsing for user input (config, spec and grid files, ``key=value`` overrides).

Every file and every override value is read by one loader, :class:`NoAliasLoader`, so a value
means the same in a file and on the command line.

**YAML 1.2 core schema, not PyYAML's YAML 1.1.** PyYAML resolves plain scalars by YAML 1.1,
where ``yes``/``no``/``on``/``off`` are booleans, ``017`` is octal 15 and ``1:30`` is the
sexagesimal 90: a row named ``no`` or ``optim.epochs=017`` would silently mean something else.
The loader resolves by the 1.2 core schema instead: only ``true``/``false`` (any of the three
spellings) are booleans, ``null``/``~``/empty is null, integers are decimal (``017`` is 17),
``0o17`` octal or ``0x1f`` hex, floats are ``1.5``, ``1e-5``, ``.inf``, ``.nan``; everything else
(``yes``, ``1:30``, ``1_000``, ``0b11``, ``2024-01-01``) is a string.

``yaml.safe_load`` never runs code, but it still lets a few hundred bytes hang the program: an
alias bomb ("billion laughs") is composed in linear time into a graph of shared references that
every later step (the JSON copy of the overrides, pydantic, hashing) expands exponentially. Our
configs never need aliases, so :func:`parse_yaml` refuses the first one. It also refuses values
that are not plain JSON data (``!!binary``, ``!!set``), so every later step sees only dicts,
lists, strings, numbers, booleans and null.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from ablate.core.errors import ConfigError

MAX_YAML_BYTES = 1 << 20  # config files are a few KiB; anything this large is not a config

# The YAML 1.2 core schema's tag resolution (yaml.org/spec/1.2.2, 10.3.2), one regex per tag.
_CORE: dict[str, tuple[str, str]] = {  # tag -> (regex, the characters a match may start with)
    "null": (r"~|null|Null|NULL|", "~nN"),
    "bool": (r"true|True|TRUE|false|False|FALSE", "tTfF"),
    "int": (r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    "float": (r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
              r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)", "-+.0123456789"),
}
_INT = re.compile(_CORE["int"][0])
_FLOAT = re.compile(_CORE["float"][0])


class YamlRefused(ValueError):
    """The text is not YAML we accept; the message is one line, with the line number if known."""


class _AliasRefused(yaml.YAMLError):
    def __init__(self, event: yaml.events.AliasEvent) -> None:
        super().__init__()
        self.problem = (f"YAML aliases are not allowed (found *{event.anchor}; write the "
                        "value out in full)")
        self.problem_mark = event.start_mark


class NoAliasLoader(yaml.SafeLoader):
    """``SafeLoader`` that resolves plain scalars by the YAML 1.2 core schema and raises at the
    first alias instead of composing it."""

    yaml_implicit_resolvers: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            raise _AliasRefused(self.peek_event())
        return super().compose_node(parent, index)

    def construct_core_int(self, node: yaml.ScalarNode) -> int:
        """Decimal (a leading zero is still decimal: ``017`` is 17), ``0o`` octal, ``0x`` hex."""
        text = str(self.construct_scalar(node))
        if not _INT.fullmatch(text):
            raise _bad_scalar(node, "an integer")
        base = {"0o": 8, "0x": 16}.get(text[:2], 10)
        return int(text[2:] if base != 10 else text, base)

    def construct_core_float(self, node: yaml.ScalarNode) -> float:
        text = str(self.construct_scalar(node))
        if not _FLOAT.fullmatch(text):
            raise _bad_scalar(node, "a float")
        special = text.lower().lstrip("+")
        if special in (".inf", "-.inf", ".nan"):
            return {".inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}[special]
        return float(text)

    def construct_core_bool(self, node: yaml.ScalarNode) -> bool:
        text = str(self.construct_scalar(node))
        if text.lower() not in ("true", "false"):
            raise _bad_scalar(node, "a boolean (true or false)")
        return text.lower() == "true"


def _bad_scalar(node: yaml.ScalarNode, what: str) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(
        None, None, f"{node.value!r} is not {what}", node.start_mark)


for _tag, (_regex, _first) in _CORE.items():
    NoAliasLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(
        rf"^(?:{_regex})$"), list(_first) + ([""] if _tag == "null" else []))
NoAliasLoader.add_constructor("tag:yaml.org,2002:int", NoAliasLoader.construct_core_int)
NoAliasLoader.add_constructor("tag:yaml.org,2002:float", NoAliasLoader.construct_core_float)
NoAliasLoader.add_constructor("tag:yaml.org,2002:bool", NoAliasLoader.construct_core_bool)
# An explicit `!!timestamp 2024-01-01` stays a string: a date object would break the JSON round
# trip of overrides (plain dates are strings already: the core schema has no timestamps).
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
    and alias, so what we write (``config.yaml`` beside a checkpoint) reads back here.

    It quotes every string that either YAML 1.1 (PyYAML's own resolvers, kept) or the 1.2 core
    schema (added below: ``0o17``, ``1e5``) would read as something else, so the files it
    writes mean the same to this loader and to any other YAML reader."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


for _tag in ("int", "float"):
    NoAliasDumper.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(
        rf"^(?:{_CORE[_tag][0]})$"), list(_CORE[_tag][1]))


def dump_yaml(value: Any, *, sort_keys: bool = False) -> str:
    """``value`` (plain data) as YAML that :func:`parse_yaml` accepts."""
    return yaml.dump(value, Dumper=NoAliasDumper, sort_keys=sort_keys, allow_unicode=True)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (no aliases, plain data, at most 1 MiB); a missing, oversized,
    malformed or not-a-regular file is a one-line ConfigError naming it."""
    p = Path(path)
    try:
        raw = parse_yaml(_read_text(p))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except YamlRefused as exc:
        raise ConfigError(f"{p}: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def _read_text(p: Path) -> str:
    """The text of the regular file ``p``, at most :data:`MAX_YAML_BYTES`.

    Opened non-blocking and checked on the open descriptor: a FIFO would otherwise block the
    read until some writer appears (forever), a device (``/dev/zero``) never ends, and checking
    the path first and opening it after would let it be swapped in between."""
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ConfigError(f"{p}: {_open_failure(p, exc)}") from None
    kind = _not_a_file(os.fstat(fd).st_mode)
    if kind:
        os.close(fd)
        raise ConfigError(f"{p}: is {kind}, not a file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        size = os.stat(p).st_size
        raise ConfigError(f"{p}: {size} bytes; a config file is at most {MAX_YAML_BYTES} bytes")
    return data.decode("utf-8")


def _not_a_file(mode: int) -> str | None:
    """What a file mode is when it is not a regular file ('a FIFO'), else None."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


def _open_failure(p: Path, exc: OSError) -> str:
    """Why ``p`` could not be opened, as the user would say it."""
    if exc.errno == errno.ELOOP:
        return "is a symlink loop"
    if exc.errno == errno.ENOENT:
        if p.is_symlink():
            return f"is a symlink to {os.readlink(p)}, which does not exist"
        return "file not found"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EISDIR:
        return "is a directory, not a file"
    return exc.strerror or type(exc).__name__
