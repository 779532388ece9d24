"""Registries that map the names used in YAML configs to Keras classes.

Every replaceable part of the model is a *slot*: ``attention``, ``feed_forward``, ``normalization``,
``positional_encoding``, ``encoder_layer``, ``decoder_layer`` and ``model``. A config names the
class for a slot by its registered name (``model.feed_forward: position_wise``). Users add their own
classes from their own module with :func:`register`; no edit of this package is needed.

Registering also registers the class with Keras' serialization (package ``transformer_tf`` for
built-ins, the class's module name for user classes) so that ``.keras`` files reload it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

import keras

from transformer_tf.errors import UnknownNameError, UserError

SLOTS = (
    "attention",
    "feed_forward",
    "normalization",
    "positional_encoding",
    "encoder_layer",
    "decoder_layer",
    "model",
)


class Registry:
    """Names to classes for one slot.

    Args:
        slot: str, the slot name (one of ``SLOTS``).
    """

    def __init__(self, slot: str):
        self.slot = slot
        self._classes: dict[str, type] = {}

    def add(self, name: str, cls: type) -> None:
        """Register ``cls`` as ``name``; a second, different class under one name is an error."""
        existing = self._classes.get(name)
        if existing is not None and not _same_class(existing, cls):
            raise ValueError(
                f"cannot register {_qualname(cls)} as {self.slot} `{name}`: that name is already "
                f"taken by {_qualname(existing)}. Pick another name: "
                f"@transformer_tf.register('{self.slot}', name='...')"
            )
        self._classes[name] = cls

    def get(self, name: str) -> type:
        """The class registered as ``name``; an :class:`UnknownNameError` lists the valid names."""
        try:
            return self._classes[name]
        except KeyError:
            pass
        names = sorted(self._classes)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        if "." in name:
            hint += (
                " A user class must be registered with @transformer_tf.register and its module "
                "imported first (list it under `plugins:` in the config)."
            )
        raise UnknownNameError(
            f"unknown {self.slot} `{name}`; registered {self.slot} names: {', '.join(names)}.{hint}"
        )

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: str) -> bool:
        return name in self._classes


REGISTRIES: dict[str, Registry] = {slot: Registry(slot) for slot in SLOTS}


def get_registry(slot: str) -> Registry:
    if slot not in REGISTRIES:
        raise UnknownNameError(f"unknown slot `{slot}`; slots are: {', '.join(SLOTS)}")
    return REGISTRIES[slot]


def build(slot: str, registered_name: str, /, *args, **kwargs):
    """Instantiate the class registered as ``registered_name`` in ``slot``.

    A class that does not accept the slot's arguments (a config or plugin that does not fit the
    slot's interface) becomes a :class:`UserError` naming the slot, the class and the arguments,
    instead of a traceback deep inside model construction. An error raised *inside* a
    constructor that did accept its arguments is a bug of that class and propagates unchanged.
    """
    cls = get_registry(slot).get(registered_name)
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as error:
        raise UserError(_misfit_message(slot, registered_name, cls, args, kwargs, error)) from error
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError) as error:
        # Keras layers take **kwargs and reject unknown ones in their base constructor.
        if not str(error).startswith("Unrecognized keyword arguments"):
            raise
        raise UserError(_misfit_message(slot, registered_name, cls, args, kwargs, error)) from error


def _misfit_message(slot, registered_name, cls, args, kwargs, error) -> str:
    shown = ", ".join(
        [*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items() if k != "dtype")]
    )
    return (
        f"cannot build {slot} `{registered_name}` ({_qualname(cls)}) with ({shown}): {error}. "
        f"See docs/extending.md for what a {slot} class must accept."
    )


def register(slot: str, name: str | None = None, *, package: str | None = None) -> Callable:
    """Class decorator: make a Keras class selectable from YAML under ``slot``.

    Args:
        slot: str, one of ``attention``, ``feed_forward``, ``normalization``,
            ``positional_encoding``, ``encoder_layer``, ``decoder_layer``, ``model``.
        name: str, the name used in configs. Defaults to ``"<module>.<ClassName>"`` where
            ``<module>`` is the last part of the defining module's name (``my_layers.GatedFFN``).
        package: str, the Keras serialization package. Defaults to the module name for user
            classes.

    Example:
        >>> @transformer_tf.register("feed_forward")
        ... class GatedFeedForward(keras.layers.Layer): ...
    """
    registry = get_registry(slot)

    def decorator(cls: type) -> type:
        module = cls.__module__.rsplit(".", 1)[-1]
        registered_name = name or f"{module}.{cls.__name__}"
        keras_package = package or (
            "transformer_tf" if cls.__module__.startswith("transformer_tf.") else cls.__module__
        )
        registry.add(registered_name, cls)
        # Keras overwrites silently on a clash; our registry has already refused real clashes.
        keras.saving.register_keras_serializable(package=keras_package)(cls)
        return cls

    return decorator


def _same_class(a: type, b: type) -> bool:
    # Re-executing the same module (a plugin loaded twice, an autoreload) defines an equal class.
    return a is b or (a.__module__ == b.__module__ and a.__qualname__ == b.__qualname__)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
