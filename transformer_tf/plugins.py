"""Import user plugins: Python files or modules that register their own classes.

A config lists plugins under ``plugins:``; each entry is either a path to a Python file
(``path/to/my_layers.py``; a relative path is looked up in the config file's directory, then in
the current directory) or a dotted module name (``my_pkg.layers``) importable from ``sys.path``.
Importing a plugin runs its ``@transformer_tf.register(...)`` decorators, which makes its classes
selectable by name in the config.

A plugin file is imported as a top-level module named after the file's stem (``my_layers``) and
kept in ``sys.modules``: Keras stores that module name in saved ``.keras`` files, so the module
must be importable again under the same name when a model is reloaded. A file is never executed
twice in one process.

This module does not import TensorFlow or Keras (a plugin may, of course).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from transformer_tf.errors import UserError

__all__ = ["PluginError", "import_plugins", "looks_like_file", "plugin_module_name"]


class PluginError(UserError):
    """A plugin that cannot be found or that failed to import.

    Attributes:
        key: str, the config key of the entry (``plugins[0]``).
        index: int, the position of the entry in the ``plugins`` list.
        entry: str, the entry as written in the config.
        reason: str, what went wrong (without the key).
    """

    def __init__(self, reason: str, *, index: int, entry: str, key: str = "plugins"):
        self.key = f"{key}[{index}]"
        self.index = index
        self.entry = entry
        self.reason = reason
        super().__init__(f"{self.key}: {reason}")


def import_plugins(
    entries: list[str], base_dir: Path | str | None, *, key: str = "plugins"
) -> list[str]:
    """Import every plugin in ``entries`` and return them in resolved form.

    Args:
        entries: list of str, file paths (``my_layers.py``, ``dir/my_layers.py``) or dotted module
            names (``my_pkg.layers``).
        base_dir: Path or None, the directory relative file paths are looked up in first (the
            config file's directory); the current directory is tried next.
        key: str, the config key of the list, used in error messages (``plugins[0]``).

    Returns:
        list of str: for a file, its absolute path; for a module, its dotted name.

    Raises:
        PluginError (a UserError): a file or module that does not exist, a file whose module name
            is already taken by another module, or any exception raised while importing the plugin
            (its type and message are kept, and it is chained as ``__cause__``).
    """
    resolved = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry.strip():
            raise PluginError(
                f"expected a Python file path or a dotted module name, found {entry!r}",
                index=index,
                entry=str(entry),
                key=key,
            )
        if looks_like_file(entry):
            path = _find_file(entry, base_dir, index=index, key=key)
            _import_file(path, entry, index=index, key=key)
            resolved.append(str(path))
        else:
            _import_module(entry.strip(), index=index, key=key)
            resolved.append(entry.strip())
    return resolved


def looks_like_file(entry: str) -> bool:
    """Whether a ``plugins:`` entry names a Python file (else a dotted module name)."""
    return (
        entry.endswith(".py")
        or "/" in entry
        or os.sep in entry
        or (os.altsep is not None and os.altsep in entry)
        or entry.startswith("~")
    )


def plugin_module_name(entry: str) -> str:
    """The module name a plugin entry is imported as: a file's stem, or the dotted name."""
    return Path(entry).stem if looks_like_file(entry) else entry.strip()


def _find_file(entry: str, base_dir: Path | str | None, *, index: int, key: str) -> Path:
    path = Path(entry).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [Path(base_dir) / path] if base_dir is not None else []
        candidates.append(Path.cwd() / path)
    for candidate in candidates:
        if candidate.is_file():
            return Path(os.path.abspath(candidate))
    looked = ", ".join(dict.fromkeys(os.path.abspath(c) for c in candidates))
    raise PluginError(
        f"plugin file {entry!r} not found (looked for {looked})", index=index, entry=entry, key=key
    )


def _import_file(path: Path, entry: str, *, index: int, key: str) -> ModuleType:
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None:
        existing_file = getattr(existing, "__file__", None)
        if existing_file and _same_file(existing_file, path):
            return existing  # Already imported: never execute a plugin twice.
        origin = existing_file or "a built-in or namespace module"
        raise PluginError(
            f"plugin file {str(path)!r} would be imported as module `{name}`, but a different "
            f"module `{name}` is already loaded (from {origin}); rename the plugin file",
            index=index,
            entry=entry,
            key=key,
        )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(
            f"cannot import plugin file {str(path)!r} as a Python module",
            index=index,
            entry=entry,
            key=key,
        )
    module = importlib.util.module_from_spec(spec)
    # Registered before execution, as the import system does: the module's classes get
    # ``__module__ == name`` and Keras can import the module by that name when it deserializes.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        sys.modules.pop(name, None)
        raise PluginError(
            f"plugin {entry!r} ({path}) failed to import: {type(error).__name__}: {error}",
            index=index,
            entry=entry,
            key=key,
        ) from error
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_module(name: str, *, index: int, key: str) -> ModuleType:
    if not all(part.isidentifier() for part in name.split(".")):
        raise PluginError(
            f"{name!r} is neither a Python file path (ending in .py) nor a dotted module name",
            index=index,
            entry=name,
            key=key,
        )
    if name in sys.modules:
        return sys.modules[name]
    importlib.invalidate_caches()  # The module may have been written after the last import.
    try:
        return importlib.import_module(name)
    except Exception as error:
        missing = isinstance(error, ModuleNotFoundError) and error.name
        if missing and (name == error.name or name.startswith(error.name + ".")):
            raise PluginError(
                f"plugin module `{name}` not found (is it installed, or is its directory on "
                f"PYTHONPATH?)",
                index=index,
                entry=name,
                key=key,
            ) from error
        # Anything else, a missing module that the plugin itself imports included.
        raise PluginError(
            f"plugin `{name}` failed to import: {type(error).__name__}: {error}",
            index=index,
            entry=name,
            key=key,
        ) from error


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
