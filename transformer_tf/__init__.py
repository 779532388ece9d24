"""transformer_tf: train encoder-decoder Transformers from YAML configs (Keras 3, TensorFlow).

Importing the package registers every built-in layer and model with Keras, so ``.keras`` files
saved by it reload with ``keras.saving.load_model`` and no ``custom_objects``.

One exception: in the ``transformer-tf`` command's own process (the console script, or
``python -m transformer_tf.cli``) the import is deferred, so that ``--help`` and config errors
answer without importing TensorFlow. The command calls :func:`load_builtins` once a command
needs the models; ``transformer_tf.layers``, ``.models`` and ``.register`` also load them on
first access. A script that runs the command's ``main`` (``scripts/train.py``) opts into the same
by setting ``TRANSFORMER_TF_DEFER_BUILTINS = True`` in its own module before importing the package.
"""

import importlib
import os
import sys

__version__ = "0.1.0"

__all__ = ["layers", "load_builtins", "models", "register", "__version__"]

#: The names :func:`load_builtins` binds; attribute access to them loads the built-ins on demand.
_BUILTIN_NAMES = ("layers", "models", "register")


def load_builtins() -> None:
    """Import the built-in layers and models, registering them with Keras and the registries.

    Importing the package already does this, except in the ``transformer-tf`` command's process
    (see the module docstring). Calling it again does nothing. Imports TensorFlow.
    """
    global layers, models, register
    # import_module, not `from transformer_tf import layers`: that form asks this module's
    # __getattr__ first, which would call this function again.
    layers = importlib.import_module("transformer_tf.layers")
    models = importlib.import_module("transformer_tf.models")
    register = importlib.import_module("transformer_tf.registry").register


def _started_as_command(argv: list[str], orig_argv: list[str]) -> bool:
    """True when this process runs the ``transformer-tf`` command.

    Args:
        argv: ``sys.argv`` at the package's import: ``[".../transformer-tf", ...]`` for the
            console script; ``["-m", ...]`` while ``python -m`` imports the main module's package.
        orig_argv: ``sys.orig_argv``, the interpreter's own command line (``-m MODULE``).

    A wrong False only costs speed (the eager import of before); a wrong True would leave the
    built-ins unregistered until first use, so only these two exact forms (and the opt-in of
    the module docstring) count.
    """
    if getattr(sys.modules.get("__main__"), "TRANSFORMER_TF_DEFER_BUILTINS", False) is True:
        return True  # A script's explicit opt-in (see the module docstring).
    if not argv:
        return False
    if os.path.basename(argv[0]).removesuffix(".exe") == "transformer-tf":
        return True
    # `python -m transformer_tf.cli`: while -m imports the package, argv[0] is "-m".
    return argv[0] == "-m" and "transformer_tf.cli" in orig_argv


if _started_as_command(sys.argv, getattr(sys, "orig_argv", [])):

    def __getattr__(name: str):
        if name in _BUILTIN_NAMES:
            load_builtins()
            return globals()[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

else:
    # TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) is not for our users. The
    # command sets its own level (and silences more, unless -v): see transformer_tf.cli.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_builtins()
