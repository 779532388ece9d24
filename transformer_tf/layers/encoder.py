"""Stacks of encoder and decoder blocks."""

from __future__ import annotations

import keras

from transformer_tf.block_args import BLOCK_ARGS, block_arg_values
from transformer_tf.layers.encoder_layer import TransformerBlockBase
from transformer_tf.registry import build

# BLOCK_ARGS (the block arguments' names) is also importable from here, where it used to live.
__all__ = ["BLOCK_ARGS", "TransformerEncoder", "TransformerStack"]


@keras.saving.register_keras_serializable(package="transformer_tf")  # As every public layer.
class TransformerStack(TransformerBlockBase):
    """N blocks of the registered ``slot`` class, plus the final norm that pre-norm needs.

    Args:
        num_layers: int, the number of blocks.
        d_model, num_heads, d_ff, and the other block arguments of
            :class:`~transformer_tf.layers.encoder_layer.TransformerBlockBase`: passed to every
            block (and kept as attributes).
        block: str, the registered name of the block class in ``slot``. Defaults to
            ``"transformer"``.

    A subclass sets ``slot`` (``"encoder_layer"`` or ``"decoder_layer"``) and implements
    ``build`` and ``call``.
    """

    slot = ""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        block: str = "transformer",
        **kwargs,
    ):
        super().__init__(d_model, num_heads, d_ff, **kwargs)
        self.num_layers = num_layers
        self.block = block
        self.blocks = [
            build(
                self.slot,
                block,
                **block_arg_values(self),
                name=f"layer_{i}",
                dtype=self.dtype_policy,
            )
            for i in range(num_layers)
        ]
        # Pre-norm leaves the residual stream unnormalised: the stack must normalise its output.
        self.final_norm = self._norm("final_norm") if self.normalize_first else None

    def get_config(self):
        config = super().get_config()
        config.update({"num_layers": self.num_layers, "block": self.block})
        return config


@keras.saving.register_keras_serializable(package="transformer_tf")
class TransformerEncoder(TransformerStack):
    """``num_layers`` encoder blocks (the ``encoder_layer`` slot named by ``block``).

    Args: ``num_layers`` (int) and ``block`` (str, default ``"transformer"``), plus the block
    arguments of :class:`~transformer_tf.layers.encoder_layer.TransformerBlockBase`.

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
