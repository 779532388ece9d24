"""Transformer encoder with a classification head (the IMDb model)."""

from __future__ import annotations

import keras
import numpy as np
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

#: The ``pooling`` choices of :class:`TransformerClassifier`.
POOLINGS = ("mean", "cls")


@register("model", "transformer_classifier")
class TransformerClassifier(keras.Model):
    """Sequence classifier: embedding -> encoder -> pooling -> dropout -> linear head.

    One logit per class, trained with sparse categorical cross-entropy on integer labels (not a
    vocabulary-sized softmax, and no decoder: the review is not fed as its own translation).

    Args:
        vocab_size: int, number of token ids (id 0 is padding).
        num_classes: int, number of classes. Defaults to 2.
        num_layers: int, encoder blocks. Defaults to 2.
        the block arguments (``d_model``, ``num_heads``, ``d_ff``, ``dropout``, ...,
            ``normalization``), keywords, with the defaults of
            :data:`transformer_tf.block_args.BLOCK_ARG_SPECS`; as in
            :class:`~transformer_tf.models.seq2seq.Seq2SeqTransformer`.
        positional_encoding, max_length, encoder_layer: as in
            :class:`~transformer_tf.models.seq2seq.Seq2SeqTransformer`.
        pooling: str, ``"mean"`` (mean over real tokens; padding excluded) or ``"cls"`` (a
            learned vector prepended to the sequence, whose final state is the summary).
            Defaults to ``"mean"``.
        token_dropout: float in [0, 1), default 0. In training only, each real token is left
            out with this probability: masked out of attention and pooling, as if the review
            did not contain it (word dropout, a regularizer for bag-of-n-gram inputs). The
            ``cls`` vector is never dropped.
        naive_bayes: bool, default False. Add a naive-Bayes bag-of-tokens path (NBSVM, Wang &
            Manning 2012) to the logits: ``sum over the distinct tokens t of the review of
            weight[t] * ratio[t, class]``. ``ratio`` holds per-class naive-Bayes log-count
            ratios, not trained: :meth:`adapt_naive_bayes` sets them from the training data
            before training (they are zeros until then, and the path adds nothing).
            ``weight`` is one trained scalar per token, zero at the start. The path sees the
            same (truncated, token-dropped) tokens as the encoder, summed without rescaling:
            at evaluation it is about ``1 / (1 - token_dropout)`` stronger than in training.
            An unbiased rescale in training measured worse on IMDb (``configs/imdb.yaml``).

    Every argument is kept as an attribute of the same name and returned by ``get_config``.

    Call: ``model(token_ids)`` with ``(batch, length)`` int ids -> float32 logits
    ``(batch, num_classes)``. Appending padding to an input does not change its logits.
    """

    @with_block_args
    def __init__(
        self,
        vocab_size: int,
        num_classes: int = 2,
        num_layers: int = 2,
        *,
        max_length: int = 512,
        encoder_layer: str = "transformer",
        pooling: str = "mean",
        token_dropout: float = 0.0,
        naive_bayes: bool = False,
        **kwargs,
    ):
        block_args = pop_block_args(kwargs)
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not 0.0 <= token_dropout < 1.0:
            raise ValueError(f"token_dropout must be in [0, 1), got {token_dropout}")
        keep_arguments(
            self,
            vocab_size=vocab_size,
            num_classes=num_classes,
            num_layers=num_layers,
            max_length=max_length,
            encoder_layer=encoder_layer,
            pooling=pooling,
            token_dropout=token_dropout,
            naive_bayes=naive_bayes,
            **block_args,
        )

        self.embedding = model_embedding(self, vocab_size, "embedding")
        self.encoder = model_stack(self, TransformerEncoder, num_layers, encoder_layer, "encoder")
        self.head_dropout = keras.layers.Dropout(
            self.dropout, name="head_dropout", dtype=self.dtype_policy
        )
        self.head = keras.layers.Dense(num_classes, name="head", dtype=self.dtype_policy)
        if token_dropout:
            self.token_dropout_seed = keras.random.SeedGenerator(name="token_dropout_seed")

    def build(self, input_shape=None):
        hidden = (None, None, self.d_model)
        self.embedding.build((None, None))
        if self.pooling == "cls":
            self.cls_embedding = self.add_weight(
                name="cls_embedding",
                shape=(self.d_model,),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )
        self.encoder.build(hidden)
        self.head.build((None, self.d_model))
        if self.naive_bayes:
            # float32 even under mixed precision (autocast off): the path sums hundreds of terms.
            self.naive_bayes_ratios = self.add_weight(
                name="naive_bayes_ratios",
                shape=(self.vocab_size, self.num_classes),
                initializer="zeros",
                trainable=False,
                autocast=False,
            )
            self.naive_bayes_weights = self.add_weight(
                name="naive_bayes_weights",
                shape=(self.vocab_size,),
                initializer="zeros",
                autocast=False,
            )
        self.built = True

    def adapt_naive_bayes(self, document_counts, smoothing: float = 1.0) -> None:
        """Set the naive-Bayes ratios from per-class document counts of the training data.

        ``ratio[t, c] = log p(t | c) - mean over classes of log p(t | c)``, with
        ``p(t | c) = (smoothing + n[t, c]) / sum over tokens of (smoothing + n[., c])``; for two
        classes ``ratio[t, 1] - ratio[t, 0]`` is the log-count ratio of NBSVM.

        Args:
            document_counts: array ``(vocab_size, num_classes)``, ``n[t, c]`` = training
                reviews of class ``c`` that contain token ``t`` (the padding row is ignored).
            smoothing: float > 0, the additive (Laplace) smoothing. Defaults to 1.
        """
        if not self.naive_bayes:
            raise ValueError("adapt_naive_bayes needs a model built with naive_bayes=True")
        counts = np.asarray(document_counts, dtype="float64")
        if counts.shape != (self.vocab_size, self.num_classes):
            raise ValueError(
                f"document_counts must have shape {(self.vocab_size, self.num_classes)}, got "
                f"{counts.shape}"
            )
        # Padding (id 0) is never a token of a review: no probability, and a ratio of 0.
        tokens = counts[PAD_ID + 1 :] + smoothing
        log_p = np.log(tokens / tokens.sum(axis=0, keepdims=True))
        ratios = np.zeros_like(counts)
        ratios[PAD_ID + 1 :] = log_p - log_p.mean(axis=1, keepdims=True)
        self.naive_bayes_ratios.assign(ratios.astype("float32"))

    def call(self, token_ids, training=None):
        mask = ops.not_equal(token_ids, PAD_ID)  # (batch, length)
        if training and self.token_dropout:
            draw = keras.random.uniform(ops.shape(token_ids), seed=self.token_dropout_seed)
            mask = ops.logical_and(mask, draw >= self.token_dropout)
        token_mask = mask  # the review's tokens only, before a CLS position is prepended
        x = self.embedding(token_ids, training=training)  # (batch, length, d_model)
        if self.pooling == "cls":
            batch = ops.shape(x)[0]
            cls = ops.broadcast_to(ops.cast(self.cls_embedding, x.dtype), (batch, 1, self.d_model))
            x = ops.concatenate([cls, x], axis=1)  # (batch, 1 + length, d_model)
            mask = ops.concatenate([ops.ones((batch, 1), "bool"), mask], axis=1)
        x = self.encoder(x, padding_mask=mask, training=training)
        if self.pooling == "cls":
            pooled = x[:, 0, :]
        else:
            weights = ops.cast(mask, x.dtype)[:, :, None]  # (batch, length, 1)
            count = ops.maximum(ops.sum(weights, axis=1), ops.cast(1.0, x.dtype))
            pooled = ops.sum(x * weights, axis=1) / count  # (batch, d_model)
        logits = ops.cast(self.head(self.head_dropout(pooled, training=training)), "float32")
        if self.naive_bayes:
            logits = logits + self._naive_bayes_logits(token_ids, token_mask)
        return logits

    def _naive_bayes_logits(self, token_ids, mask):
        """``sum over distinct real tokens of weight[t] * ratio[t]``: (batch, num_classes)."""
        ids = ops.sort(ops.where(mask, token_ids, PAD_ID), axis=1)  # (batch, length)
        # After sorting, a token is new where it differs from its left neighbour.
        previous = ops.pad(ids[:, :-1], ((0, 0), (1, 0)), constant_values=PAD_ID)
        distinct = ops.logical_and(ops.not_equal(ids, previous), ops.not_equal(ids, PAD_ID))
        scale = ops.take(self.naive_bayes_weights, ids) * ops.cast(distinct, "float32")
        ratios = ops.take(self.naive_bayes_ratios, ids, axis=0)  # (batch, length, num_classes)
        return ops.sum(ratios * scale[:, :, None], axis=1)

    def vocabulary_weights(self):
        """The weights indexed by token id, ``[(variable, "source", axis)]`` (see
        :meth:`Seq2SeqTransformer.vocabulary_weights
        <transformer_tf.models.seq2seq.Seq2SeqTransformer.vocabulary_weights>`)."""
        weights = [(self.embedding.token_embedding.embeddings, "source", 0)]
        if self.naive_bayes:
            weights.append((self.naive_bayes_ratios, "source", 0))
            weights.append((self.naive_bayes_weights, "source", 0))
        return weights

    def get_config(self):
        config = super().get_config()
        for name in (
            "vocab_size", "num_classes", "num_layers", "max_length",
            "encoder_layer", "pooling", "token_dropout", "naive_bayes",
        ):  # fmt: skip
            config[name] = getattr(self, name)
        config.update(block_arg_values(self))
        return config
