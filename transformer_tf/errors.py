"""Exceptions that mean "the user gave us bad input" (exit code 2, no traceback)."""

from __future__ import annotations


class UserError(Exception):
    """Bad user input: a config, a path, a data file, a name. The CLI prints it and exits 2."""


class ConfigError(UserError, ValueError):
    """An invalid configuration value, with the file and key path it came from."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        where = ", ".join(p for p in (file, f"key `{key}`" if key else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class DataError(UserError):
    """Unreadable or inconsistent data files."""


class UnknownNameError(UserError, KeyError):
    """A name that no registry slot knows."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes.
        return str(self.args[0])
