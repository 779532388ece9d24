"""The decoder stack, with the per-layer cache for incremental decoding."""

from __future__ import annotations

import inspect

import keras

from transformer_tf.layers.encoder import TransformerStack


@keras.saving.register_keras_serializable(package="transformer_tf")
class TransformerDecoder(TransformerStack):
    """``num_layers`` decoder blocks (the ``decoder_layer`` slot named by ``block``).

    Args: ``num_layers`` (int) and ``block`` (str, default ``"transformer"``), plus the block
    arguments of :class:`~transformer_tf.layers.encoder_layer.TransformerBlockBase`.

    Call:
        x: ``(batch, target_length, d_model)`` *target* embeddings.
        encoder_output: ``(batch, source_length, d_model)``, the *final* encoder output (every
            block attends to it; None when the cache holds its projections).
        source_padding_mask: ``(batch, source_length)`` bool, True at real source tokens.
        target_padding_mask: ``(batch, target_length)`` bool, optional.
        cache: a list with one cache per block, from :meth:`init_cache`; the call then returns
            ``(x, new_cache)`` and ``x`` holds the tokens at positions ``cache_index ..``.
        cache_index: int scalar tensor.
    """

    slot = "decoder_layer"

    def build(self, x_shape, encoder_output_shape=None):
        # Keras maps build arguments to call arguments by name: `x` -> `x_shape`.
        input_shape = x_shape
        for block in self.blocks:
            block.build(input_shape, encoder_output_shape)
        if self.final_norm is not None:
            self.final_norm.build(input_shape)
        self.built = True

    def init_cache(self, batch_size, max_length, encoder_output):
        """One cache per block: room for ``max_length`` target positions, plus the
        cross-attention keys and values of ``encoder_output`` (computed once, not per step)."""
        return [block.init_cache(batch_size, max_length, encoder_output) for block in self.blocks]

    def cache_reorder_flags(self, cache):
        """Per block, the cache's structure with True where an entry belongs to one hypothesis
        (see ``TransformerDecoderLayer.cache_reorder_flags``). A block class without the method
        has every entry reordered, which is always correct."""
        return [
            block.cache_reorder_flags(block_cache)
            if hasattr(block, "cache_reorder_flags")
            else keras.tree.map_structure(lambda _: True, block_cache)
            for block, block_cache in zip(self.blocks, cache, strict=True)
        ]

    def supports_attention_scores(self) -> bool:
        """Whether the last block's call takes ``return_attention_scores`` (see
        :meth:`cross_attention_weights`); a plugin block may not."""
        parameters = inspect.signature(self.blocks[-1].call).parameters
        return "return_attention_scores" in parameters

    def cross_attention_weights(
        self, x, encoder_output, source_padding_mask=None, target_padding_mask=None
    ):
        """The last block's cross-attention weights, teacher-forced (no dropout).

        Args:
            x: ``(batch, target_length, d_model)`` target embeddings.
            encoder_output: ``(batch, source_length, d_model)``, the final encoder output.
            source_padding_mask: ``(batch, source_length)`` bool, True at real source tokens.
            target_padding_mask: ``(batch, target_length)`` bool, optional.

        Returns:
            ``(batch, heads, target_length, source_length)``: per head and target position, the
            softmax over the source (0 at padded positions).

        Raises:
            NotImplementedError: the last block's class does not return attention weights.
        """
        last = self.blocks[-1]
        if not self.supports_attention_scores():
            raise NotImplementedError(
                f"the decoder layer {type(last).__name__} does not return its cross-attention "
                "weights (its call has no return_attention_scores argument)"
            )
        for block in self.blocks[:-1]:
            x = block(
                x,
                encoder_output,
                source_padding_mask=source_padding_mask,
                target_padding_mask=target_padding_mask,
                training=False,
            )
        _, weights = last(
            x,
            encoder_output,
            source_padding_mask=source_padding_mask,
            target_padding_mask=target_padding_mask,
            training=False,
            return_attention_scores=True,
        )
        return weights

    def call(
        self,
        x,
        encoder_output=None,
        source_padding_mask=None,
        target_padding_mask=None,
        cache=None,
        cache_index=None,
        training=None,
    ):
        new_cache = []
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = block(
                    x,
                    encoder_output,
                    source_padding_mask=source_padding_mask,
                    target_padding_mask=target_padding_mask,
                    training=training,
                )
            else:
                x, block_cache = block(
                    x,
                    encoder_output,
                    source_padding_mask=source_padding_mask,
                    cache=cache[i],
                    cache_index=cache_index,
                    training=training,
                )
                new_cache.append(block_cache)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x if cache is None else (x, new_cache)
