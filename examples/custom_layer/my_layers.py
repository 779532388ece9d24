"""Two user layers for transformer_tf, kept outside the package: a gated feed-forward and RMSNorm.

This file is a *plugin*: a config lists it under ``plugins:`` and selects its classes by their
registered names (``model.feed_forward: my_layers.GatedFeedForward``). Importing it runs the
``@transformer_tf.register`` decorators, which put the classes in transformer_tf's registry (for
the YAML names) and in Keras' serialization registry (for ``.keras`` files, as package
``my_layers``, the module name). See ``docs/extending.md``.

Both layers use ``keras.ops`` only, so they run on any Keras backend, and implement ``build`` and
a complete ``get_config`` so that a model using them saves and reloads.
"""

from __future__ import annotations

import keras
from keras import ops

import transformer_tf


@transformer_tf.register("feed_forward")  # Registered as "my_layers.GatedFeedForward".
class GatedFeedForward(keras.layers.Layer):
    """Gated linear unit feed-forward (Shazeer 2020, "GLU Variants Improve Transformer").

    ``Dense(d_model)(dropout(activation(x W_gate + b) * (x W_value + c)))``: the activated gate
    multiplies a linear "value" projection position by position. ``activation="gelu"`` is GEGLU,
    ``"relu"`` is ReGLU, ``"silu"`` (swish) is SwiGLU.

    The constructor matches the ``feed_forward`` slot, ``(d_model, d_ff, activation, dropout)``:
    the blocks pass ``model.activation`` as ``activation``, which here is the gate's activation.
    Parameters: ``2 * (d_model * d_ff + d_ff) + d_ff * d_model + d_model``, one more
    ``d_model x d_ff`` matrix than the plain feed-forward; the paper uses 2/3 of its ``d_ff`` to
    keep the size equal.

    Args:
        d_model: int, input and output size.
        d_ff: int, inner size (of the gate and of the value).
        activation: str, activation of the gate, any Keras activation name. Defaults to
            ``"relu"``.
        dropout: float, dropout on the gated inner activations. Defaults to 0.

    Call: ``x`` ``(batch, length, d_model)`` -> ``(batch, length, d_model)``; each position
    independently, so padding never leaks into real positions (no mask needed).
    """

    def __init__(
        self, d_model: int, d_ff: int, activation: str = "relu", dropout: float = 0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.d_model = d_model
        self.d_ff = d_ff
        self.activation = activation
        self.dropout = dropout
        self.gate_dense = keras.layers.Dense(d_ff, activation=activation, name="gate")
        self.value_dense = keras.layers.Dense(d_ff, name="value")
        self.output_dense = keras.layers.Dense(d_model, name="output")
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout")

    def build(self, input_shape):
        # Built explicitly (not on first call) so that a reloaded model has its weights before
        # any call, which `.keras` loading needs to restore them.
        self.gate_dense.build(input_shape)
        self.value_dense.build(input_shape)
        self.output_dense.build((*input_shape[:-1], self.d_ff))
        self.built = True

    def call(self, x, training=None):
        hidden = self.gate_dense(x) * self.value_dense(x)  # (batch, length, d_ff)
        hidden = self.dropout_layer(hidden, training=training)
        return self.output_dense(hidden)  # (batch, length, d_model)

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


@transformer_tf.register("normalization")  # Registered as "my_layers.RMSNorm".
class RMSNorm(keras.layers.Layer):
    """Root-mean-square normalization (Zhang & Sennrich 2019): ``x / rms(x) * scale``.

    Unlike LayerNorm it neither subtracts the mean nor adds a bias: one learned scale per
    feature, ``rms(x) = sqrt(mean(x ** 2) + epsilon)`` over the last axis.

    The constructor matches the ``normalization`` slot, ``(epsilon, **kwargs)``: the blocks pass
    ``model.layer_norm_epsilon`` as ``epsilon``.

    Args:
        epsilon: float, added to the mean square for numerical stability. Defaults to 1e-6.

    Call: ``x`` ``(..., features)`` -> the same shape and dtype.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        # Named "gamma" like LayerNormalization's scale: the AdamW optimizer of transformer_tf
        # excludes weights named gamma/beta/bias from weight decay, and a norm scale should be.
        self.scale = self.add_weight(
            name="gamma", shape=(input_shape[-1],), initializer="ones", trainable=True
        )
        self.built = True

    def call(self, x):
        # Mean of squares in float32: under mixed_float16, squares of activations above ~256
        # overflow float16.
        x32 = ops.cast(x, "float32")
        inverse_rms = ops.rsqrt(ops.mean(ops.square(x32), axis=-1, keepdims=True) + self.epsilon)
        normalized = x32 * inverse_rms * ops.cast(self.scale, "float32")
        return ops.cast(normalized, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config
