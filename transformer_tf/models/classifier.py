"""Transformer encoder with a classification head (the IMDb model)."""

from __future__ import annotations

import keras
from keras import ops

from transformer_tf.block_args import block_arg_values, pop_block_args, with_block_args
from transformer_tf.data.special_tokens import PAD_ID
from transformer_tf.layers import TransformerEmbedding, TransformerEncoder
from transformer_tf.registry import register


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
        positional_encoding: str = "sinusoidal",
        max_length: int = 512,
        encoder_layer: str = "transformer",
        pooling: str = "mean",
        **kwargs,
    ):
        block_args = pop_block_args(kwargs)
        super().__init__(**kwargs)
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.num_layers = num_layers
        for name, value in block_args.items():
            setattr(self, name, value)
        self.positional_encoding = positional_encoding
        self.max_length = max_length
        self.encoder_layer = encoder_layer
        self.pooling = pooling

        self.embedding = TransformerEmbedding(
            vocab_size,
            self.d_model,
            max_length=max_length,
            positional_encoding=positional_encoding,
            dropout=self.dropout,
            name="embedding",
            dtype=self.dtype_policy,
        )
        self.encoder = TransformerEncoder(
            num_layers,
            block=encoder_layer,
            name="encoder",
            dtype=self.dtype_policy,
            **block_args,
        )
        self.head_dropout = keras.layers.Dropout(
            self.dropout, name="head_dropout", dtype=self.dtype_policy
        )
        self.head = keras.layers.Dense(num_classes, name="head", dtype=self.dtype_policy)

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
        self.built = True

    def call(self, token_ids, training=None):
        mask = ops.not_equal(token_ids, PAD_ID)  # (batch, length)
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
        logits = self.head(self.head_dropout(pooled, training=training))
        return ops.cast(logits, "float32")

    def get_config(self):
        config = super().get_config()
        for name in (
            "vocab_size", "num_classes", "num_layers", "positional_encoding", "max_length",
            "encoder_layer", "pooling",
        ):  # fmt: skip
            config[name] = getattr(self, name)
        config.update(block_arg_values(self))
        return config
