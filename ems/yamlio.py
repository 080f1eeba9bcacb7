"""YAML loading that remembers the line of every key, and pydantic errors turned into Problems.

Operators edit YAML by hand; an error must point at the line. :func:`load_yaml` returns the plain
data plus a map from key path (a tuple of keys and list indices) to its 1-based line number.
:func:`validate` runs a pydantic model and converts *all* its errors into one
:class:`~ems.errors.ConfigError`, with "did you mean" hints for unknown keys.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from adapters.yamlsafe import BoundedLoader, InputFileError, parse, read_text
from ems.errors import ConfigError, Problem


class _Loader(BoundedLoader):
    """SafeLoader that reads clock times such as ``18:30`` as strings.

    YAML 1.1 (PyYAML) reads unquoted ``18:30`` as the base-60 integer 1110 but ``07:30`` as a
    string; operators write clock times unquoted, so every ``H:MM``/``HH:MM[:SS]`` stays text.
    """


_CLOCK_RE = re.compile(r"^[-+]?\d+(?::[0-5]?\d)+(?:\.\d*)?$")
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "+-0123456789":
    _Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(0, ("tag:yaml.org,2002:str", _CLOCK_RE))

Loc = tuple[str | int, ...]
LineMap = dict[Loc, int]
M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path) -> tuple[Any, LineMap]:
    """Read a YAML file; return its data and the line of every key path.

    Raises ConfigError for a missing file, a syntax error (with its line) or a duplicated key, and for
    anything :mod:`adapters.yamlsafe` refuses (not a regular file, too large, alias bombs, deep
    nesting, explicit tags, non-scalar keys).
    """
    try:
        text = read_text(path)
    except InputFileError as exc:
        raise _config_error(exc) from None
    return parse_yaml(text, str(path))


def _config_error(exc: InputFileError) -> ConfigError:
    return ConfigError(Problem(exc.where, exc.line, "", None, exc.message, has_value=False))


def parse_yaml(text: str, where: str) -> tuple[Any, LineMap]:
    """Parse YAML text (named ``where`` in errors); see :func:`load_yaml`."""
    try:
        node, data = parse(text, where, _Loader)
    except InputFileError as exc:
        raise _config_error(exc) from None
    if node is None:
        return {}, {}
    lines: LineMap = {(): node.start_mark.line + 1}
    dupes: list[Problem] = []
    _walk(node, (), lines, dupes, where)
    if dupes:
        raise ConfigError(dupes)
    return data, lines


def _walk(node: yaml.Node, loc: Loc, lines: LineMap, dupes: list[Problem], where: str) -> None:
    """Record the line of every mapping key and sequence item below ``node``."""
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                dupes.append(Problem(where, key_node.start_mark.line + 1, key_path(loc + (key,)), None,
                                     "key appears twice in the same mapping", has_value=False))
            seen.add(key)
            lines[loc + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, loc + (key,), lines, dupes, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[loc + (i,)] = item.start_mark.line + 1
            _walk(item, loc + (i,), lines, dupes, where)


def key_path(loc: Loc) -> str:
    """Format a key path as ``a.b[0].c``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(lines: LineMap, loc: Loc) -> int | None:
    """The line of ``loc``, or of its nearest ancestor that has one."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def validate(model: type[M], data: Any, where: str, lines: LineMap | None = None, prefix: Loc = ()) -> M:
    """Validate ``data`` against ``model``; raise one ConfigError listing every problem."""
    lines = lines or {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, model, where, lines, prefix)) from None


def problems_from(exc: ValidationError, model: type[BaseModel], where: str, lines: LineMap,
                  prefix: Loc = ()) -> list[Problem]:
    """Convert a pydantic ValidationError into Problems with lines and hints."""
    problems = []
    for err in exc.errors(include_url=False):
        raw = tuple(err["loc"])
        loc = _data_loc(model, raw)
        full = prefix + loc
        line = line_of(lines, full)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = sorted(_fields_at(model, raw[:-1]))
            key = str(loc[-1]) if loc else ""
            hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            msg = f"unknown key{'; did you mean ' + repr(hint[0]) + '?' if hint else ''} (allowed: {', '.join(allowed)})"
            problems.append(Problem(where, line, key_path(full), None, msg, has_value=False))
        elif kind == "missing":
            problems.append(Problem(where, line, key_path(full), None, "required key is missing", has_value=False))
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            value = err.get("input")
            # a whole section or list (a check across its keys) is not repeated in the message
            problems.append(Problem(where, line, key_path(full), value, msg, has_value=not isinstance(value, (dict, list))))
    return problems


def _members(annotation: Any) -> list[Any]:
    """The non-None members of a Union/Optional/Annotated annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a) if m is not type(None)]
    return [annotation]


def _descend(annotation: Any, part: str | int) -> tuple[Any, bool]:
    """Step one location part into an annotation; return (new annotation, part was data)."""
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if isinstance(part, int) and origin in (list, tuple):
            return typing.get_args(member)[0], True
        if origin is dict and isinstance(part, str):
            return typing.get_args(member)[1], True
        if isinstance(member, type) and issubclass(member, BaseModel):
            if isinstance(part, str) and part in member.model_fields:
                return member.model_fields[part].annotation, True
    # a union tag pydantic inserts into loc (class name or discriminator value)
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            if part == member.__name__ or part in _tags(member):
                return member, False
    return Any, True


def _tags(model: type[BaseModel]) -> set[str]:
    """Literal values of a model's discriminator-like fields (e.g. ``kind``)."""
    tags: set[str] = set()
    for field in model.model_fields.values():
        if typing.get_origin(field.annotation) is typing.Literal:
            tags.update(str(a) for a in typing.get_args(field.annotation))
    return tags


def _walk_loc(model: type[BaseModel], loc: Loc) -> tuple[Any, Loc]:
    """Follow ``loc`` through the model; return the final annotation and the data-only loc."""
    ann: Any = model
    data_loc: list[str | int] = []
    for part in loc:
        ann, is_data = _descend(ann, part)
        if is_data:
            data_loc.append(part)
    return ann, tuple(data_loc)


def _data_loc(model: type[BaseModel], loc: Loc) -> Loc:
    """Drop the union tags pydantic inserts, keeping the key path as written in the file."""
    return _walk_loc(model, loc)[1]


def _fields_at(model: type[BaseModel], raw_loc: Loc) -> set[str]:
    """Field names allowed at a pydantic location (members of an untagged union pooled)."""
    ann = _walk_loc(model, raw_loc)[0]
    names: set[str] = set()
    for member in _members(ann):
        if isinstance(member, type) and issubclass(member, BaseModel):
            names.update(member.model_fields)
    return names
