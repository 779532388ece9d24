import numpy as np
import pytest
from keras import ops

from tests.layer_harness import run_layer_test
from transformer_tf.layers import MultiHeadAttention
from transformer_tf.layers.attention import relative_position_ids, rotary_embedding


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


# --------------------------------------------------------------------------------------------
# Positions applied by self-attention: relative (Shaw et al. 2018) and rotary (RoFormer).


@pytest.mark.parametrize(
    "positions,weights",
    [
        ({"position_mode": "relative", "maximum_relative_position": 2}, 8 + 2),
        ({"position_mode": "rotary"}, 8),
    ],
)
def test_position_modes_harness(tmp_path, positions, weights):
    x = np.random.default_rng(4).normal(size=(2, 5, 16)).astype("float32")
    run_layer_test(
        MultiHeadAttention,
        {"d_model": 16, "num_heads": 4, "dropout": 0.1, **positions},
        [x, x],
        expected_output_shape=(2, 5, 16),
        expected_num_trainable_weights=weights,
        call_kwargs={"causal": True},
        tmp_path=tmp_path,
    )


def test_relative_position_ids_are_clipped_distances_from_the_query():
    ids = relative_position_ids(ops.arange(2, 4), ops.arange(6), 2)
    # Row i: clip(j - i, -2, 2) + 2 for the queries at positions 2 and 3.
    np.testing.assert_array_equal(
        ops.convert_to_numpy(ids), [[0, 1, 2, 3, 4, 4], [0, 0, 1, 2, 3, 4]]
    )


def _identity_projections(layer):
    for dense in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense):
        dense.kernel.assign(np.eye(layer.d_model, dtype="float32"))
        dense.bias.assign(np.zeros(layer.d_model, "float32"))


def test_relative_logits_and_outputs_known_answer():
    """One head of size 2, identity projections, K = 1: by hand,
    ``logit[i, j] = x_i . (x_j + a[clip(j - i)]) / sqrt(2)`` and
    ``out_i = sum_j w[i, j] (x_j + b[clip(j - i)])``."""
    layer = MultiHeadAttention(2, 1, position_mode="relative", maximum_relative_position=1)
    x = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], "float32")
    layer.build(x.shape, x.shape)
    _identity_projections(layer)
    # Rows: distance -1, 0, +1.
    layer.relative_position_keys.assign(np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]))
    layer.relative_position_values.assign(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, -1.0]]))
    out, weights = layer(x, x, return_attention_scores=True)
    # x0.x_j + x0.a: j=0: 1 + 0; j=1: 0 + x0.a[+1] = 0; j=2: 1 + x0.a[+1] (2 clipped to 1) = 1
    # x1.x_j + x1.a: j=0: 0 + x1.a[-1] = 0; j=1: 1 + 0; j=2: 1 + x1.a[+1] = 3
    # x2.x_j + x2.a: j=0: 1 + x2.a[-1] = 2 (-2 clipped); j=1: 1 + x2.a[-1] = 2; j=2: 2 + 0
    logits = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]) / np.sqrt(2.0)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(ops.convert_to_numpy(weights)[0, 0], expected, rtol=1e-6)
    # b[r[i, j]]: the diagonal gets b[0] = (1, 0); j > i gets b[+1] = (0, -1); j < i gets 0.
    b = np.array(
        [
            [[1.0, 0.0], [0.0, -1.0], [0.0, -1.0]],
            [[0.0, 0.0], [1.0, 0.0], [0.0, -1.0]],
            [[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]],
        ]
    )  # (i, j, depth)
    expected_out = np.einsum("ij,ijd->id", expected, x[0][None, :, :] + b)
    np.testing.assert_allclose(ops.convert_to_numpy(out)[0], expected_out, rtol=1e-6, atol=1e-7)


def test_rotary_known_rotation_half_split():
    # Depth 2: one pair (x[0], x[1]) turning by position * 1 radian.
    x = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    rotated = ops.convert_to_numpy(rotary_embedding(x, np.array([1, 2])))
    np.testing.assert_allclose(
        rotated, [[np.cos(1.0), np.sin(1.0)], [-np.sin(2.0), np.cos(2.0)]], atol=1e-6
    )
    # Depth 4: the pairs are (x[0], x[2]) at 1 rad and (x[1], x[3]) at 10000^(-2/4) = 0.01 rad
    # per position (half split, GPT-NeoX / keras-hub), not (x[0], x[1]) (RoFormer's paper).
    x = np.array([[1.0, 1.0, 0.0, 0.0]], "float32")
    rotated = ops.convert_to_numpy(rotary_embedding(x, np.array([3])))
    np.testing.assert_allclose(
        rotated, [[np.cos(3.0), np.cos(0.03), np.sin(3.0), np.sin(0.03)]], atol=1e-6
    )
    # Position 0 is the identity.
    np.testing.assert_array_equal(ops.convert_to_numpy(rotary_embedding(x, np.array([0]))), x)


def test_rotary_dot_product_depends_only_on_the_distance():
    rng = np.random.default_rng(5)
    q, k = rng.normal(size=(1, 8)).astype("float32"), rng.normal(size=(1, 8)).astype("float32")

    def score(m, n):
        rotated_q = ops.convert_to_numpy(rotary_embedding(q, np.array([m])))
        rotated_k = ops.convert_to_numpy(rotary_embedding(k, np.array([n])))
        return float((rotated_q * rotated_k).sum())

    for distance in (0, 3, -2):
        scores = [score(n + distance, n) for n in (0, 1, 7, 20)]
        np.testing.assert_allclose(scores, scores[0], rtol=1e-5, atol=1e-5)
    assert abs(score(3, 0) - score(0, 0)) > 1e-3  # and it does depend on it


def test_rotary_attention_scores_are_shift_invariant():
    """The same tokens at positions 0..3 or as keys 2..5 of a longer sequence whose first two
    keys are masked: rotary attention sees only distances, so the weights are equal."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1, 4, 8)).astype("float32")
    layer = MultiHeadAttention(8, 2, position_mode="rotary")
    _, weights = layer(x, x, causal=True, return_attention_scores=True)
    prefixed = np.concatenate([rng.normal(size=(1, 2, 8)).astype("float32"), x], axis=1)
    mask = np.array([[0, 0, 1, 1, 1, 1]], bool)
    _, shifted = layer(
        prefixed, prefixed, key_padding_mask=mask, causal=True, return_attention_scores=True
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(shifted)[:, :, 2:, 2:], ops.convert_to_numpy(weights), atol=1e-6
    )


@pytest.mark.parametrize(
    "positions",
    [{"position_mode": "relative", "maximum_relative_position": 2}, {"position_mode": "rotary"}],
)
def test_cached_self_attention_with_positions_equals_full_attention(positions):
    """Chunks of 2, 1 and 3 tokens: the queries are at cache_index + i."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    layer = MultiHeadAttention(8, 2, **positions)
    if positions["position_mode"] == "relative":  # non-zero tables, so that they count
        layer.build(x.shape, x.shape)
        layer.relative_position_keys.assign(rng.normal(size=(5, 4)))
        layer.relative_position_values.assign(rng.normal(size=(5, 4)))
    full = ops.convert_to_numpy(layer(x, x, causal=True))
    cache = layer.init_cache(2, 9)
    for start, end in ((0, 2), (2, 3), (3, 6)):
        chunk = x[:, start:end]
        out, cache = layer(chunk, chunk, cache=cache, cache_index=start)
        np.testing.assert_allclose(
            ops.convert_to_numpy(out), full[:, start:end], rtol=1e-5, atol=1e-6
        )


def test_relative_positions_change_the_output_and_absolute_shifts_do_not():
    """Without positions, attention is blind to order; relative attention is not, but moving
    the whole sequence (a masked prefix) leaves it unchanged."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1, 5, 8)).astype("float32")
    reversed_x = x[:, ::-1]
    plain = MultiHeadAttention(8, 2)
    out, back = (ops.convert_to_numpy(plain(v, v)) for v in (x, reversed_x))
    np.testing.assert_allclose(out, back[:, ::-1], atol=1e-5)
    layer = MultiHeadAttention(8, 2, position_mode="relative", maximum_relative_position=2)
    layer.build(x.shape, x.shape)
    layer.relative_position_keys.assign(rng.normal(size=(5, 4)))
    out, back = (ops.convert_to_numpy(layer(v, v)) for v in (x, reversed_x))
    assert not np.allclose(out, back[:, ::-1], atol=1e-3)


def test_position_mode_errors():
    with pytest.raises(ValueError, match="position_mode must be one of"):
        MultiHeadAttention(8, 2, position_mode="alibi")
    with pytest.raises(ValueError, match="only used with position_mode='relative'"):
        MultiHeadAttention(8, 2, position_mode="rotary", maximum_relative_position=4)
    with pytest.raises(ValueError, match="only used with position_mode='relative'"):
        MultiHeadAttention(8, 2, maximum_relative_position=4)
    with pytest.raises(ValueError, match="maximum_relative_position must be >= 1, got 0"):
        MultiHeadAttention(8, 2, position_mode="relative", maximum_relative_position=0)
    with pytest.raises(ValueError, match=r"even head size, got d_model / num_heads = 6 / 2 = 3"):
        MultiHeadAttention(6, 2, position_mode="rotary")
    assert MultiHeadAttention(8, 2, position_mode="relative").maximum_relative_position == 20
    layer = MultiHeadAttention(8, 2, position_mode="rotary")
    with pytest.raises(ValueError, match="cross-attention cache needs position_mode=None"):
        layer.compute_cache(np.zeros((1, 3, 8), "float32"))
