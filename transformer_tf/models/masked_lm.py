"""Transformer encoder with a masked-language-model head (BERT-style pretraining)."""

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
from transformer_tf.layers import TransformerEncoder
from transformer_tf.models.parts import model_embedding, model_stack
from transformer_tf.registry import register


@register("model", "transformer_masked_lm")
class TransformerMaskedLM(keras.Model):
    """Token predictor: embedding -> encoder -> transform -> logits over the vocabulary.

    The pretraining model of ``task: masked_lm`` (Devlin et al. 2019): it reads a text whose
    chosen tokens were replaced (:func:`transformer_tf.data.masking.mask_tokens`) and predicts
    the original token at every position; the loss counts the chosen ones only.

    The embedding and the encoder are built, and named, exactly as
    :class:`~transformer_tf.models.classifier.TransformerClassifier`'s (``embedding/...``,
    ``encoder/...``), so that a classifier can start from them (fine-tuning); the head does not
    carry over. As in BERT, the head is a dense ``transform`` (d_model units, the model's
    ``activation``) and a normalization, then the output projection tied to the token
    embedding (its transpose) plus a bias per token.

    Args:
        vocab_size: int, number of token ids (id 0 is padding; the vocabulary holds the mask
            token).
        num_layers: int, encoder blocks. Defaults to 2.
        the block arguments (``d_model``, ``num_heads``, ``d_ff``, ``dropout``, ...), keywords,
            as in :class:`~transformer_tf.models.classifier.TransformerClassifier`.
        positional_encoding, max_length, encoder_layer: as in
            :class:`~transformer_tf.models.classifier.TransformerClassifier`.

    Every argument is kept as an attribute of the same name and returned by ``get_config``.

    Call: ``model(token_ids)`` with ``(batch, length)`` int ids -> float32 logits
    ``(batch, length, vocab_size)``; or ``model({"token_ids": ids, "mask_positions": positions})``
    with int ``(batch, P)`` positions -> the logits ``(batch, P, vocab_size)`` of those positions
    only (what training computes: the loss needs no others). Appending padding to an input does
    not change the logits of its real positions.
    """

    @with_block_args
    def __init__(
        self,
        vocab_size: int,
        num_layers: int = 2,
        *,
        max_length: int = 512,
        encoder_layer: str = "transformer",
        **kwargs,
    ):
        block_args = pop_block_args(kwargs)
        super().__init__(**kwargs)
        keep_arguments(
            self,
            vocab_size=vocab_size,
            num_layers=num_layers,
            max_length=max_length,
            encoder_layer=encoder_layer,
            **block_args,
        )

        self.embedding = model_embedding(self, vocab_size, "embedding")
        self.encoder = model_stack(self, TransformerEncoder, num_layers, encoder_layer, "encoder")
        self.transform = keras.layers.Dense(
            self.d_model, activation=self.activation, name="transform", dtype=self.dtype_policy
        )
        self.transform_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="transform_norm", dtype=self.dtype_policy
        )

    def build(self, input_shape=None):
        hidden = (None, None, self.d_model)
        self.embedding.build((None, None))
        self.encoder.build(hidden)
        self.transform.build(hidden)
        self.transform_norm.build(hidden)
        self.logits_bias = self.add_weight(
            name="logits_bias", shape=(self.vocab_size,), initializer="zeros"
        )
        self.built = True

    def call(self, inputs, training=None):
        if isinstance(inputs, dict):
            token_ids, positions = inputs["token_ids"], inputs.get("mask_positions")
        else:
            token_ids, positions = inputs, None
        mask = ops.not_equal(token_ids, PAD_ID)  # (batch, length)
        x = self.embedding(token_ids, training=training)  # (batch, length, d_model)
        x = self.encoder(x, padding_mask=mask, training=training)
        if positions is not None:
            # Only the chosen positions are scored: the projection onto the vocabulary is most
            # of the model's work, and the loss reads ~15% of the positions.
            index = ops.expand_dims(ops.cast(positions, "int32"), -1)  # (batch, P, 1)
            x = ops.take_along_axis(x, index, axis=1)  # (batch, P, d_model)
        x = self.transform_norm(self.transform(x))  # (batch, P or length, d_model)
        # The tied projection: each position's scores against every token's embedding row.
        table = ops.cast(self.embedding.token_embedding.embeddings, x.dtype)  # (vocab, d_model)
        logits = ops.einsum("bld,vd->blv", x, table)  # (batch, P or length, vocab)
        return ops.cast(logits, "float32") + self.logits_bias

    def vocabulary_weights(self):
        """The weights indexed by token id, ``[(variable, "source", axis)]`` (see
        :meth:`Seq2SeqTransformer.vocabulary_weights
        <transformer_tf.models.seq2seq.Seq2SeqTransformer.vocabulary_weights>`)."""
        return [
            (self.embedding.token_embedding.embeddings, "source", 0),
            (self.logits_bias, "source", 0),
        ]

    def get_config(self):
        config = super().get_config()
        for name in ("vocab_size", "num_layers", "max_length", "encoder_layer"):
            config[name] = getattr(self, name)
        config.update(block_arg_values(self))
        return config
