"""Reload a saved ``.keras`` model, user plugins included: :func:`load_keras_model`.

``transformer-tf train`` writes ``RUN_DIR/model.keras`` next to ``RUN_DIR/config.yaml``. The
``.keras`` file stores each class by its registered Keras name
(``transformer_tf>Seq2SeqTransformer``, ``my_layers>GatedFeedForward``) and the model's config
stores the registry names of its parts (``feed_forward: my_layers.GatedFeedForward``). Neither
Keras nor the model can import a user's module by itself: the classes must be registered before
loading. The run's ``config.yaml`` records what to import, under ``plugins:`` (absolute file
paths, or dotted module names), so :func:`load_keras_model` imports those first.

A module that cannot be imported, or a class that is still unknown after the imports, is a
:class:`~transformer_tf.errors.UserError` that names the missing module or class and where it was
recorded, instead of Keras' generic "Could not locate class".
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras

from transformer_tf.errors import UnknownNameError, UserError
from transformer_tf.models import dtype_policy_scope
from transformer_tf.plugins import PluginError, import_plugins, looks_like_file, plugin_module_name
from transformer_tf.registry import SLOTS, get_registry
from transformer_tf.run import RunDir

__all__ = ["MODEL_FILE", "load_keras_model"]

log = logging.getLogger(__name__)

#: The model file that training writes into the run directory.
MODEL_FILE = RunDir.MODEL_FILE
CONFIG_FILE = RunDir.CONFIG_FILE


def load_keras_model(path_or_run_dir: str | os.PathLike) -> keras.Model:
    """Load a ``.keras`` model saved by transformer_tf, importing the plugins it needs first.

    Args:
        path_or_run_dir: a ``.keras`` file, or a run directory (its ``model.keras`` is loaded).

    The plugins listed in the run's ``config.yaml`` (the run directory's, or the one next to the
    ``.keras`` file) are imported before loading, so that their ``@transformer_tf.register``
    decorators run; ``transformer_tf`` itself is always imported. A plugin file recorded by an
    absolute path that no longer exists is imported by its module name instead (``my_layers``)
    if that is importable from ``sys.path``. Loading uses ``safe_mode=True`` and the model's
    saved dtype policy (the layers a model creates in its constructor take the global policy,
    so it is set while loading and restored afterwards).

    Returns:
        keras.Model: the model with its trained weights (not compiled).

    Raises:
        UserError: the path is not a ``.keras`` file or a run directory with one; a recorded
            plugin cannot be imported (the message names the module, the entry and the
            ``config.yaml`` it was recorded in); or the model names a class or registry name
            that is not registered after the imports (the message names it and its module).
    """
    model_file, config_file = _locate(Path(path_or_run_dir))
    if config_file is not None:
        _import_recorded_plugins(config_file, model_file)
    saved_config = _saved_model_config(model_file)
    try:
        with dtype_policy_scope(_saved_dtype_policy(saved_config)):
            return keras.saving.load_model(model_file, safe_mode=True)
    except UnknownNameError as error:
        raise UserError(
            _unregistered_name_message(model_file, config_file, error, saved_config)
        ) from error
    except TypeError as error:
        missing = re.search(r"Could not locate (\w+) '([^']+)'", str(error))
        if missing is None:
            raise
        kind, name = missing.groups()
        raise UserError(
            _unlocated_class_message(model_file, config_file, kind, name, saved_config)
        ) from error


# --------------------------------------------------------------------------------------------
# Finding the files.


def _locate(path: Path) -> tuple[Path, Path | None]:
    """The ``.keras`` file, and the ``config.yaml`` whose plugins it needs (or None)."""
    if path.is_dir():
        model_file = path / MODEL_FILE
        if not model_file.is_file():
            hint = (
                " (training writes it when it ends; an interrupted run has only checkpoints)"
                if (path / CONFIG_FILE).is_file()
                else ""
            )
            raise UserError(f"{path} has no {MODEL_FILE}{hint}")
        config_file = path / CONFIG_FILE
    elif path.is_file():
        if path.suffix != ".keras":
            raise UserError(f"{path} is not a .keras model file or a run directory")
        model_file = path
        config_file = path.parent / CONFIG_FILE
    else:
        raise UserError(f"{path}: no such .keras file or run directory")
    return model_file, (config_file if config_file.is_file() else None)


# --------------------------------------------------------------------------------------------
# Plugins.


def _import_recorded_plugins(config_file: Path, model_file: Path) -> None:
    for index, entry in enumerate(RunDir(config_file.parent).recorded_plugins()):
        try:
            import_plugins([entry], config_file.parent)
        except PluginError as error:
            module = plugin_module_name(entry)
            if _importable_elsewhere(module, entry):
                continue
            raise UserError(
                f"cannot reload {model_file}: it needs the plugin module `{module}`, recorded "
                f"in {config_file} as plugins[{index}] = {entry!r}, which cannot be imported: "
                f"{error.reason}. Put the plugin back where it was, or change plugins[{index}] "
                f"in {config_file} to its new path (or to its module name, if it is on "
                "PYTHONPATH), then reload."
            ) from error


def _importable_elsewhere(module: str, entry: str) -> bool:
    """Whether a recorded plugin *file* that is gone can be imported by its module name.

    Keras looks classes up by module name (``my_layers>GatedFeedForward``), so a module of that
    name on ``sys.path`` (the file moved to an installed package, say) serves as well.
    """
    if not looks_like_file(entry):  # A dotted module name that failed: nothing else to try.
        return False
    if module in sys.modules:
        log.warning("plugin %s: using the already imported module `%s`", entry, module)
        return True
    if Path(entry).exists() or not module.isidentifier():
        return False  # The file exists but failed to import: report its error.
    try:
        importlib.import_module(module)
    except Exception:  # Not there, or a broken namesake: report the recorded file as missing.
        return False
    log.warning(
        "plugin file %s is gone; imported module `%s` from %s instead",
        entry,
        module,
        getattr(sys.modules[module], "__file__", "sys.path"),
    )
    return True


# --------------------------------------------------------------------------------------------
# The saved config, dtype policy and error messages.


def _saved_model_config(model_file: Path) -> dict[str, Any] | None:
    """The model's serialized config (``config.json`` inside the ``.keras`` zip), if readable."""
    try:
        with zipfile.ZipFile(model_file) as archive:
            return json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # Let Keras report an unreadable file in its own words.


def _saved_dtype_policy(saved_config: dict[str, Any] | None) -> str | None:
    dtype = ((saved_config or {}).get("config") or {}).get("dtype")
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict):
        name = (dtype.get("config") or {}).get("name")
        return name if isinstance(name, str) else None
    return None


def _where_plugins_go(model_file: Path, config_file: Path | None) -> str:
    if config_file is None:
        return (
            f"No {CONFIG_FILE} is next to {model_file}, so no plugins were imported: import the "
            f"module before calling load_keras_model, or keep the run's {CONFIG_FILE} next to "
            "the file."
        )
    return (
        f"The plugins recorded in {config_file} were imported and did not register what is "
        "missing: add the module that does to `plugins:` there."
    )


def _unregistered_name_message(
    model_file: Path,
    config_file: Path | None,
    error: UnknownNameError,
    saved_config: dict[str, Any] | None,
) -> str:
    # The model's constructor stops at the first unknown name; list them all, so that one fix
    # (usually: import one module) is seen to cover every one.
    missing = _unregistered_names(saved_config)
    if not missing:
        named = re.match(r"unknown (\w+) `([^`]+)`", str(error))
        if named is None:
            return (
                f"cannot reload {model_file}: {error}. {_where_plugins_go(model_file, config_file)}"
            )
        missing = [named.groups()]
    listed = ", ".join(f"{slot} `{name}`" for slot, name in missing)
    modules = sorted({name.split(".")[0] for _, name in missing if "." in name})
    module_hint = (
        f" (`{'`, `'.join(modules)}`, if the names are the default `<module>.<ClassName>`)"
        if modules
        else ""
    )
    return (
        f"cannot reload {model_file}: the model uses {listed}, not registered in this process. "
        f"Import the module that registers {'it' if len(missing) == 1 else 'them'}{module_hint} "
        f"first. {_where_plugins_go(model_file, config_file)}"
    )


def _unregistered_names(saved_config: dict[str, Any] | None) -> list[tuple[str, str]]:
    """``(slot, name)`` for every registry name in the saved config that is not registered."""
    missing = []
    for obj in _serialized_objects(saved_config):
        config = obj.get("config")
        if not isinstance(config, dict):
            continue
        # By convention a model or layer config stores the part it builds for a slot under the
        # slot's name (`feed_forward: my_layers.GatedFeedForward`). The `model` slot is not a
        # config key: Keras finds the model class itself, by its registered Keras name.
        for slot in (slot for slot in SLOTS if slot != "model"):
            name = config.get(slot)
            if isinstance(name, str) and name not in get_registry(slot):
                missing.append((slot, name))
    return list(dict.fromkeys(missing))


def _unlocated_class_message(
    model_file: Path,
    config_file: Path | None,
    kind: str,
    name: str,
    saved_config: dict[str, Any] | None,
) -> str:
    found = next(
        (obj for obj in _serialized_objects(saved_config) if obj.get("class_name") == name), {}
    )
    registered, module = found.get("registered_name"), found.get("module")
    origin = []
    if registered:
        origin.append(f"registered as `{registered}`")
    if module:
        origin.append(f"defined in module `{module}`")
    described = f" ({', '.join(origin)})" if origin else ""
    module_hint = f" (`import {module}`)" if module else ""
    return (
        f"cannot reload {model_file}: Keras could not locate {kind} `{name}`{described}. Import "
        f"the module that defines it{module_hint} before loading; the class must be decorated "
        f"with @transformer_tf.register or @keras.saving.register_keras_serializable. "
        f"{_where_plugins_go(model_file, config_file)}"
    )


def _serialized_objects(node: Any) -> Iterator[dict]:
    """Every ``{"class_name": ...}`` mapping in a serialized Keras config, depth first."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _serialized_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _serialized_objects(value)
