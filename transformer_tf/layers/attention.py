"""Multi-head scaled dot-product attention: the ``attention`` slot.

Interface of the slot (what a replacement must accept and return):

``__init__(d_model, num_heads, dropout=0.0, **kwargs)`` and
``call(query, value, key=None, key_padding_mask=None, causal=False, cache=None,
cache_index=None, return_attention_scores=False, training=None)``.

- ``query`` ``(batch, q_len, d_model)``, ``value``/``key`` ``(batch, k_len, d_model)``.
- ``key_padding_mask`` ``(batch, k_len)`` bool, True for real tokens: padded keys get no weight.
- ``causal``: query position i attends to key positions <= i only.
- ``cache``: returns ``(output, cache)`` instead of ``output``. Two kinds:
  with ``cache_index`` (an int scalar tensor), ``cache`` is a self-attention cache
  ``{"key", "value": (batch, heads, max_length, depth)}`` from :meth:`init_cache`; the new keys
  and values of ``value`` are written at ``cache_index`` and the queries attend causally to
  positions ``<= cache_index + i``. Without ``cache_index``, ``cache`` holds fixed keys and values
  from :meth:`compute_cache` (cross-attention to the encoder output) and ``value`` is ignored.
- ``return_attention_scores`` appends the softmax weights ``(batch, heads, q_len, k_len)``.

Self-attention built with ``position_mode="relative"`` or ``"rotary"`` (the blocks do so when
``model.positional_encoding`` is ``relative`` or ``rotary``; a replacement class that does not
take ``position_mode`` cannot be used with them) applies the positions itself. The positions are
absolute token indices: without a cache, queries ``0 .. q_len - 1`` (ending where the keys end
when ``k_len > q_len``) and keys ``0 .. k_len - 1``; with a self-attention cache, queries
``cache_index + i`` and keys ``0 .. max_length - 1`` (the cache stores rotated keys).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from transformer_tf.block_args import DEFAULT_MAXIMUM_RELATIVE_POSITION
from transformer_tf.registry import register

# Added to the logits of masked keys. Finite so that a fully masked row gives a uniform
# distribution rather than NaN; the softmax runs in float32 so this never overflows.
_MASK_VALUE = -1e9

#: The values of ``position_mode``: None (positions are added to the embeddings, if anywhere),
#: ``"relative"`` (Shaw et al. 2018) or ``"rotary"`` (RoFormer).
POSITION_MODES = (None, "relative", "rotary")

#: The base of the rotary frequencies: pair ``i`` of a head of size ``depth`` turns by
#: ``position * ROTARY_BASE ** (-2i / depth)`` radians.
ROTARY_BASE = 10000.0


def relative_position_ids(query_positions, key_positions, maximum_relative_position):
    """Rows of the relative tables: ``clip(key - query, -K, K) + K``, ``(q_len, k_len)`` int.

    Args:
        query_positions: ``(q_len,)`` int, absolute positions of the queries.
        key_positions: ``(k_len,)`` int, absolute positions of the keys.
        maximum_relative_position: int ``K`` >= 1; the tables have ``2K + 1`` rows, row ``K``
            for distance 0, row 0 for ``-K`` and beyond (keys at least ``K`` to the left).
    """
    distance = key_positions[None, :] - query_positions[:, None]
    k = maximum_relative_position
    return ops.clip(distance, -k, k) + k


def rotary_embedding(x, positions, base=ROTARY_BASE):
    """Rotate ``x`` by ``positions`` (RoFormer), half-split convention.

    The last axis (size ``depth``, even) is split in halves ``x1 = x[..., :depth/2]`` and
    ``x2 = x[..., depth/2:]``; pair ``(x1[i], x2[i])`` turns by the angle ``position * theta_i``,
    ``theta_i = base ** (-2i / depth)``:
    ``(x1 cos - x2 sin, x2 cos + x1 sin)``. This is GPT-NeoX's and keras-hub's
    ``RotaryEmbedding`` layout (Hugging Face's ``rotate_half``); RoFormer's paper and GPT-J pair
    adjacent channels ``(2i, 2i+1)`` instead, a permutation of the same channels. The dot product
    of a query rotated by ``m`` and a key rotated by ``n`` depends on ``m - n`` only.

    Args:
        x: ``(..., length, depth)``.
        positions: ``(length,)`` int or float positions.
        base: float, the frequency base. Defaults to 10000.

    Returns: ``x``'s shape and dtype; the angles are computed in float32.
    """
    depth = x.shape[-1]
    half = depth // 2
    inv_freq = ops.power(
        ops.convert_to_tensor(base, "float32"),
        ops.arange(half, dtype="float32") * (-2.0 / depth),
    )  # (depth / 2,)
    angles = ops.cast(positions, "float32")[:, None] * inv_freq[None, :]  # (length, depth / 2)
    cos = ops.cast(ops.cos(angles), x.dtype)
    sin = ops.cast(ops.sin(angles), x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return ops.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


@register("attention", "multi_head")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention with per-head size ``d_model // num_heads``.

    Args:
        d_model: int, model size (input and output features).
        num_heads: int, number of heads; must divide ``d_model``.
        dropout: float, dropout on the attention weights. Defaults to 0.
        use_bias: bool, biases in the four projections. Defaults to True.
        kernel_initializer: initializer of the projections. Defaults to ``"glorot_uniform"``.
        position_mode: None, ``"relative"`` or ``"rotary"``: how this (self-)attention applies
            token positions. Defaults to None: it does not (positions, if any, were added to
            the embeddings).

            - ``"relative"`` (Shaw et al. 2018; OpenNMT-tf's ``maximum_relative_position``):
              two trained tables ``relative_position_keys`` and ``relative_position_values``,
              ``(2K + 1, depth)``, shared by the heads. With ``r = clip(j - i, -K, K) + K`` for
              query ``i`` and key ``j``, ``logit[i, j] = q_i . (k_j + keys[r]) / sqrt(depth)``
              and ``output_i = sum_j w[i, j] (v_j + values[r])``.
            - ``"rotary"`` (RoFormer): queries and keys rotated by their positions with
              :func:`rotary_embedding` (half-split pairs, base 10000); no weights. The head size
              must be even.
        maximum_relative_position: int >= 1, ``K`` above; only with ``position_mode="relative"``.
            Defaults to None: 20 (``transformer_tf.block_args.DEFAULT_MAXIMUM_RELATIVE_POSITION``).

    A layer with a ``position_mode`` is a self-attention: its queries and keys are positions of
    one sequence; a cross-attention cache (:meth:`compute_cache`) is refused.

    Raises:
        ValueError: if ``d_model`` is not divisible by ``num_heads``, ``position_mode`` is not
            one of :data:`POSITION_MODES`, ``maximum_relative_position`` is given without
            ``"relative"`` or is < 1, or ``"rotary"`` has an odd head size.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        position_mode: str | None = None,
        maximum_relative_position: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        if position_mode not in POSITION_MODES:
            raise ValueError(
                f"position_mode must be one of {POSITION_MODES}, got {position_mode!r}"
            )
        if position_mode == "relative":
            if maximum_relative_position is None:
                maximum_relative_position = DEFAULT_MAXIMUM_RELATIVE_POSITION
            if maximum_relative_position < 1:
                raise ValueError(
                    f"maximum_relative_position must be >= 1, got {maximum_relative_position}"
                )
        elif maximum_relative_position is not None:
            raise ValueError(
                "maximum_relative_position is only used with position_mode='relative', got "
                f"position_mode={position_mode!r}"
            )
        if position_mode == "rotary" and (d_model // num_heads) % 2:
            raise ValueError(
                f"rotary positions need an even head size, got d_model / num_heads = "
                f"{d_model} / {num_heads} = {d_model // num_heads}"
            )
        self.d_model = d_model
        self.num_heads = num_heads
        self.dropout = dropout
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.position_mode = position_mode
        self.maximum_relative_position = maximum_relative_position
        self.depth = d_model // num_heads

        def dense(name):
            return keras.layers.Dense(
                d_model,
                use_bias=use_bias,
                kernel_initializer=self.kernel_initializer,
                name=name,
                dtype=self.dtype_policy,
            )

        self.query_dense = dense("query")
        self.key_dense = dense("key")
        self.value_dense = dense("value")
        self.output_dense = dense("output")
        self.dropout_layer = keras.layers.Dropout(
            dropout, name="attention_dropout", dtype=self.dtype_policy
        )

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = value_shape if value_shape is not None else query_shape
        key_shape = key_shape if key_shape is not None else value_shape
        self.query_dense.build(query_shape)
        self.key_dense.build(key_shape)
        self.value_dense.build(value_shape)
        self.output_dense.build((*query_shape[:-1], self.d_model))
        if self.position_mode == "relative":
            rows = 2 * self.maximum_relative_position + 1
            # OpenNMT-tf's names and initializer. "position" in the name also keeps them out
            # of AdamW's weight decay, as the other position tables.
            self.relative_position_keys = self.add_weight(
                name="relative_position_keys",
                shape=(rows, self.depth),
                initializer="glorot_uniform",
            )
            self.relative_position_values = self.add_weight(
                name="relative_position_values",
                shape=(rows, self.depth),
                initializer="glorot_uniform",
            )
        self.built = True

    def _split_heads(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, length, self.num_heads, self.depth))
        return ops.transpose(x, (0, 2, 1, 3))  # (batch, heads, length, depth)

    def _merge_heads(self, x):
        x = ops.transpose(x, (0, 2, 1, 3))  # (batch, length, heads, depth)
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (batch, length, self.d_model))  # (batch, length, d_model)

    def init_cache(self, batch_size, max_length, dtype=None):
        """An empty self-attention cache: zeros ``(batch, heads, max_length, depth)`` x 2."""
        shape = (batch_size, self.num_heads, max_length, self.depth)
        dtype = dtype or self.compute_dtype
        return {"key": ops.zeros(shape, dtype), "value": ops.zeros(shape, dtype)}

    def compute_cache(self, value, key=None):
        """Fixed keys and values of ``value`` for cross-attention: ``(batch, heads, k_len, depth)``.

        Raises:
            ValueError: this layer has a ``position_mode`` (it is a self-attention).
        """
        if self.position_mode is not None:
            raise ValueError(
                f"a cross-attention cache needs position_mode=None, got {self.position_mode!r}"
            )
        key = value if key is None else key
        return {
            "key": self._split_heads(self.key_dense(key)),
            "value": self._split_heads(self.value_dense(value)),
        }

    def call(
        self,
        query,
        value=None,
        key=None,
        key_padding_mask=None,
        causal=False,
        cache=None,
        cache_index=None,
        return_attention_scores=False,
        training=None,
    ):
        q = self._split_heads(self.query_dense(query))  # (batch, heads, q_len, depth)
        q_len = ops.shape(q)[2]

        if cache is not None and cache_index is None:
            if self.position_mode is not None:
                raise ValueError(
                    "a cross-attention cache (no cache_index) needs position_mode=None, got "
                    f"{self.position_mode!r}"
                )
            k, v = cache["key"], cache["value"]
            new_cache = cache
            query_positions = None  # unused: no causal mask, no positions
        else:
            key_input = value if key is None else key
            k = self._split_heads(self.key_dense(key_input))  # (batch, heads, k_len, depth)
            v = self._split_heads(self.value_dense(value))
            new_cache = None
            if cache is not None:
                # The new keys are the positions cache_index.. of the sequence, as the queries.
                query_positions = ops.arange(q_len) + cache_index
                if self.position_mode == "rotary":
                    # Rotated before they are stored: the cache holds keys ready to use.
                    k = rotary_embedding(k, ops.arange(ops.shape(k)[2]) + cache_index)
                start = [0, 0, cache_index, 0]
                k = ops.slice_update(cache["key"], start, ops.cast(k, cache["key"].dtype))
                v = ops.slice_update(cache["value"], start, ops.cast(v, cache["value"].dtype))
                new_cache = {"key": k, "value": v}
                causal = True  # a cache beyond cache_index holds zeros: never attend to it
            else:
                # Queries and keys are positions 0..len-1; a longer key sequence (a prefix)
                # ends where the queries end.
                query_positions = ops.arange(q_len) + (ops.shape(k)[2] - q_len)
                if self.position_mode == "rotary":
                    k = rotary_embedding(k, ops.arange(ops.shape(k)[2]))
        k_len = ops.shape(k)[2]
        if self.position_mode == "rotary":
            q = rotary_embedding(q, query_positions)
        # Scaling q rather than the logits costs q_len * depth instead of q_len * k_len.
        q = q * ops.cast(1.0 / math.sqrt(self.depth), q.dtype)

        logits = ops.einsum("bhqd,bhkd->bhqk", q, k)  # (batch, heads, q_len, k_len)
        if self.position_mode == "relative":
            relative = relative_position_ids(
                query_positions, ops.arange(k_len), self.maximum_relative_position
            )  # (q_len, k_len)
            relative_keys = ops.take(
                ops.cast(self.relative_position_keys, q.dtype), relative, axis=0
            )  # (q_len, k_len, depth)
            logits = logits + ops.einsum("bhqd,qkd->bhqk", q, relative_keys)
        mask = self._attention_mask(key_padding_mask, causal, q_len, k_len, query_positions)
        # Softmax in float32: stable under mixed precision and safe for the large mask value.
        logits = ops.cast(logits, "float32")
        if mask is not None:
            logits = ops.where(mask, logits, _MASK_VALUE)
        weights = ops.softmax(logits, axis=-1)
        weights = ops.cast(weights, self.compute_dtype)
        dropped = self.dropout_layer(weights, training=training)
        attended = ops.einsum("bhqk,bhkd->bhqd", dropped, v)  # (batch, heads, q_len, depth)
        if self.position_mode == "relative":
            relative_values = ops.take(
                ops.cast(self.relative_position_values, dropped.dtype), relative, axis=0
            )  # (q_len, k_len, depth)
            attended = attended + ops.einsum("bhqk,qkd->bhqd", dropped, relative_values)
        output = self.output_dense(self._merge_heads(attended))  # (batch, q_len, d_model)

        outputs = (output,)
        if cache is not None:
            outputs += (new_cache,)
        if return_attention_scores:
            outputs += (weights,)
        return outputs[0] if len(outputs) == 1 else outputs

    @staticmethod
    def _attention_mask(key_padding_mask, causal, q_len, k_len, query_positions=None):
        """Boolean mask broadcastable to ``(batch, heads, q_len, k_len)``; None when unmasked."""
        mask = None
        if key_padding_mask is not None:
            mask = ops.cast(key_padding_mask, "bool")[:, None, None, :]  # (batch, 1, 1, k_len)
        if causal:
            if query_positions is None:
                # Without a cache, queries and keys are the same positions 0..len-1; a longer
                # key sequence (a prefix) ends where the queries end.
                query_positions = ops.arange(q_len) + (k_len - q_len)
            allowed = query_positions[:, None] >= ops.arange(k_len)[None, :]  # (q_len, k_len)
            allowed = allowed[None, None, :, :]
            mask = allowed if mask is None else ops.logical_and(mask, allowed)
        return mask

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        return query_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "d_model": self.d_model,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "position_mode": self.position_mode,
                "maximum_relative_position": self.maximum_relative_position,
            }
        )
        return config
