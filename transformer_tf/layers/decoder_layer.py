"""One Transformer decoder block: the ``decoder_layer`` slot.

Interface of the slot: the constructor arguments of :class:`TransformerDecoderLayer`,
``call(x, encoder_output, source_padding_mask=None, target_padding_mask=None, cache=None,
cache_index=None, training=None)`` and ``init_cache(batch_size, max_length, encoder_output)``.
With a ``cache`` the call returns ``(x, cache)``. Optional: a ``return_attention_scores`` call
argument that appends the cross-attention weights ``(batch, heads, target_length,
source_length)`` to the outputs (``translate --alignment`` needs it in the last block).
"""

from __future__ import annotations

import keras

from transformer_tf.layers.encoder_layer import TransformerBlockBase, residual
from transformer_tf.registry import register


@register("decoder_layer", "transformer")
class TransformerDecoderLayer(TransformerBlockBase):
    """Causal self-attention, cross-attention to the encoder output, then feed-forward.

    Each sublayer has dropout, a residual and normalization (post-norm by default, pre-norm with
    ``normalize_first``). Arguments: the block arguments of
    :class:`~transformer_tf.layers.encoder_layer.TransformerBlockBase`.

    Call:
        x: ``(batch, target_length, d_model)`` target embeddings (or the previous block's output).
        encoder_output: ``(batch, source_length, d_model)``, the *final* encoder output; may be
            None when ``cache`` holds its cross-attention keys and values.
        source_padding_mask: ``(batch, source_length)`` bool, True at real source tokens: padded
            source positions receive no cross-attention.
        target_padding_mask: ``(batch, target_length)`` bool, optional; self-attention is causal
            in any case, so right padding cannot reach real positions without it.
        cache: ``{"self": {"key", "value"}, "cross": {"key", "value"}}`` from
            :meth:`init_cache`, for incremental decoding; ``x`` then holds the tokens at
            ``cache_index ..``. Returns ``(x, new_cache)``.
        cache_index: int scalar tensor, the position of the first token of ``x``.
        return_attention_scores: bool, also return the cross-attention weights ``(batch,
            heads, target_length, source_length)`` (softmax over the source; 0 at padded
            source positions), appended to the outputs: ``(x, weights)`` or ``(x, cache,
            weights)``. Defaults to False.
    """

    def __init__(self, d_model, num_heads, d_ff, **kwargs):
        super().__init__(d_model, num_heads, d_ff, **kwargs)
        self.self_attention = self._attention("self_attention")
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        self.cross_attention = self._attention("cross_attention", cross=True)
        self.cross_attention_norm = self._norm("cross_attention_norm")
        self.cross_attention_dropout = self._dropout("cross_attention_dropout")
        self.feed_forward_layer = self._feed_forward("feed_forward")
        self.feed_forward_norm = self._norm("feed_forward_norm")
        self.feed_forward_dropout = self._dropout("feed_forward_dropout")

    def build(self, x_shape, encoder_output_shape=None):
        # Keras maps build arguments to call arguments by name: `x` -> `x_shape`.
        input_shape = x_shape
        encoder_output_shape = encoder_output_shape or input_shape
        self.self_attention.build(input_shape, input_shape)
        self.self_attention_norm.build(input_shape)
        self.cross_attention.build(input_shape, encoder_output_shape)
        self.cross_attention_norm.build(input_shape)
        self.feed_forward_layer.build(input_shape)
        self.feed_forward_norm.build(input_shape)
        self.built = True

    def init_cache(self, batch_size, max_length, encoder_output):
        """Empty self-attention keys/values and the cross-attention projections of the encoder."""
        return {
            "self": self.self_attention.init_cache(batch_size, max_length),
            "cross": self.cross_attention.compute_cache(encoder_output),
        }

    def cache_reorder_flags(self, cache):
        """The cache's structure with True where an entry belongs to one hypothesis.

        Beam search reorders (gathers) those entries when hypotheses are reordered. The
        self-attention keys and values differ per hypothesis; the cross-attention projections
        of the encoder output are the same for every beam of a source, so they stay put.
        """
        return {
            "self": keras.tree.map_structure(lambda _: True, cache["self"]),
            "cross": keras.tree.map_structure(lambda _: False, cache["cross"]),
        }

    def call(
        self,
        x,
        encoder_output=None,
        source_padding_mask=None,
        target_padding_mask=None,
        cache=None,
        cache_index=None,
        training=None,
        return_attention_scores=False,
    ):
        def self_attention(h):
            if cache is None:
                out = self.self_attention(
                    h, h, key_padding_mask=target_padding_mask, causal=True, training=training
                )
                return out, None
            return self.self_attention(
                h, h, cache=cache["self"], cache_index=cache_index, training=training
            )

        def cross_attention(h):
            # The weights ride along as the sublayer's extra output (None unless asked for).
            if cache is None:
                out = self.cross_attention(
                    h,
                    encoder_output,
                    key_padding_mask=source_padding_mask,
                    return_attention_scores=return_attention_scores,
                    training=training,
                )
                return out if return_attention_scores else (out, None)
            outputs = self.cross_attention(
                h,
                None,
                key_padding_mask=source_padding_mask,
                cache=cache["cross"],
                return_attention_scores=return_attention_scores,
                training=training,
            )
            return outputs[0], (outputs[2] if return_attention_scores else None)

        x, self_cache = residual(
            x,
            self_attention,
            self.self_attention_norm,
            self.self_attention_dropout,
            self.normalize_first,
            training,
        )
        x, weights = residual(
            x,
            cross_attention,
            self.cross_attention_norm,
            self.cross_attention_dropout,
            self.normalize_first,
            training,
        )
        x = self._feed_forward_residual(x, training)
        outputs = (x,) if cache is None else (x, {"self": self_cache, "cross": cache["cross"]})
        if return_attention_scores:
            outputs += (weights,)
        return outputs[0] if len(outputs) == 1 else outputs
