"""Models and the model registry."""

from __future__ import annotations

import inspect
from typing import Any

import keras

from transformer_tf.models.classifier import TransformerClassifier
from transformer_tf.models.seq2seq import Seq2SeqTransformer
from transformer_tf.registry import build, get_registry


def build_model(name: str, **kwargs: Any) -> keras.Model:
    """Instantiate the model registered as ``name``.

    Keyword arguments the class's constructor does not accept are dropped, so one config
    section (``model:``) serves every model: ``pooling`` only reaches classifiers, for example.
    """
    cls = get_registry("model").get(name)
    parameters = inspect.signature(cls.__init__).parameters
    accepted = {k: v for k, v in kwargs.items() if k in parameters}
    return build("model", name, **accepted)


__all__ = ["Seq2SeqTransformer", "TransformerClassifier", "build_model"]
