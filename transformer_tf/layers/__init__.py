"""Keras layers of an encoder-decoder Transformer (``keras.ops`` only: any Keras backend)."""

from transformer_tf.layers.attention import MultiHeadAttention
from transformer_tf.layers.decoder import TransformerDecoder
from transformer_tf.layers.decoder_layer import TransformerDecoderLayer
from transformer_tf.layers.embedding import TransformerEmbedding
from transformer_tf.layers.encoder import TransformerEncoder, TransformerStack
from transformer_tf.layers.encoder_layer import TransformerBlockBase, TransformerEncoderLayer
from transformer_tf.layers.feed_forward import PositionwiseFeedForward
from transformer_tf.layers.positional_encoding import (
    LearnedPositionalEmbedding,
    RelativePositions,
    RotaryPositions,
    SinusoidalPositionalEncoding,
)

__all__ = [
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "PositionwiseFeedForward",
    "RelativePositions",
    "RotaryPositions",
    "SinusoidalPositionalEncoding",
    "TransformerBlockBase",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEmbedding",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "TransformerStack",
]
