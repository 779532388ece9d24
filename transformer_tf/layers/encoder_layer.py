"""One Transformer encoder block: the ``encoder_layer`` slot.

Interface of the slot: the constructor arguments of :class:`TransformerEncoderLayer` and
``call(x, padding_mask=None, training=None)`` mapping ``(batch, length, d_model)`` to the same
shape; ``padding_mask`` ``(batch, length)`` is True at real tokens.
"""

from __future__ import annotations

import keras

from transformer_tf.block_args import block_arg_values, pop_block_args, with_block_args
from transformer_tf.errors import UserError
from transformer_tf.layers.normalization import make_normalization
from transformer_tf.registry import build, get_registry, register


def residual(x, sublayer, norm, dropout, normalize_first, training):
    """``norm(x + dropout(f(x)))`` (post-norm) or ``x + dropout(f(norm(x)))`` (pre-norm).

    One code path for both placements; ``sublayer`` is a function of the (maybe normalised) input
    that returns ``(output, extra)``, where ``extra`` (a cache, or None) is passed through.
    """
    y, extra = sublayer(norm(x) if normalize_first else x)
    x = x + dropout(y, training=training)
    return (x if normalize_first else norm(x)), extra


# Registered with Keras like every public layer (not in a slot: it is a base, not a block).
@keras.saving.register_keras_serializable(package="transformer_tf")
class TransformerBlockBase(keras.layers.Layer):
    """Base of the encoder and decoder blocks (and stacks): the block arguments, the sublayer
    factories and ``get_config``.

    Takes the fourteen block arguments of :data:`transformer_tf.block_args.BLOCK_ARG_SPECS`: the
    sizes ``d_model``, ``num_heads``, ``d_ff`` (int, required, positional or keyword) and, as
    keywords with the defaults given there, ``dropout`` (0.1), ``attention_dropout`` (0),
    ``ffn_dropout`` (0), ``activation`` (``"relu"``), ``normalize_first`` (False),
    ``layer_norm_epsilon`` (1e-6), ``attention`` (``"multi_head"``), ``feed_forward``
    (``"position_wise"``), ``normalization`` (``"layer_norm"``), ``positional_encoding``
    (``"sinusoidal"``) and ``maximum_relative_position`` (None). Each is kept as an attribute
    of the same name and returned by ``get_config``. Other keyword arguments go to
    ``keras.layers.Layer``. The last two only matter for self-attention: the embeddings add an
    absolute encoding, but ``relative`` and ``rotary`` are applied by self-attention (see
    :meth:`_attention`).

    A subclass builds its sublayers with :meth:`_attention`, :meth:`_feed_forward`,
    :meth:`_norm` and :meth:`_dropout`, which use the configured registry names and sizes.
    """

    @with_block_args
    def __init__(self, d_model: int, num_heads: int, d_ff: int, **kwargs):
        kwargs.update(d_model=d_model, num_heads=num_heads, d_ff=d_ff)
        block_args = pop_block_args(kwargs)
        super().__init__(**kwargs)
        for name, value in block_args.items():
            setattr(self, name, value)

    # Sublayers take this layer's dtype policy, so that a mixed-precision model reloaded from
    # its config gets mixed-precision sublayers whatever the global policy is then.

    def _attention(self, name, cross=False):
        """The configured attention. A self-attention (``cross=False``) also gets the
        positions when ``positional_encoding`` names a class with a ``position_mode``
        (``relative``, ``rotary``): ``position_mode=...`` and, for ``relative``,
        ``maximum_relative_position=...``; an attention class that does not take them is a
        :class:`~transformer_tf.errors.UserError`. Cross-attention never gets them."""
        positions = {} if cross else self._self_attention_positions()
        try:
            return build(
                "attention",
                self.attention,
                self.d_model,
                self.num_heads,
                dropout=self.attention_dropout,
                name=name,
                dtype=self.dtype_policy,
                **positions,
            )
        except UserError as error:
            if not positions:
                raise
            raise UserError(
                f"{error} model.positional_encoding `{self.positional_encoding}` is applied by "
                "self-attention: the attention class must accept position_mode (and "
                "maximum_relative_position), as multi_head does."
            ) from error

    def _self_attention_positions(self):
        """The position keyword arguments of self-attention (empty for absolute encodings)."""
        cls = get_registry("positional_encoding").get(self.positional_encoding)
        mode = getattr(cls, "position_mode", None) or None
        if mode != "relative" and self.maximum_relative_position is not None:
            raise ValueError(
                "maximum_relative_position is only used with relative positions, got "
                f"positional_encoding={self.positional_encoding!r}"
            )
        if mode is None:
            return {}
        positions = {"position_mode": mode}
        if mode == "relative":
            positions["maximum_relative_position"] = self.maximum_relative_position
        return positions

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

    def _feed_forward_residual(self, x, training):
        """The last sublayer of every block: feed-forward, dropout, residual, normalization
        (uses ``feed_forward_layer``, ``feed_forward_norm`` and ``feed_forward_dropout``)."""
        x, _ = residual(
            x,
            lambda h: (self.feed_forward_layer(h, training=training), None),
            self.feed_forward_norm,
            self.feed_forward_dropout,
            self.normalize_first,
            training,
        )
        return x

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(block_arg_values(self))
        return config


@register("encoder_layer", "transformer")
class TransformerEncoderLayer(TransformerBlockBase):
    """Self-attention then feed-forward, each with dropout, a residual and normalization.

    Post-norm (Vaswani et al. 2017) by default; ``normalize_first=True`` gives pre-norm, whose
    stack then needs a final normalization (added by :class:`TransformerEncoder`).

    Args: the block arguments of :class:`TransformerBlockBase` (``d_model``, ``num_heads``,
    ``d_ff``, ``dropout``, ..., ``normalization``; defined, with their meanings and defaults, in
    :data:`transformer_tf.block_args.BLOCK_ARG_SPECS`).

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
        return self._feed_forward_residual(x, training)
