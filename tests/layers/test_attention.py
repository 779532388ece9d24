import numpy as np
import pytest
from keras import ops

from tests.layer_harness import run_layer_test
from transformer_tf.layers import MultiHeadAttention


def numpy_attention(layer, query, value, mask):
    """softmax(Q K^T / sqrt(d_k) + mask) V per head, from the layer's own weights."""

    def proj(dense, x):
        return x @ dense.kernel.numpy() + dense.bias.numpy()

    h, dk = layer.num_heads, layer.depth
    b, lq, _ = query.shape
    lk = value.shape[1]
    q = proj(layer.query_dense, query).reshape(b, lq, h, dk).transpose(0, 2, 1, 3)
    k = proj(layer.key_dense, value).reshape(b, lk, h, dk).transpose(0, 2, 1, 3)
    v = proj(layer.value_dense, value).reshape(b, lk, h, dk).transpose(0, 2, 1, 3)
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dk) + np.where(mask, 0.0, -1e9)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(b, lq, h * dk)
    return proj(layer.output_dense, out), weights


def test_layer_harness(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 5, 16)).astype("float32")
    v = rng.normal(size=(2, 7, 16)).astype("float32")
    run_layer_test(
        MultiHeadAttention,
        {"d_model": 16, "num_heads": 4, "dropout": 0.1},
        [q, v],
        expected_output_shape=(2, 5, 16),
        expected_num_trainable_weights=8,
        tmp_path=tmp_path,
    )


def test_matches_numpy_with_padding_and_causal_masks():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 16)).astype("float32")
    padding = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    layer = MultiHeadAttention(16, 4)
    out, weights = layer(x, x, key_padding_mask=padding, causal=True, return_attention_scores=True)
    mask = padding[:, None, None, :] & np.tril(np.ones((6, 6), bool))[None, None]
    expected_out, expected_weights = numpy_attention(layer, x, x, mask)
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected_out, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(weights), expected_weights, atol=1e-6)
    # Padded keys get exactly no weight, and no query looks ahead.
    w = ops.convert_to_numpy(weights)
    assert w[0, :, :, 4:].max() < 1e-12
    assert np.triu(w[1, 0], k=1).max() < 1e-12


def test_per_head_size_and_parameter_count():
    layer = MultiHeadAttention(d_model=24, num_heads=6)
    layer(np.zeros((1, 3, 24), "float32"), np.zeros((1, 3, 24), "float32"))
    assert layer.depth == 4  # d_model / num_heads, not d_model per head
    assert layer.count_params() == 4 * (24 * 24 + 24)


def test_d_model_not_divisible_is_a_clear_error():
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible by num_heads \(4\)"):
        MultiHeadAttention(30, 4)


def test_cached_self_attention_equals_causal_full_attention():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    layer = MultiHeadAttention(8, 2)
    full = ops.convert_to_numpy(layer(x, x, causal=True))
    cache = layer.init_cache(2, 9)
    for t in range(5):
        step, cache = layer(x[:, t : t + 1], x[:, t : t + 1], cache=cache, cache_index=t)
        np.testing.assert_allclose(ops.convert_to_numpy(step)[:, 0], full[:, t], atol=1e-5)


def test_cross_attention_cache_equals_direct_call():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(2, 3, 8)).astype("float32")
    memory = rng.normal(size=(2, 4, 8)).astype("float32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    layer = MultiHeadAttention(8, 2)
    direct = layer(q, memory, key_padding_mask=mask)
    cached, _ = layer(q, None, key_padding_mask=mask, cache=layer.compute_cache(memory))
    np.testing.assert_allclose(
        ops.convert_to_numpy(cached), ops.convert_to_numpy(direct), atol=1e-6
    )
