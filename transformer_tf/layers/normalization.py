"""Normalization: the ``normalization`` slot.

Interface of the slot: ``__init__(epsilon=..., **kwargs)`` and ``call(x)`` normalising the last
axis of ``(batch, length, d_model)``. ``layer_norm`` is Keras' own ``LayerNormalization``.
"""

from __future__ import annotations

import keras

from transformer_tf.registry import build, get_registry

# Keras' class is already serializable under its own name: only map the config name to it.
get_registry("normalization").add("layer_norm", keras.layers.LayerNormalization)


def make_normalization(
    name: str, epsilon: float, layer_name: str, dtype=None
) -> keras.layers.Layer:
    """Build the normalization layer registered as ``name``."""
    return build("normalization", name, epsilon=epsilon, name=layer_name, dtype=dtype)
