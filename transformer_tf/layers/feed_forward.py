"""Position-wise feed-forward network: the ``feed_forward`` slot.

Interface of the slot: ``__init__(d_model, d_ff, activation="relu", dropout=0.0, **kwargs)`` and
``call(x, training=None)`` mapping ``(batch, length, d_model)`` to the same shape, each position
independently (so padding positions never leak into real ones).
"""

from __future__ import annotations

import keras

from transformer_tf.registry import register


@register("feed_forward", "position_wise")
class PositionwiseFeedForward(keras.layers.Layer):
    """``Dense(d_model)(dropout(activation(Dense(d_ff)(x))))``.

    Args:
        d_model: int, input and output size.
        d_ff: int, inner size.
        activation: str, ``"relu"`` (the paper), ``"gelu"`` or ``"swish"``. Defaults to
            ``"relu"``.
        dropout: float, dropout on the inner activations. Defaults to 0.
    """

    def __init__(
        self, d_model: int, d_ff: int, activation: str = "relu", dropout: float = 0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.d_model = d_model
        self.d_ff = d_ff
        self.activation = activation
        self.dropout = dropout
        policy = self.dtype_policy
        self.inner_dense = keras.layers.Dense(
            d_ff, activation=activation, name="inner", dtype=policy
        )
        self.output_dense = keras.layers.Dense(d_model, name="output", dtype=policy)
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout", dtype=policy)

    def build(self, input_shape):
        self.inner_dense.build(input_shape)
        self.output_dense.build((*input_shape[:-1], self.d_ff))
        self.built = True

    def call(self, x, training=None):
        h = self.inner_dense(x)  # (batch, length, d_ff)
        return self.output_dense(self.dropout_layer(h, training=training))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.d_model)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "d_model": self.d_model,
                "d_ff": self.d_ff,
                "activation": self.activation,
                "dropout": self.dropout,
            }
        )
        return config
