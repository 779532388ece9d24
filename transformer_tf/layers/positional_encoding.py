"""Positional encodings: the ``positional_encoding`` slot.

Interface of the slot: ``__init__(max_length, d_model, **kwargs)`` and
``call(inputs, start_index=0)`` where ``inputs`` is ``(batch, length, d_model)``; returns
``inputs`` plus the encoding of positions ``start_index .. start_index + length - 1``
(``start_index`` lets incremental decoding encode one new position at a time).

A class may set ``length_limited = False`` when it encodes any position (no table): a trained
run can then decode longer than the length it was built for. Classes without the attribute are
taken to be limited to ``max_length`` positions.

A class may set ``position_mode`` (``"relative"`` or ``"rotary"``): it then adds nothing, and the
built-in blocks build their self-attention with that ``position_mode`` (see
:class:`AttentionPositions`, ``relative`` and ``rotary``).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from transformer_tf.registry import register


class PositionalEncodingBase(keras.layers.Layer):
    """What every built-in positional encoding shares: the slot's ``__init__(max_length,
    d_model)``, both kept as attributes and config keys, and an output of the inputs' shape
    (positions are added, or applied later by self-attention). Subclasses define ``call``.

    Args:
        max_length: int, the longest sequence expected.
        d_model: int, feature size.
    """

    def __init__(self, max_length: int, d_model: int, **kwargs):
        super().__init__(**kwargs)
        self.max_length = max_length
        self.d_model = d_model

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"max_length": self.max_length, "d_model": self.d_model})
        return config


@register("positional_encoding", "sinusoidal")
class SinusoidalPositionalEncoding(PositionalEncodingBase):
    """Fixed sine/cosine position encoding of Vaswani et al. (2017), added to the inputs.

    ``PE[pos, 2i] = sin(pos / 10000^(2i/d))`` and ``PE[pos, 2i+1] = cos(...)``: computed on the
    fly, so it has no weights and works at any length; ``max_length`` is kept for the interface.

    Subclasses change three class attributes to match other toolkits' variants of the formula
    (a checkpoint trained with one is wrong with another): ``interleaved`` (channel ``2i`` sin
    and ``2i+1`` cos; False: the ``d/2`` sines, then the ``d/2`` cosines), ``timescale_denominator``
    (``"d"``: frequencies ``10000^(-2i/d)``; ``"d/2-1"``: ``10000^(-i/(d/2-1))``, tensor2tensor's)
    and ``first_position`` (the position of the first token).

    Args:
        max_length: int, the longest sequence expected (not a hard limit here).
        d_model: int, feature size; must be even.
    """

    #: Whether inputs longer than ``max_length`` are an error (a table of positions). A run
    #: reloaded to decode longer than it was built for is refused only when this is True.
    length_limited = False
    interleaved = True
    timescale_denominator = "d"
    first_position = 0

    def __init__(self, max_length: int, d_model: int, **kwargs):
        super().__init__(max_length, d_model, **kwargs)
        if d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")

    def call(self, inputs, start_index=0):
        length = ops.shape(inputs)[1]
        first = start_index + self.first_position
        positions = ops.cast(ops.arange(length) + first, "float32")
        half = self.d_model // 2
        if self.timescale_denominator == "d":  # 1 / 10000^(2i/d) for i in [0, d/2)
            step = -math.log(10000.0) * 2 / self.d_model
        else:  # "d/2-1": 1 / 10000^(i/(d/2-1))
            step = -math.log(10000.0) / (half - 1)
        inv_freq = ops.exp(ops.arange(0, half, dtype="float32") * step)
        angles = positions[:, None] * inv_freq[None, :]  # (length, d_model / 2)
        if self.interleaved:  # channel 2i is sin, 2i+1 is cos
            encoding = ops.reshape(
                ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1), (length, self.d_model)
            )  # (length, d_model)
        else:  # the sines, then the cosines
            encoding = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)
        return inputs + ops.cast(encoding, inputs.dtype)[None, :, :]


@register("positional_encoding", "opennmt_sinusoidal")
class OpenNMTSinusoidalPositionalEncoding(SinusoidalPositionalEncoding):
    """OpenNMT-tf's sinusoidal positions (``opennmt.layers.SinusoidalPositionEncoder``): the
    sines then the cosines, frequencies ``10000^(-i/(d/2-1))``, the first token at position 1.
    For models imported from OpenNMT-tf (``transformer-tf import opennmt-tf``)."""

    interleaved = False
    timescale_denominator = "d/2-1"
    first_position = 1


@register("positional_encoding", "marian_sinusoidal")
class MarianSinusoidalPositionalEncoding(SinusoidalPositionalEncoding):
    """Marian's sinusoidal positions (as Hugging Face's ``MarianSinusoidalPositionalEmbedding``
    lays them out): the sines then the cosines, frequencies ``10000^(-2i/d)``, the first token
    at position 0. For OPUS-MT models (``transformer-tf import marian``)."""

    interleaved = False


#: The name of :class:`LearnedPositionalEmbedding`'s table (``train --init-from`` maps its rows
#: by position when the new model has another ``max_length``).
POSITION_TABLE = "position_embeddings"


@register("positional_encoding", "learned")
class LearnedPositionalEmbedding(PositionalEncodingBase):
    """Trainable position vectors, one per position up to ``max_length``, added to the inputs.

    Args:
        max_length: int, number of positions; longer inputs are an error at call time.
        d_model: int, feature size.
        initializer: str or initializer for the position table. Defaults to ``"glorot_uniform"``.
    """

    length_limited = True

    def __init__(self, max_length: int, d_model: int, initializer="glorot_uniform", **kwargs):
        super().__init__(max_length, d_model, **kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape=None):
        self.position_embeddings = self.add_weight(
            name=POSITION_TABLE,
            shape=(self.max_length, self.d_model),
            initializer=self.initializer,
        )
        self.built = True

    def call(self, inputs, start_index=0):
        length = ops.shape(inputs)[1]
        positions = ops.arange(length) + start_index
        encoding = ops.take(self.position_embeddings, positions, axis=0)  # (length, d_model)
        return inputs + ops.cast(encoding, inputs.dtype)[None, :, :]

    def get_config(self):
        config = super().get_config()
        config["initializer"] = keras.initializers.serialize(self.initializer)
        return config


class AttentionPositions(PositionalEncodingBase):
    """Base of the encodings that self-attention applies: nothing is added to the embeddings.

    The call returns ``inputs`` unchanged. The class attribute ``position_mode`` tells the
    built-in blocks (:class:`~transformer_tf.layers.TransformerBlockBase`) what to build their
    *self*-attention with: ``MultiHeadAttention(..., position_mode=position_mode)``.
    Cross-attention is left as it is. No weights here (relative embeddings are the attention's)
    and no length limit.

    Args:
        max_length: int, kept for the slot's interface.
        d_model: int, kept for the slot's interface.
    """

    length_limited = False
    #: The ``position_mode`` of self-attention (see :class:`MultiHeadAttention`).
    position_mode: str = ""

    def call(self, inputs, start_index=0):
        return inputs


@register("positional_encoding", "relative")
class RelativePositions(AttentionPositions):
    """Relative positions (Shaw et al. 2018, OpenNMT's ``maximum_relative_position``).

    Self-attention learns one key and one value embedding per clipped distance
    ``clip(j - i, -K, K)`` between query ``i`` and key ``j`` (``K`` is
    ``model.maximum_relative_position``), added to the logits and the outputs; the embeddings
    get nothing.
    """

    position_mode = "relative"


@register("positional_encoding", "rotary")
class RotaryPositions(AttentionPositions):
    """Rotary positions (RoFormer, Su et al. 2021): self-attention rotates each head's queries
    and keys by their positions (half-split pairs, base 10000), so that their dot product
    depends on the distance only; the embeddings get nothing."""

    position_mode = "rotary"
