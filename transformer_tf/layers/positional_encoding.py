"""Positional encodings: the ``positional_encoding`` slot.

Interface of the slot: ``__init__(max_length, d_model, **kwargs)`` and
``call(inputs, start_index=0)`` where ``inputs`` is ``(batch, length, d_model)``; returns
``inputs`` plus the encoding of positions ``start_index .. start_index + length - 1``
(``start_index`` lets incremental decoding encode one new position at a time).

A class may set ``length_limited = False`` when it encodes any position (no table): a trained
run can then decode longer than the length it was built for. Classes without the attribute are
taken to be limited to ``max_length`` positions.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from transformer_tf.registry import register


@register("positional_encoding", "sinusoidal")
class SinusoidalPositionalEncoding(keras.layers.Layer):
    """Fixed sine/cosine position encoding of Vaswani et al. (2017), added to the inputs.

    ``PE[pos, 2i] = sin(pos / 10000^(2i/d))`` and ``PE[pos, 2i+1] = cos(...)``: computed on the
    fly, so it has no weights and works at any length; ``max_length`` is kept for the interface.

    Args:
        max_length: int, the longest sequence expected (not a hard limit here).
        d_model: int, feature size; must be even.
    """

    #: Whether inputs longer than ``max_length`` are an error (a table of positions). A run
    #: reloaded to decode longer than it was built for is refused only when this is True.
    length_limited = False

    def __init__(self, max_length: int, d_model: int, **kwargs):
        super().__init__(**kwargs)
        if d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")
        self.max_length = max_length
        self.d_model = d_model

    def call(self, inputs, start_index=0):
        length = ops.shape(inputs)[1]
        positions = ops.cast(ops.arange(length) + start_index, "float32")
        # Frequencies 1 / 10000^(2i/d) for i in [0, d/2).
        inv_freq = ops.exp(
            ops.arange(0, self.d_model, 2, dtype="float32") * (-math.log(10000.0) / self.d_model)
        )
        angles = positions[:, None] * inv_freq[None, :]  # (length, d_model / 2)
        # Interleave sin and cos so that channel 2i is sin and 2i+1 is cos.
        encoding = ops.reshape(
            ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1), (length, self.d_model)
        )  # (length, d_model)
        return inputs + ops.cast(encoding, inputs.dtype)[None, :, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"max_length": self.max_length, "d_model": self.d_model})
        return config


#: The name of :class:`LearnedPositionalEmbedding`'s table (``train --init-from`` maps its rows
#: by position when the new model has another ``max_length``).
POSITION_TABLE = "position_embeddings"


@register("positional_encoding", "learned")
class LearnedPositionalEmbedding(keras.layers.Layer):
    """Trainable position vectors, one per position up to ``max_length``, added to the inputs.

    Args:
        max_length: int, number of positions; longer inputs are an error at call time.
        d_model: int, feature size.
        initializer: str or initializer for the position table. Defaults to ``"glorot_uniform"``.
    """

    length_limited = True

    def __init__(self, max_length: int, d_model: int, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.max_length = max_length
        self.d_model = d_model
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape=None):
        self.position_embeddings = self.add_weight(
            name=POSITION_TABLE,
            shape=(self.max_length, self.d_model),
            initializer=self.initializer,
        )
        self.built = True

    def call(self, inputs, start_index=0):
        length = ops.shape(inputs)[1]
        positions = ops.arange(length) + start_index
        encoding = ops.take(self.position_embeddings, positions, axis=0)  # (length, d_model)
        return inputs + ops.cast(encoding, inputs.dtype)[None, :, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_length": self.max_length,
                "d_model": self.d_model,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
