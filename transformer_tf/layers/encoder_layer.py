"""One Transformer encoder block: the ``encoder_layer`` slot.

Interface of the slot: the constructor arguments of :class:`TransformerEncoderLayer` and
``call(x, padding_mask=None, training=None)`` mapping ``(batch, length, d_model)`` to the same
shape; ``padding_mask`` ``(batch, length)`` is True at real tokens.
"""

from __future__ import annotations

import keras

from transformer_tf.layers.normalization import make_normalization
from transformer_tf.registry import build, register


def residual(x, sublayer, norm, dropout, normalize_first, training):
    """``norm(x + dropout(f(x)))`` (post-norm) or ``x + dropout(f(norm(x)))`` (pre-norm).

    One code path for both placements; ``sublayer`` is a function of the (maybe normalised) input
    that returns ``(output, extra)``, where ``extra`` (a cache, or None) is passed through.
    """
    y, extra = sublayer(norm(x) if normalize_first else x)
    x = x + dropout(y, training=training)
    return (x if normalize_first else norm(x)), extra


class _BlockConfig(keras.layers.Layer):
    """Shared constructor, sublayer factories and config of the encoder and decoder blocks."""

    def __init__(
        self,
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
        **kwargs,
    ):
        super().__init__(**kwargs)
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

    # Sublayers take this layer's dtype policy, so that a mixed-precision model reloaded from
    # its config gets mixed-precision sublayers whatever the global policy is then.

    def _attention(self, name):
        return build(
            "attention",
            self.attention,
            self.d_model,
            self.num_heads,
            dropout=self.attention_dropout,
            name=name,
            dtype=self.dtype_policy,
        )

    def _feed_forward(self, name):
        return build(
            "feed_forward",
            self.feed_forward,
            self.d_model,
            self.d_ff,
            activation=self.activation,
            dropout=self.ffn_dropout,
            name=name,
            dtype=self.dtype_policy,
        )

    def _norm(self, name):
        return make_normalization(
            self.normalization, self.layer_norm_epsilon, name, dtype=self.dtype_policy
        )

    def _dropout(self, name):
        return keras.layers.Dropout(self.dropout, name=name, dtype=self.dtype_policy)

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "d_model": self.d_model,
                "num_heads": self.num_heads,
                "d_ff": self.d_ff,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "ffn_dropout": self.ffn_dropout,
                "activation": self.activation,
                "normalize_first": self.normalize_first,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "attention": self.attention,
                "feed_forward": self.feed_forward,
                "normalization": self.normalization,
            }
        )
        return config


@register("encoder_layer", "transformer")
class TransformerEncoderLayer(_BlockConfig):
    """Self-attention then feed-forward, each with dropout, a residual and normalization.

    Post-norm (Vaswani et al. 2017) by default; ``normalize_first=True`` gives pre-norm, whose
    stack then needs a final normalization (added by :class:`TransformerEncoder`).

    Args:
        d_model: int, model size.
        num_heads: int, attention heads; must divide ``d_model``.
        d_ff: int, feed-forward inner size.
        dropout: float, dropout on each sublayer output before the residual. Defaults to 0.1.
        attention_dropout: float, dropout on attention weights. Defaults to 0.
        ffn_dropout: float, dropout on the feed-forward inner activations. Defaults to 0.
        activation: str, ``"relu"`` or ``"gelu"``. Defaults to ``"relu"``.
        normalize_first: bool, pre-norm instead of post-norm. Defaults to False.
        layer_norm_epsilon: float. Defaults to 1e-6.
        attention, feed_forward, normalization: str, registered names for those slots.
            Default to ``"multi_head"``, ``"position_wise"``, ``"layer_norm"``.

    Call: ``x`` ``(batch, length, d_model)``, ``padding_mask`` ``(batch, length)`` bool (True at
    real tokens; padded keys receive no attention).
    """

    def __init__(self, d_model, num_heads, d_ff, **kwargs):
        super().__init__(d_model, num_heads, d_ff, **kwargs)
        self.self_attention = self._attention("self_attention")
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        self.feed_forward_layer = self._feed_forward("feed_forward")
        self.feed_forward_norm = self._norm("feed_forward_norm")
        self.feed_forward_dropout = self._dropout("feed_forward_dropout")

    def build(self, input_shape):
        self.self_attention.build(input_shape, input_shape)
        self.self_attention_norm.build(input_shape)
        self.feed_forward_layer.build(input_shape)
        self.feed_forward_norm.build(input_shape)
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        x, _ = residual(
            x,
            lambda h: (
                self.self_attention(h, h, key_padding_mask=padding_mask, training=training),
                None,
            ),
            self.self_attention_norm,
            self.self_attention_dropout,
            self.normalize_first,
            training,
        )
        x, _ = residual(
            x,
            lambda h: (self.feed_forward_layer(h, training=training), None),
            self.feed_forward_norm,
            self.feed_forward_dropout,
            self.normalize_first,
            training,
        )
        return x
