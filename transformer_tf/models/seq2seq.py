"""The encoder-decoder Transformer (Vaswani et al., 2017)."""

from __future__ import annotations

import keras
from keras import ops

from transformer_tf.block_args import (
    block_arg_values,
    keep_arguments,
    pop_block_args,
    with_block_args,
)
from transformer_tf.data.special_tokens import PAD_ID
from transformer_tf.layers import TransformerDecoder, TransformerEncoder
from transformer_tf.models.parts import model_embedding, model_stack
from transformer_tf.registry import register


@register("model", "seq2seq_transformer")
class Seq2SeqTransformer(keras.Model):
    """Encoder-decoder Transformer for sequence-to-sequence tasks such as translation.

    Reads top to bottom: source ids -> source embedding -> encoder -> (final encoder output);
    target input ids (the target shifted right, starting with BOS) -> *target* embedding ->
    decoder (causal self-attention, cross-attention to the final encoder output masked by
    source padding) -> output projection -> float32 logits.

    Args:
        source_vocab_size, target_vocab_size: int, vocabulary sizes (id 0 is padding).
        num_layers: int, blocks per stack. Defaults to 2.
        the block arguments, keywords: ``d_model`` (128), ``num_heads`` (4), ``d_ff`` (512),
            ``dropout`` (0.1), ``attention_dropout`` (0), ``ffn_dropout`` (0), ``activation``
            (``"relu"``), ``normalize_first`` (False: post-norm, as in the paper),
            ``layer_norm_epsilon`` (1e-6), ``attention``, ``feed_forward``, ``normalization``
            (registered names), ``positional_encoding`` and ``maximum_relative_position``
            (below); defined in :data:`transformer_tf.block_args.BLOCK_ARG_SPECS` and passed to
            every block of both stacks. ``d_model % num_heads == 0``.
        positional_encoding: str, a registered name: ``"sinusoidal"`` (default), ``"learned"``,
            ``"opennmt_sinusoidal"``, ``"marian_sinusoidal"`` (added to both embeddings), or
            ``"relative"``, ``"rotary"`` (applied by the self-attention of both stacks; the
            embeddings get nothing and cross-attention stays as it is).
        maximum_relative_position: int >= 1 or None, the clipping distance of ``"relative"``
            (None: 20); only with ``"relative"``.
        max_length: int, number of positions. Defaults to 512.
        encoder_layer, decoder_layer: str, registered names of the blocks. Default to
            ``"transformer"``.
        num_encoder_layers, num_decoder_layers: int or None, override ``num_layers`` per stack.
        share_embeddings: bool, one embedding for source and target (needs equal vocabularies).
            Defaults to False.
        tie_embeddings: bool, the output projection is the transposed target embedding.
            Defaults to True.
        output_bias: bool, add a learned bias (zeros at the start) to the tied output
            projection's logits, as OpenNMT-tf and Marian models have. Defaults to False. An
            untied output layer always has its bias.

    Every argument is kept as an attribute of the same name and returned by ``get_config``.

    Call: ``model({"source": (batch, source_length) int, "target": (batch, target_length) int})``
    -> logits ``(batch, target_length, target_vocab_size)`` float32 (also under mixed precision).
    Lengths may differ between batches; padding (id 0) is masked everywhere.
    """

    @with_block_args
    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        num_layers: int = 2,
        *,
        max_length: int = 512,
        encoder_layer: str = "transformer",
        decoder_layer: str = "transformer",
        num_encoder_layers: int | None = None,
        num_decoder_layers: int | None = None,
        share_embeddings: bool = False,
        tie_embeddings: bool = True,
        output_bias: bool = False,
        **kwargs,
    ):
        block_args = pop_block_args(kwargs)
        super().__init__(**kwargs)
        if share_embeddings and source_vocab_size != target_vocab_size:
            raise ValueError(
                "share_embeddings needs one vocabulary for source and target, got "
                f"source_vocab_size={source_vocab_size} and target_vocab_size={target_vocab_size}"
            )
        keep_arguments(
            self,
            source_vocab_size=source_vocab_size,
            target_vocab_size=target_vocab_size,
            num_layers=num_layers,
            max_length=max_length,
            encoder_layer=encoder_layer,
            decoder_layer=decoder_layer,
            num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers,
            share_embeddings=share_embeddings,
            tie_embeddings=tie_embeddings,
            output_bias=output_bias,
            **block_args,
        )

        self.source_embedding = model_embedding(self, source_vocab_size, "source_embedding")
        self.encoder = model_stack(
            self, TransformerEncoder, num_encoder_layers or num_layers, encoder_layer, "encoder"
        )
        # The decoder reads the *target* sentence: its own embedding unless explicitly shared.
        self.target_embedding = (
            self.source_embedding
            if share_embeddings
            else model_embedding(self, target_vocab_size, "target_embedding")
        )
        self.decoder = model_stack(
            self, TransformerDecoder, num_decoder_layers or num_layers, decoder_layer, "decoder"
        )
        self.output_projection = (
            None
            if tie_embeddings
            else keras.layers.Dense(
                target_vocab_size, name="output_projection", dtype=self.dtype_policy
            )
        )

    def build(self, input_shape=None):
        hidden = (None, None, self.d_model)
        # Sublayers may already be built by a direct `encode` / `decode` call.
        for layer, shapes in (
            (self.source_embedding, [(None, None)]),
            (self.target_embedding, [(None, None)]),
            (self.encoder, [hidden]),
            (self.decoder, [hidden, hidden]),
            (self.output_projection, [hidden]),
        ):
            if layer is not None and not layer.built:
                layer.build(*shapes)
        if self.tie_embeddings and self.output_bias:
            self.logits_bias = self.add_weight(
                name="logits_bias", shape=(self.target_vocab_size,), initializer="zeros"
            )
        self.built = True

    def call(self, inputs, training=None):
        encoder_output, source_mask = self.encode(inputs["source"], training=training)
        return self.decode(inputs["target"], encoder_output, source_mask, training=training)

    def encode(self, source, training=None):
        """``(batch, source_length)`` ids -> final encoder output ``(batch, source_length,
        d_model)`` and the source padding mask ``(batch, source_length)`` (True at tokens)."""
        source_mask = ops.not_equal(source, PAD_ID)
        x = self.source_embedding(source, training=training)
        return self.encoder(x, padding_mask=source_mask, training=training), source_mask

    def decode(self, target, encoder_output, source_mask, training=None):
        """Teacher-forced decoding of ``(batch, target_length)`` target input ids -> logits."""
        target_mask = ops.not_equal(target, PAD_ID)
        y = self.target_embedding(target, training=training)  # (batch, target_length, d_model)
        y = self.decoder(
            y,
            encoder_output,
            source_padding_mask=source_mask,
            target_padding_mask=target_mask,
            training=training,
        )
        return self.project(y)

    def project(self, y):
        """Decoder states ``(..., d_model)`` -> float32 logits ``(..., target_vocab_size)``."""
        if self.output_projection is None:
            logits = self.target_embedding.project(y)
            if self.output_bias:
                logits = logits + ops.cast(self.logits_bias, logits.dtype)
        else:
            logits = self.output_projection(y)
        # Softmax and loss in float32 whatever the compute dtype.
        return ops.cast(logits, "float32")

    def init_cache(self, encoder_output, max_length):
        """Decoder cache for ``max_length`` target positions (see :meth:`decode_step`)."""
        batch_size = ops.shape(encoder_output)[0]
        return self.decoder.init_cache(batch_size, max_length, encoder_output)

    def cache_reorder_flags(self, cache):
        """The structure of ``cache`` with True at the entries that belong to one hypothesis,
        which beam search reorders with the hypotheses; False entries (the cross-attention
        projections, shared by the beams of a source) are left in place."""
        return self.decoder.cache_reorder_flags(cache)

    def decode_step(self, token_ids, cache, index, source_mask):
        """One incremental decoding step.

        Args:
            token_ids: ``(batch, 1)`` the tokens at position ``index``.
            cache: from :meth:`init_cache` or the previous step.
            index: int scalar tensor, the position of ``token_ids``.
            source_mask: ``(batch, source_length)`` bool.

        Returns: float32 logits ``(batch, target_vocab_size)`` for position ``index + 1`` and
        the updated cache. Costs one position, not the whole prefix.
        """
        y = self.target_embedding(token_ids, start_index=index)  # (batch, 1, d_model)
        y, cache = self.decoder(
            y, None, source_padding_mask=source_mask, cache=cache, cache_index=index
        )
        return self.project(y)[:, -1, :], cache

    def cross_attention(self, source, target):
        """The last decoder block's cross-attention weights of a teacher-forced pass.

        Args:
            source: ``(batch, source_length)`` int source ids, right-padded with ``PAD_ID``.
            target: ``(batch, target_length)`` int target *input* ids (BOS first), right-padded.

        Returns:
            float32 ``(batch, heads, target_length, source_length)``: at each target position,
            per head, the softmax over the source positions (0 at padding). Row ``t`` is the
            attention of the step that predicts target token ``t``.

        Raises:
            NotImplementedError: the decoder layer class does not return attention weights.
        """
        encoder_output, source_mask = self.encode(source, training=False)
        y = self.target_embedding(target, training=False)
        weights = self.decoder.cross_attention_weights(
            y,
            encoder_output,
            source_padding_mask=source_mask,
            target_padding_mask=ops.not_equal(target, PAD_ID),
        )
        return ops.cast(weights, "float32")

    def vocabulary_weights(self):
        """The weights indexed by token id: ``[(variable, vocabulary, axis)]``, where
        ``vocabulary`` is ``"source"`` or ``"target"`` (as the task's
        :meth:`~transformer_tf.tasks.Task.vocabularies` names them) and ``axis`` the axis of
        the ids. ``train --init-from`` maps these rows by token when the vocabulary changes."""
        weights = [(self.source_embedding.token_embedding.embeddings, "source", 0)]
        if not self.share_embeddings:  # a shared embedding has one vocabulary for both
            weights.append((self.target_embedding.token_embedding.embeddings, "target", 0))
        if self.output_projection is not None:
            weights.append((self.output_projection.kernel, "target", 1))  # (d_model, vocab)
            weights.append((self.output_projection.bias, "target", 0))
        elif self.output_bias:
            weights.append((self.logits_bias, "target", 0))
        return weights

    def get_config(self):
        config = super().get_config()
        for name in (
            "source_vocab_size", "target_vocab_size", "num_layers",
            "max_length", "encoder_layer", "decoder_layer", "num_encoder_layers",
            "num_decoder_layers", "share_embeddings", "tie_embeddings", "output_bias",
        ):  # fmt: skip
            config[name] = getattr(self, name)
        config.update(block_arg_values(self))
        return config
