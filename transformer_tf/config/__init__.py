"""The run configuration: YAML -> a typed, strict, fully validated :class:`Config`.

A config file is read with ``yaml.safe_load`` (never an unsafe loader), ``--set key.path=value``
overrides are applied to the raw mapping, and the result is validated by strict pydantic models
(unknown keys, wrong types and out-of-range values are errors; nothing is coerced from strings,
except numbers such as ``1e-3`` that YAML 1.1 reads as strings). Then the plugins listed under
``plugins:`` are imported and the registry names in ``model:`` are checked.

Every problem is reported as one :class:`~transformer_tf.errors.ConfigError` listing all errors
found, one per line, each naming the file, the line of the key (or of its nearest parent present
in the file), the dotted key path, what was expected and what was found::

    configs/x.yaml:12: training.batch_size: expected an integer > 0 or `auto`, found -3
    configs/x.yaml:4: unknown key `model.d_modle`; did you mean `model.d_model`?
    override `--set training.batch_size=abc`: training.batch_size: expected an integer > 0 or `auto`, found 'abc' (str)

The package is split in two: :mod:`~transformer_tf.config.schema` (the sections, keys, defaults
and validators) and :mod:`~transformer_tf.config.diagnostics` (line numbers, overrides and error
messages); this module holds the functions that read, check and write configs.

This package imports neither TensorFlow nor Keras, so a config is validated before any
TensorFlow work starts.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from transformer_tf.config import schema
from transformer_tf.config.diagnostics import (
    Locator,
    apply_overrides,
    describe_found,
    key_lines,
    override_paths,
    raise_config_error,
    raise_issues,
    translate_errors,
    yaml_error_message,
)

# The schema's names are the package's: `from transformer_tf.config import TrainingConfig`.
from transformer_tf.config.schema import *  # noqa: F403
from transformer_tf.config.schema import (
    CONFIG_ADAPTER,
    REGISTERED_MODEL_FIELDS,
    Config,
)
from transformer_tf.files import write_atomic
from transformer_tf.plugins import PluginError, import_plugins

#: The modules that register the built-in classes; names are checked only once they are imported.
_BUILTIN_MODULES = frozenset({"transformer_tf.layers", "transformer_tf.models"})

__all__ = [
    *schema.__all__,
    "check_registered_names",
    "config_from_dict",
    "load_config",
    "model_affecting_differences",
    "save_config",
    "with_batch_size",
]

# Data fields that change the vocabulary or the tokenization (see model_affecting_differences).
_VOCABULARY_DATA_FIELDS = (
    "source",
    "tokenizer",
    "vocab_size",
    "shared_vocab",
    "lowercase",
    "ngrams",
    "seed",
    "num_train",
)

_MISSING: Any = object()


# --------------------------------------------------------------------------------------------
# Public API.


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Read, override, validate a YAML config, import its plugins and check registered names.

    Args:
        path: str or PathLike, the YAML file.
        overrides: strings ``key.path=value``; each value is parsed as YAML (``32`` is an int,
            ``true`` a bool, ``[a, b]`` a list, ``null`` None) and set before validation.

    Returns:
        Config, with every default filled in and plugin entries resolved.

    Raises:
        ConfigError: listing every problem found (file, line, key path, expected, found).
        UserError: a plugin that failed to import (as a ConfigError naming ``plugins[i]``).
    """
    name = os.fspath(path)
    file = Path(name).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise_config_error(
            [f"{name}: config file not found (looked for {os.path.abspath(file)})"], name
        )
    except IsADirectoryError:
        raise_config_error([f"{name}: expected a YAML config file, found a directory"], name)
    except UnicodeDecodeError as error:
        raise_config_error(
            [f"{name}: expected a UTF-8 YAML file, found undecodable bytes ({error})"], name
        )
    except OSError as error:
        raise_config_error(
            [f"{name}: cannot read the config file: {error.strerror or error}"], name
        )
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise_config_error([yaml_error_message(name, error)], name)
    lines, duplicates = key_lines(text)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise_config_error(
            [
                f"{name}:1: expected a mapping of keys (task:, model:, data:, ...) at the top "
                f"level, found {describe_found(raw, with_type=True)}"
            ],
            name,
        )
    locator = Locator(name, lines)
    issues = [(path, f"{locator.where(path)}: {text}") for path, text in duplicates]
    return _build(raw, locator, overrides, base_dir=file.resolve().parent, issues=issues)


def config_from_dict(
    raw: Mapping[str, Any] | None,
    *,
    source: str = "<config>",
    overrides: Sequence[str] = (),
    base_dir: str | os.PathLike | None = None,
) -> Config:
    """Validate an already-parsed config mapping (as :func:`load_config` does after reading).

    Args:
        raw: mapping, the config as ``yaml.safe_load`` returns it (not modified).
        source: str, names the origin in error messages (no line numbers are available).
        overrides: ``key.path=value`` strings, as for :func:`load_config`.
        base_dir: directory that relative plugin and data paths are looked up in first (then the
            current directory).
    """
    raw = {} if raw is None else copy.deepcopy(raw)
    if not isinstance(raw, dict):
        raise_config_error(
            [f"{source}: expected a mapping at the top level, found {describe_found(raw, True)}"],
            source,
        )
    return _build(
        raw,
        Locator(source, {}),
        overrides,
        base_dir=Path(base_dir).resolve() if base_dir is not None else None,
        issues=[],
    )


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write ``config.to_yaml()`` to ``path`` (atomically; parent directories are created)."""
    write_atomic(path, config.to_yaml())


def check_registered_names(
    config: Config,
    path: str | os.PathLike | None = None,
    *,
    overrides: Sequence[str] = (),
    registries: Mapping[str, Any] | None = None,
) -> None:
    """Check that every registry name in ``config.model`` is registered in its slot.

    ``model.name`` is looked up in the ``model`` slot, ``model.attention`` in ``attention``, and
    so on (see ``REGISTERED_MODEL_FIELDS``).

    This function imports neither TensorFlow nor the layers: the caller must have imported
    ``transformer_tf.layers`` and ``transformer_tf.models`` (and the plugins) first. A slot with
    no names registered at all is skipped silently, as is everything when those two modules
    have not been imported (and no ``registries`` are given), so that a config can be validated
    in isolation, before any TensorFlow import.

    Args:
        config: Config.
        path: the config file it came from, for the line numbers in messages (optional).
        overrides: the overrides applied to it, to name them in messages (optional).
        registries: slot -> Registry; defaults to ``transformer_tf.registry.REGISTRIES``.

    Raises:
        ConfigError: one line per unknown name, with the registered names of the slot.
    """
    name = os.fspath(path) if path is not None else "<config>"
    lines: dict[tuple, int] = {}
    if path is not None:
        try:
            lines, _ = key_lines(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            lines = {}
    locator = Locator(name, lines, override_paths(overrides))
    raise_issues(_unregistered_names(config, locator, registries), name)


def with_batch_size(config: Config, batch_size: int, accumulation: int) -> Config:
    """A copy of ``config`` whose ``training`` batches ``batch_size`` and accumulates
    ``accumulation`` of them per update, with no ``effective_batch_size``: a resolved
    ``batch_size: auto`` or ``effective_batch_size`` (see
    :mod:`transformer_tf.training.batch_size`), in the numbers the data pipelines and the update
    read. ``config`` itself is left as it is (the run directory records what was asked)."""
    training = config.training.model_copy(
        update={
            "batch_size": batch_size,
            "gradient_accumulation": accumulation,
            "effective_batch_size": None,
        }
    )
    return config.model_copy(update={"training": training})


def model_affecting_differences(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ between two configs and change the model or its vocab.

    Compared: ``task``, ``plugins``, every ``model.*`` key, and the data keys that change the
    vocabulary or tokenization (``data.source``, ``data.tokenizer``, ``data.vocab_size``,
    ``data.shared_vocab``, ``data.lowercase``, ``data.ngrams``, and the toy task's ``data.seed``
    and ``data.num_train``). A key present in only one of the two configs counts as different.
    The classification-only keys (``model.pooling``...) are in classification configs only. A
    data section's
    ``RUN_FIXED`` keys count too (classification: the validation split and the truncation of
    the reviews, which a trained run keeps).
    """
    differences = []
    if old.task != new.task:
        differences.append("task")
    if list(old.plugins) != list(new.plugins):
        differences.append("plugins")
    for field in dict.fromkeys([*type(old.model).model_fields, *type(new.model).model_fields]):
        if getattr(old.model, field, _MISSING) != getattr(new.model, field, _MISSING):
            differences.append(f"model.{field}")
    fixed = getattr(type(old.data), "RUN_FIXED", ())
    for field in (*_VOCABULARY_DATA_FIELDS, *fixed):
        if getattr(old.data, field, _MISSING) != getattr(new.data, field, _MISSING):
            differences.append(f"data.{field}")
    return differences


# --------------------------------------------------------------------------------------------
# Validation pipeline.


def _build(
    raw: dict,
    locator: Locator,
    overrides: Sequence[str],
    *,
    base_dir: Path | None,
    issues: list[tuple[tuple, str]],
) -> Config:
    locator.overrides = apply_overrides(raw, overrides, locator.name)
    config = None
    try:
        config = CONFIG_ADAPTER.validate_python(raw, context={"base_dir": base_dir})
    except ValidationError as error:
        issues = issues + translate_errors(error, raw, locator)
    raise_issues(issues, locator.name)
    assert config is not None
    try:
        config.plugins = import_plugins(config.plugins, base_dir)
    except PluginError as error:
        raise_config_error(
            [f"{locator.where(('plugins', error.index))}: {error}"],
            locator.name,
            key=error.key,
            chain=error,
        )
    raise_issues(_unregistered_names(config, locator, None), locator.name)
    return config


def _unregistered_names(
    config: Config, locator: Locator, registries: Mapping[str, Any] | None
) -> list[tuple[tuple, str]]:
    if registries is None:
        module = sys.modules.get("transformer_tf.registry")
        # Without the built-ins (not imported yet, as in the command before a config is valid)
        # only a plugin's names could be registered: validate in isolation; the caller checks
        # the names with check_registered_names once it has imported the built-ins.
        if module is None or not _BUILTIN_MODULES.issubset(sys.modules):
            return []
        registries = module.REGISTRIES
    issues = []  # (key path, message line)
    for field, slot in REGISTERED_MODEL_FIELDS.items():
        registry = registries.get(slot)
        if registry is None or not registry.names():
            continue  # An empty slot: the layers were not imported; skip (see docstring).
        value = getattr(config.model, field)
        if value in registry:
            continue
        try:
            registry.get(value)
            continue
        except Exception as error:  # UnknownNameError, with the list of registered names.
            detail = str(error)
        path = ("model", field)
        issues.append((path, f"{locator.where(path)}: model.{field}: {detail}"))
    return issues
