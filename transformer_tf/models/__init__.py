"""Models and the model registry."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import keras

from transformer_tf.models.classifier import TransformerClassifier
from transformer_tf.models.masked_lm import TransformerMaskedLM
from transformer_tf.models.seq2seq import Seq2SeqTransformer
from transformer_tf.registry import build, get_registry


def weight_path(variable) -> str:
    """A weight's path below its model (``encoder/layer_0/.../kernel``): the model's own name is
    auto-numbered by Keras and differs between two models of one process, the rest does not."""
    return variable.path.split("/", 1)[1]


def model_arguments(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``kwargs`` that the model registered as ``name`` accepts.

    One config section (``model:``) serves every model: ``pooling`` only reaches classifiers,
    for example, so keyword arguments the constructor does not name are dropped.
    """
    cls = get_registry("model").get(name)
    parameters = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in parameters}


@contextlib.contextmanager
def dtype_policy_scope(name: str | None) -> Iterator[None]:
    """Set Keras' global dtype policy to ``name`` inside the block only (None: no change).

    Layers created without an explicit ``dtype`` take the global policy; a plugin layer that
    builds its own sublayers that way still gets the run's policy, and nothing leaks out.
    """
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(name: str, *, dtype_policy: str | None = None, **kwargs: Any) -> keras.Model:
    """Instantiate the model registered as ``name`` with the arguments it accepts.

    Args:
        name: str, a registered ``model`` name.
        dtype_policy: str or None, ``"float32"``, ``"mixed_float16"`` or ``"mixed_bfloat16"``;
            given to the model (which hands it to every sublayer) and set globally only while
            the model is constructed. None keeps the global policy.
        **kwargs: constructor arguments; those the class does not accept are dropped.
    """
    accepted = model_arguments(name, kwargs)
    if dtype_policy is not None:
        accepted["dtype"] = dtype_policy
    with dtype_policy_scope(dtype_policy):
        return build("model", name, **accepted)


__all__ = [
    "Seq2SeqTransformer",
    "TransformerClassifier",
    "TransformerMaskedLM",
    "build_model",
    "dtype_policy_scope",
    "model_arguments",
    "weight_path",
]
