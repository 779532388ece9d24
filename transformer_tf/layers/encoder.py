"""Stacks of encoder and decoder blocks."""

from __future__ import annotations

import keras

from transformer_tf.layers.normalization import make_normalization
from transformer_tf.registry import get_registry

# Constructor arguments that the stacks pass through to every block.
BLOCK_ARGS = (
    "d_model",
    "num_heads",
    "d_ff",
    "dropout",
    "attention_dropout",
    "ffn_dropout",
    "activation",
    "normalize_first",
    "layer_norm_epsilon",
    "attention",
    "feed_forward",
    "normalization",
)


class _Stack(keras.layers.Layer):
    """N blocks of the registered ``slot`` class, plus the final norm that pre-norm needs."""

    slot = ""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        activation: str = "relu",
        normalize_first: bool = False,
        layer_norm_epsilon: float = 1e-6,
        attention: str = "multi_head",
        feed_forward: str = "position_wise",
        normalization: str = "layer_norm",
        block: str = "transformer",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.ffn_dropout = ffn_dropout
        self.activation = activation
        self.normalize_first = normalize_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention = attention
        self.feed_forward = feed_forward
        self.normalization = normalization
        self.block = block
        block_cls = get_registry(self.slot).get(block)
        block_kwargs = {name: getattr(self, name) for name in BLOCK_ARGS}
        self.blocks = [block_cls(**block_kwargs, name=f"layer_{i}") for i in range(num_layers)]
        # Pre-norm leaves the residual stream unnormalised: the stack must normalise its output.
        self.final_norm = (
            make_normalization(normalization, layer_norm_epsilon, "final_norm")
            if normalize_first
            else None
        )

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in BLOCK_ARGS})
        config.update({"num_layers": self.num_layers, "block": self.block})
        return config


@keras.saving.register_keras_serializable(package="transformer_tf")
class TransformerEncoder(_Stack):
    """``num_layers`` encoder blocks (the ``encoder_layer`` slot named by ``block``).

    Args: ``num_layers`` (int) and ``block`` (str, default ``"transformer"``), plus the block
    arguments of :class:`~transformer_tf.layers.encoder_layer.TransformerEncoderLayer`.

    Call: ``x`` ``(batch, length, d_model)``, ``padding_mask`` ``(batch, length)`` bool, True at
    real tokens. Returns ``(batch, length, d_model)``.
    """

    slot = "encoder_layer"

    def build(self, input_shape):
        for block in self.blocks:
            block.build(input_shape)
        if self.final_norm is not None:
            self.final_norm.build(input_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        for block in self.blocks:
            x = block(x, padding_mask=padding_mask, training=training)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x
