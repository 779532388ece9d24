"""Keras layers of an encoder-decoder Transformer (``keras.ops`` only: any Keras backend)."""

from transformer_tf.layers.attention import MultiHeadAttention
from transformer_tf.layers.decoder import TransformerDecoder
from transformer_tf.layers.decoder_layer import TransformerDecoderLayer
from transformer_tf.layers.embedding import TransformerEmbedding
from transformer_tf.layers.encoder import TransformerEncoder
from transformer_tf.layers.encoder_layer import TransformerEncoderLayer
from transformer_tf.layers.feed_forward import PositionwiseFeedForward
from transformer_tf.layers.positional_encoding import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
)

__all__ = [
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "PositionwiseFeedForward",
    "SinusoidalPositionalEncoding",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEmbedding",
    "TransformerEncoder",
    "TransformerEncoderLayer",
]
