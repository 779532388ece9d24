"""Token embedding scaled by sqrt(d_model), plus positions, plus dropout."""

from __future__ import annotations

import math

import keras
from keras import ops

from transformer_tf.registry import build


@keras.saving.register_keras_serializable(package="transformer_tf")
class TransformerEmbedding(keras.layers.Layer):
    """Token embedding for a Transformer stack.

    ``dropout(embedding(ids) * sqrt(d_model) + positions)``. Id 0 is padding; the layer does not
    use Keras' implicit masks (models pass masks explicitly). ``project`` reuses the embedding
    matrix as the output projection when a model ties its embeddings.

    Args:
        vocab_size: int, number of token ids.
        d_model: int, embedding size.
        max_length: int, number of positions for the positional encoding. Defaults to 512.
        positional_encoding: str, a registered ``positional_encoding`` name
            (``"sinusoidal"`` or ``"learned"`` built in). Defaults to ``"sinusoidal"``.
        dropout: float, dropout rate after adding positions. Defaults to 0.
        scale: bool, multiply token vectors by sqrt(d_model). Defaults to True.

    Shapes: ``(batch, length)`` int ids -> ``(batch, length, d_model)``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        max_length: int = 512,
        positional_encoding: str = "sinusoidal",
        dropout: float = 0.0,
        scale: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.max_length = max_length
        self.positional_encoding = positional_encoding
        self.dropout = dropout
        self.scale = scale
        self.token_embedding = keras.layers.Embedding(
            vocab_size,
            d_model,
            # Normal(0, d^-0.5): after the sqrt(d) scale the vectors have unit variance, and the
            # matrix is also a sensible output projection when tied.
            embeddings_initializer=keras.initializers.RandomNormal(stddev=d_model**-0.5),
            name="token_embedding",
            dtype=self.dtype_policy,
        )
        self.position_encoding = build(
            "positional_encoding",
            positional_encoding,
            max_length,
            d_model,
            name="position_encoding",
            dtype=self.dtype_policy,
        )
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        self.token_embedding.build((None, None))
        self.position_encoding.build((None, None, self.d_model))
        self.built = True

    def call(self, token_ids, start_index=0, training=None):
        x = self.token_embedding(token_ids)  # (batch, length, d_model)
        if self.scale:
            x = x * ops.cast(math.sqrt(self.d_model), x.dtype)
        x = self.position_encoding(x, start_index=start_index)
        return self.dropout_layer(x, training=training)

    def project(self, x):
        """Logits over the vocabulary from the transposed embedding matrix: ``x @ E^T``.

        ``(batch, length, d_model)`` -> ``(batch, length, vocab_size)``.
        """
        embeddings = ops.cast(self.token_embedding.embeddings, x.dtype)
        return ops.matmul(x, ops.transpose(embeddings))

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.d_model)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "d_model": self.d_model,
                "max_length": self.max_length,
                "positional_encoding": self.positional_encoding,
                "dropout": self.dropout,
                "scale": self.scale,
            }
        )
        return config
