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
"""

from __future__ import annotations

import math

import keras
from keras import ops

from transformer_tf.registry import register

# Added to the logits of masked keys. Finite so that a fully masked row gives a uniform
# distribution rather than NaN; the softmax runs in float32 so this never overflows.
_MASK_VALUE = -1e9


@register("attention", "multi_head")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention with per-head size ``d_model // num_heads``.

    Args:
        d_model: int, model size (input and output features).
        num_heads: int, number of heads; must divide ``d_model``.
        dropout: float, dropout on the attention weights. Defaults to 0.
        use_bias: bool, biases in the four projections. Defaults to True.
        kernel_initializer: initializer of the projections. Defaults to ``"glorot_uniform"``.

    Raises:
        ValueError: if ``d_model`` is not divisible by ``num_heads``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model = d_model
        self.num_heads = num_heads
        self.dropout = dropout
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
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
        """Fixed keys and values of ``value`` for cross-attention: ``(batch, heads, k_len, depth)``."""
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
        # Scaling q rather than the logits costs q_len * depth instead of q_len * k_len.
        q = q * ops.cast(1.0 / math.sqrt(self.depth), q.dtype)
        q_len = ops.shape(q)[2]

        query_positions = None  # absolute positions of the queries, for causal masking
        if cache is not None and cache_index is None:
            k, v = cache["key"], cache["value"]
            new_cache = cache
        else:
            key_input = value if key is None else key
            k = self._split_heads(self.key_dense(key_input))  # (batch, heads, k_len, depth)
            v = self._split_heads(self.value_dense(value))
            new_cache = None
            if cache is not None:
                start = [0, 0, cache_index, 0]
                k = ops.slice_update(cache["key"], start, ops.cast(k, cache["key"].dtype))
                v = ops.slice_update(cache["value"], start, ops.cast(v, cache["value"].dtype))
                new_cache = {"key": k, "value": v}
                query_positions = ops.arange(q_len) + cache_index
                causal = True  # a cache beyond cache_index holds zeros: never attend to it

        logits = ops.einsum("bhqd,bhkd->bhqk", q, k)  # (batch, heads, q_len, k_len)
        mask = self._attention_mask(
            key_padding_mask, causal, q_len, ops.shape(k)[2], query_positions
        )
        # Softmax in float32: stable under mixed precision and safe for the large mask value.
        logits = ops.cast(logits, "float32")
        if mask is not None:
            logits = ops.where(mask, logits, _MASK_VALUE)
        weights = ops.softmax(logits, axis=-1)
        weights = ops.cast(weights, self.compute_dtype)
        attended = ops.einsum(
            "bhqk,bhkd->bhqd", self.dropout_layer(weights, training=training), v
        )  # (batch, heads, q_len, depth)
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
            }
        )
        return config
