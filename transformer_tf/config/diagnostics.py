"""Config error messages: key lines in YAML, syntax errors, pydantic errors, ``--set`` overrides.

Turns everything that can go wrong while reading a config into the lines of one
:class:`~transformer_tf.errors.ConfigError`, each naming the file and line of the key (or of the
override that set it), the dotted key path, what was expected and what was found. Validators in
:mod:`transformer_tf.config.schema` raise :class:`~transformer_tf.config.schema.Invalid`, which
:func:`translate_errors` turns into such a line.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, Tag, ValidationError
from pydantic.fields import FieldInfo

from transformer_tf.config.schema import (
    TASK_CONFIGS,
    TASK_DATA_SOURCES,
    AnyConfig,
    DataConfig,
    Invalid,
)
from transformer_tf.errors import ConfigError

__all__ = [
    "Locator",
    "apply_overrides",
    "describe_found",
    "key_lines",
    "override_paths",
    "raise_config_error",
    "raise_issues",
    "translate_errors",
    "yaml_error_message",
]

_MISSING: Any = object()


# --------------------------------------------------------------------------------------------
# Raising.


def raise_issues(issues: list[tuple[tuple, str]], file: str) -> None:
    """Raise a ConfigError for ``(key path, message line)`` issues, if there are any."""
    if issues:
        lines = list(dict.fromkeys(line for _, line in issues))
        raise_config_error(lines, file, key=_dotted(issues[0][0]) or None)


def raise_config_error(
    issues: list[str], file: str, *, key: str | None = None, chain: BaseException | None = None
) -> None:
    """Raise one ConfigError listing every issue (one line each)."""
    error = ConfigError("\n".join(issues))
    error.file = file  # Set after construction: the lines already name the file and the key.
    error.key = key
    error.issues = list(issues)
    raise error from chain


# --------------------------------------------------------------------------------------------
# YAML: line numbers of keys, syntax errors.


class Locator:
    """Maps key paths to "file:line", or to the override that set them."""

    def __init__(
        self, name: str, lines: dict[tuple, int], overrides: dict[tuple, str] | None = None
    ):
        self.name = name
        self.lines = lines
        self.overrides = overrides or {}

    def where(self, path: tuple) -> str:
        prefixes = [tuple(path[:end]) for end in range(len(path), 0, -1)]
        for prefix in prefixes:  # An override replaced everything below its key.
            if prefix in self.overrides:
                return f"override `--set {self.overrides[prefix]}`"
        for prefix in prefixes:  # The key's line, else its nearest parent's.
            if prefix in self.lines:
                return f"{self.name}:{self.lines[prefix]}"
        return self.name


def key_lines(text: str) -> tuple[dict[tuple, int], list[tuple[tuple, str]]]:
    """Key path -> 1-based line of the key, and the duplicate keys found (path, message)."""
    lines: dict[tuple, int] = {}
    duplicates: list[tuple[tuple, str]] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines, duplicates

    def walk(node: yaml.Node, path: tuple, ancestors: frozenset) -> None:
        if id(node) in ancestors:  # A recursive alias.
            return
        ancestors = ancestors | {id(node)}
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            merged: list[yaml.Node] = []
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merged.extend(
                        value_node.value
                        if isinstance(value_node, yaml.SequenceNode)
                        else [value_node]
                    )
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in seen:
                    duplicates.append(
                        (
                            path + (key,),
                            f"duplicate key `{_dotted(path + (key,))}` (also at line "
                            f"{seen[key]}); each key may appear only once",
                        )
                    )
                seen[key] = line
                lines[path + (key,)] = line
                walk(value_node, path + (key,), ancestors)
            for source in merged:  # `<<: *anchor`: explicit keys win over merged ones.
                if isinstance(source, yaml.MappingNode):
                    for key_node, value_node in source.value:
                        if isinstance(key_node, yaml.ScalarNode) and key_node.value not in seen:
                            seen[key_node.value] = key_node.start_mark.line + 1
                            lines[path + (key_node.value,)] = seen[key_node.value]
                            walk(value_node, path + (key_node.value,), ancestors)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[path + (index,)] = item.start_mark.line + 1
                walk(item, path + (index,), ancestors)

    if root is not None:
        walk(root, (), frozenset())
    return lines, duplicates


def yaml_error_message(name: str, error: yaml.YAMLError) -> str:
    """``file:line:column: invalid YAML: problem (context at line N)`` for a syntax error."""
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return f"{name}: invalid YAML: {error}"
    problem = getattr(error, "problem", None) or "syntax error"
    text = f"{name}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}"
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context:
        where = f" at line {context_mark.line + 1}" if context_mark is not None else ""
        text += f" ({context}{where})"
    return text


# --------------------------------------------------------------------------------------------
# Overrides.


def override_paths(overrides: Sequence[str]) -> dict[tuple, str]:
    """Key path -> override text, for each well-formed ``key.path=value`` (nothing is applied)."""
    paths = {}
    for text in overrides:
        key, sep, _ = text.partition("=")
        if sep and key.strip():
            paths[tuple(part.strip() for part in key.strip().split("."))] = text
    return paths


def apply_overrides(raw: dict, overrides: Sequence[str], name: str) -> dict[tuple, str]:
    """Set each ``key.path=value`` into ``raw``; returns key path -> override text."""
    if isinstance(overrides, str):
        overrides = [overrides]
    applied: dict[tuple, str] = {}
    for text in overrides:
        where = f"override `--set {text}`"
        key, sep, value_text = str(text).partition("=")
        key = key.strip()
        if not sep or not key:
            raise_config_error(
                [f"{where}: expected `key.path=value` (e.g. `training.batch_size=32`)"], name
            )
        parts = [part.strip() for part in key.split(".")]
        if not all(parts):
            raise_config_error(
                [f"{where}: expected a dotted key path, found {key!r} (an empty part)"],
                name,
                key=key,
            )
        try:
            value = yaml.safe_load(value_text)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error)
            raise_config_error(
                [f"{where}: the value {value_text!r} is not valid YAML: {problem}"], name, key=key
            )
        node: Any = raw
        path: list[str | int] = []
        for position, part in enumerate(parts):
            last = position == len(parts) - 1
            if isinstance(node, dict):
                path.append(part)
                if last:
                    node[part] = value
                elif node.get(part) is None:
                    node[part] = {}
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                path.append(int(part))
                if last:
                    node[int(part)] = value
                node = node[int(part)]
            else:
                raise_config_error(
                    [
                        f"{where}: cannot set `{key}`: `{_dotted(tuple(path))}` is "
                        f"{describe_found(node, with_type=True)}, not a mapping"
                    ],
                    name,
                    key=key,
                )
        applied[tuple(path)] = str(text)
    return applied


# --------------------------------------------------------------------------------------------
# pydantic errors -> messages.

_TYPE_ERRORS_WITHOUT_TYPE = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "multiple_of",
    "finite_number",
    "string_too_short",
    "string_too_long",
    "too_short",
    "too_long",
}


def translate_errors(
    error: ValidationError, raw: dict, locator: Locator
) -> list[tuple[tuple, str]]:
    """One ``(key path, "where: message")`` per pydantic error (including raised Invalid)."""
    issues = []
    for item in error.errors(include_url=False):
        path, text = _translate(item, raw)
        issues.append((path, f"{locator.where(path)}: {text}"))
    return issues


def _translate(item: dict, raw: dict) -> tuple[tuple, str]:
    kind, ctx = item["type"], item.get("ctx") or {}
    value = item.get("input", _MISSING)
    path, annotation, metadata, section = _resolve_loc(item["loc"])
    dotted = _dotted(path)

    invalid = ctx.get("error")
    if kind == "value_error" and isinstance(invalid, Invalid):
        path = path + invalid.path
        if invalid.message is not None:
            return path, invalid.message
        return path, f"{_dotted(path)}: {invalid.describe()}"
    if kind == "extra_forbidden" and section is not None:
        return path, _unknown_key_message(path, section)
    if kind in ("union_tag_invalid", "union_tag_not_found") and not path:
        expected = f"one of {_choices(TASK_CONFIGS)}"
        if kind == "union_tag_not_found":
            return ("task",), f"task: missing required key (expected {expected})"
        return ("task",), f"task: expected {expected}, found {describe_found(ctx.get('tag'))}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        path = path + ("source",)
        expected = _data_sources_for(raw)
        if kind == "union_tag_not_found":
            return path, f"{_dotted(path)}: missing required key (expected {expected})"
        return path, f"{_dotted(path)}: expected {expected}, found {ctx.get('tag')!r}"
    if path and path[-1] == "[key]":
        path = path[:-1]
        return (
            path,
            f"{_dotted(path)}: expected string keys, found the key {describe_found(value, True)}",
        )
    if not path:
        return path, f"expected a mapping at the top level, found {describe_found(value, True)}"
    expected = _describe(annotation, metadata) if annotation is not None else None
    if kind == "missing":
        task = raw.get("task") if isinstance(raw, dict) else None
        if path == ("data",) and task in TASK_DATA_SOURCES:
            sources = " or ".join(f"`source: {s}`" for s in TASK_DATA_SOURCES[task])
            return path, (
                f"data: missing required key (task {task!r} needs a `data:` section with {sources})"
            )
        return path, f"{dotted}: missing required key" + (
            f" (expected {expected})" if expected else ""
        )
    if expected is None:
        return path, f"{dotted}: {item['msg']}"
    with_type = kind not in _TYPE_ERRORS_WITHOUT_TYPE and not (
        kind == "literal_error" and isinstance(value, str)
    )
    return path, f"{dotted}: expected {expected}, found {describe_found(value, with_type)}"


def _resolve_loc(loc: tuple) -> tuple[tuple, Any, list, type[BaseModel] | None]:
    """Walk a pydantic loc through the schema: (key path, annotation, field metadata, section).

    The discriminated unions' tags (the task's, ``('translation', 'data', 'tfds', 'name')``, and
    the data source's) are dropped from the key path.
    ``section`` is the model the last key was looked up in (for unknown keys).
    """
    annotation: Any = AnyConfig
    metadata: list = []
    path: list = []
    section = None
    for element in loc:
        base, _ = _strip(annotation)
        variants = _variants(base)
        tagged = _tagged(base)
        if element in tagged:  # a tagged union's member (not a key): look inside it
            annotation, metadata = tagged[element], []
        elif isinstance(base, type) and issubclass(base, BaseModel):
            section = base
            path.append(element)
            field = base.model_fields.get(element) if isinstance(element, str) else None
            annotation, metadata = (field.annotation, list(field.metadata)) if field else (None, [])
        elif variants and element in variants:
            annotation, metadata = variants[element], []
        elif get_origin(base) is dict:
            path.append(element if element == "[key]" else str(element))
            key_type, value_type = get_args(base)
            annotation = key_type if element == "[key]" else value_type
            metadata = []
        elif get_origin(base) is list:
            path.append(element)
            annotation, metadata = get_args(base)[0], []
        else:
            path.append(element)
            annotation, metadata = None, []
    return tuple(path), annotation, metadata, section


def _strip(annotation: Any) -> tuple[Any, list]:
    """Remove ``Annotated`` (collecting its metadata) and ``Optional``."""
    metadata: list = []
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *extra = get_args(annotation)
            metadata.extend(extra)
            continue
        if _is_union(annotation):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation, metadata


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _tagged(annotation: Any) -> dict[str, Any]:
    """tag -> member of a union whose members are tagged (``Annotated[..., Tag("files")]``)."""
    if not _is_union(annotation):
        return {}
    members = {}
    for arg in get_args(annotation):
        if get_origin(arg) is Annotated:
            inner, *extra = get_args(arg)
            for tag in (e.tag for e in extra if isinstance(e, Tag)):
                members[tag] = inner
    return members


def _variants(annotation: Any) -> dict[str, type[BaseModel]]:
    """tag -> model for a union of models told apart by a literal ``task`` (the config) or
    ``source`` (the data section)."""
    if not _is_union(annotation):
        return {}
    variants = {}
    for arg in get_args(annotation):
        tag = None
        if get_origin(arg) is Annotated:  # a tagged member: Annotated[Model, Tag("...")]
            arg, *extra = get_args(arg)
            tag = next((e.tag for e in extra if isinstance(e, Tag)), None)
        if not (isinstance(arg, type) and issubclass(arg, BaseModel)):
            return {}
        field = arg.model_fields.get("task") or arg.model_fields.get("source")
        if field is None or get_origin(field.annotation) is not Literal:
            return {}
        variants[tag or get_args(field.annotation)[0]] = arg
    return variants


def _source_names(models) -> list[str]:
    """The distinct ``source:`` values of data models (two tasks may share one, e.g. tfds)."""
    return list(dict.fromkeys(get_args(m.model_fields["source"].annotation)[0] for m in models))


def _describe(annotation: Any, metadata: Sequence = ()) -> str:
    """What a value of ``annotation`` looks like: "an integer > 0", "one of 'relu', 'gelu'"."""
    metadata = list(metadata)
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        metadata.extend(extra)
    if _is_union(annotation):
        args = get_args(annotation)
        members = [a for a in args if a is not type(None)]
        variants = _variants(_strip(annotation)[0])
        if variants:
            text = f"a mapping with `source:` one of {_choices(_source_names(variants.values()))}"
        else:
            text = " or ".join(_describe(a, metadata) for a in members)
        return f"{text} or null" if len(members) < len(args) else text
    if get_origin(annotation) is Literal:
        return f"one of {_choices(get_args(annotation))}"
    bounds = _bounds(metadata)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer" + bounds["range"]
    if annotation is float:
        return "a number" + bounds["range"]
    if annotation is str:
        return "a non-empty string" if bounds["min_length"] else "a string"
    if get_origin(annotation) is list:
        item = _describe(get_args(annotation)[0])
        return "a list of " + re.sub(r"^(an?|one) ", "", item).replace("string", "strings")
    if get_origin(annotation) is dict:
        return f"a mapping from names to {_describe(get_args(annotation)[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        required = [name for name, f in annotation.model_fields.items() if f.is_required()]
        if required:
            return "a mapping with " + " and ".join(f"`{name}`" for name in required)
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(metadata: Sequence) -> dict[str, Any]:
    items: list = []
    for entry in metadata:
        items.extend(entry.metadata if isinstance(entry, FieldInfo) else [entry])
    low = high = None
    min_length = 0
    for entry in items:
        if isinstance(entry, annotated_types.Gt):
            low = ("(", ">", entry.gt)
        elif isinstance(entry, annotated_types.Ge):
            low = ("[", ">=", entry.ge)
        elif isinstance(entry, annotated_types.Lt):
            high = (")", "<", entry.lt)
        elif isinstance(entry, annotated_types.Le):
            high = ("]", "<=", entry.le)
        elif isinstance(entry, annotated_types.MinLen):
            min_length = entry.min_length
    if low and high:
        text = f" in {low[0]}{_number(low[2])}, {_number(high[2])}{high[0]}"
    elif low or high:
        bracket, op, bound = low or high
        text = f" {op} {_number(bound)}"
    else:
        text = ""
    return {"range": text, "min_length": min_length}


def _unknown_key_message(path: tuple, section: type[BaseModel]) -> str:
    key, parent = path[-1], path[:-1]
    valid = list(section.model_fields)
    text = f"unknown key `{_dotted(path)}`"
    variants = _variants(DataConfig)
    if section in variants.values():
        this = get_args(section.model_fields["source"].annotation)[0]
        others = [
            name
            for name in _source_names(c for c in variants.values() if key in c.model_fields)
            if name != this
        ]
        if others:
            return (
                f"{text} for data source {this!r}; `{key}` is a key of data source "
                f"{_choices(others)}"
            )
    close = difflib.get_close_matches(str(key), valid, n=1)
    if close:
        return f"{text}; did you mean `{_dotted(parent + (close[0],))}`?"
    where = f" of `{_dotted(parent)}`" if parent else ""
    return f"{text}; valid keys{where}: {', '.join(valid)}"


def _data_sources_for(raw: dict) -> str:
    task = raw.get("task") if isinstance(raw, dict) else None
    if task in TASK_DATA_SOURCES:
        return f"one of {_choices(TASK_DATA_SOURCES[task])} for task {task!r}"
    return f"one of {_choices([s for sources in TASK_DATA_SOURCES.values() for s in sources])}"


# --------------------------------------------------------------------------------------------
# Small formatting helpers.


def _dotted(path: Sequence) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) and not isinstance(part, bool) else f".{part}"
    return text.lstrip(".")


def _choices(values: Sequence) -> str:
    return ", ".join(repr(v) for v in values)


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def describe_found(value: Any, with_type: bool = False) -> str:
    """A value as shown after "found": ``-3``, ``'abc' (str)``, ``null``, ``a list [1, 2]``."""
    if value is _MISSING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return f"a mapping {_short(value)}"
    if isinstance(value, list):
        return f"a list {_short(value)}"
    text = ("true" if value else "false") if isinstance(value, bool) else _short(value)
    return f"{text} ({_type_name(value)})" if with_type else text


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
