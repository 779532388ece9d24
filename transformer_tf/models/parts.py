"""The parts that every built-in model builds the same way from its own arguments: the token
embeddings and the block stacks."""

from __future__ import annotations

import keras

from transformer_tf.block_args import block_arg_values
from transformer_tf.layers import TransformerEmbedding, TransformerStack


def model_embedding(model: keras.Model, vocab_size: int, name: str) -> TransformerEmbedding:
    """A token embedding of ``vocab_size`` ids with the model's ``d_model``, ``max_length``,
    ``positional_encoding``, ``dropout`` and dtype policy (the model's attributes, set from its
    arguments before this is called)."""
    return TransformerEmbedding(
        vocab_size,
        model.d_model,
        max_length=model.max_length,
        positional_encoding=model.positional_encoding,
        dropout=model.dropout,
        name=name,
        dtype=model.dtype_policy,
    )


def model_stack(
    model: keras.Model, stack: type[TransformerStack], num_blocks: int, block: str, name: str
) -> TransformerStack:
    """A ``stack`` (an encoder or a decoder) of ``num_blocks`` blocks registered as ``block``,
    each given the model's block arguments, in the model's dtype policy."""
    return stack(
        num_blocks,
        block=block,
        name=name,
        dtype=model.dtype_policy,
        **block_arg_values(model),
    )
