"""Encoder and decoder blocks and stacks."""

import numpy as np
import pytest
from keras import ops

from tests.layer_harness import run_layer_test
from transformer_tf.layers import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

D, H, FF = 16, 4, 32
ATTN = 4 * (D * D + D)
FFN = D * FF + FF + FF * D + D
NORM = 2 * D


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_encoder_layer_harness(tmp_path):
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    run_layer_test(
        TransformerEncoderLayer,
        {"d_model": D, "num_heads": H, "d_ff": FF, "dropout": 0.1},
        [_x((2, 5, D)), mask],
        expected_output_shape=(2, 5, D),
        expected_num_trainable_weights=8 + 4 + 4,
        tmp_path=tmp_path,
    )
    layer = TransformerEncoderLayer(D, H, FF)
    layer(_x((1, 2, D)))
    assert layer.count_params() == ATTN + FFN + 2 * NORM


def test_decoder_layer_harness(tmp_path):
    run_layer_test(
        TransformerDecoderLayer,
        {"d_model": D, "num_heads": H, "d_ff": FF, "dropout": 0.1},
        [_x((2, 4, D)), _x((2, 6, D), 1)],
        expected_output_shape=(2, 4, D),
        expected_num_trainable_weights=2 * 8 + 4 + 6,
        tmp_path=tmp_path,
    )
    layer = TransformerDecoderLayer(D, H, FF)
    layer(_x((1, 2, D)), _x((1, 3, D)))
    assert layer.count_params() == 2 * ATTN + FFN + 3 * NORM


def test_post_norm_output_is_normalised_and_pre_norm_is_not():
    x = _x((2, 5, D)) * 5 + 3
    post = ops.convert_to_numpy(TransformerEncoderLayer(D, H, FF)(x))
    pre = ops.convert_to_numpy(TransformerEncoderLayer(D, H, FF, normalize_first=True)(x))
    np.testing.assert_allclose(post.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(post.std(-1), 1.0, atol=1e-2)
    assert abs(pre.mean(-1)).max() > 1.0  # the residual stream keeps the input's offset


def test_pre_norm_stacks_add_the_final_norm():
    post = TransformerEncoder(2, D, H, FF)
    pre = TransformerEncoder(2, D, H, FF, normalize_first=True)
    post(_x((1, 3, D)))
    out = ops.convert_to_numpy(pre(_x((1, 3, D)) * 5 + 3))
    assert pre.count_params() == post.count_params() + NORM
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-4)


def test_encoder_ignores_padding():
    x = _x((1, 4, D))
    padded = np.concatenate([x, _x((1, 3, D), 7)], axis=1)
    mask = np.array([[1, 1, 1, 1, 0, 0, 0]], bool)
    encoder = TransformerEncoder(2, D, H, FF)
    a = ops.convert_to_numpy(encoder(x))
    b = ops.convert_to_numpy(encoder(padded, padding_mask=mask))
    np.testing.assert_allclose(a, b[:, :4], atol=1e-5)


@pytest.mark.parametrize("normalize_first", [False, True])
def test_decoder_is_causal_and_ignores_source_padding(normalize_first):
    decoder = TransformerDecoder(2, D, H, FF, normalize_first=normalize_first)
    y, memory = _x((1, 5, D)), _x((1, 3, D), 1)
    base = ops.convert_to_numpy(decoder(y, memory))
    future = y.copy()
    future[0, 3:] = 9.0
    changed = ops.convert_to_numpy(decoder(future, memory))
    np.testing.assert_allclose(base[:, :3], changed[:, :3], atol=1e-5)
    assert not np.allclose(base[:, 3], changed[:, 3])
    padded_memory = np.concatenate([memory, _x((1, 2, D), 2)], axis=1)
    source_mask = np.array([[1, 1, 1, 0, 0]], bool)
    padded = ops.convert_to_numpy(decoder(y, padded_memory, source_padding_mask=source_mask))
    np.testing.assert_allclose(base, padded, atol=1e-5)


def test_decoder_cache_matches_full_call():
    decoder = TransformerDecoder(2, D, H, FF)
    y, memory = _x((2, 5, D)), _x((2, 3, D), 1)
    full = ops.convert_to_numpy(decoder(y, memory))
    cache = decoder.init_cache(2, 8, memory)
    for t in range(5):
        step, cache = decoder(y[:, t : t + 1], None, cache=cache, cache_index=t)
        np.testing.assert_allclose(ops.convert_to_numpy(step)[:, 0], full[:, t], atol=1e-5)


def test_block_arguments_are_attributes_config_keys_and_reach_every_block():
    encoder = TransformerEncoder(
        2, D, H, FF, dropout=0.2, attention_dropout=0.1, ffn_dropout=0.3, activation="gelu",
        normalize_first=True, layer_norm_epsilon=1e-5, positional_encoding="relative",
        maximum_relative_position=3,
    )  # fmt: skip
    expected = {
        "d_model": D, "num_heads": H, "d_ff": FF, "dropout": 0.2, "attention_dropout": 0.1,
        "ffn_dropout": 0.3, "activation": "gelu", "normalize_first": True,
        "layer_norm_epsilon": 1e-5, "attention": "multi_head", "feed_forward": "position_wise",
        "normalization": "layer_norm", "positional_encoding": "relative",
        "maximum_relative_position": 3,
    }  # fmt: skip
    for layer in (encoder, *encoder.blocks):
        assert {name: getattr(layer, name) for name in expected} == expected
    block_config = encoder.blocks[1].get_config()
    assert set(block_config) == {"name", "trainable", "dtype", *expected}
    assert {name: block_config[name] for name in expected} == expected
    assert set(encoder.get_config()) == {"name", "trainable", "dtype", "num_layers", "block"} | set(
        expected
    )
    block = encoder.blocks[0]
    assert (block.self_attention.dropout, block.feed_forward_layer.dropout) == (0.1, 0.3)
    assert block.self_attention.position_mode == "relative"
    assert block.self_attention.maximum_relative_position == 3
    assert block.feed_forward_layer.activation == "gelu"
    assert (block.feed_forward_norm.epsilon, encoder.final_norm.epsilon) == (1e-5, 1e-5)
    assert block.self_attention_dropout.rate == 0.2
    # The eleven keyword block arguments default as in transformer_tf.block_args.
    defaults = TransformerDecoderLayer(D, H, FF).get_config()
    assert {name: defaults[name] for name in list(expected)[3:]} == {
        "dropout": 0.1, "attention_dropout": 0.0, "ffn_dropout": 0.0, "activation": "relu",
        "normalize_first": False, "layer_norm_epsilon": 1e-6, "attention": "multi_head",
        "feed_forward": "position_wise", "normalization": "layer_norm",
        "positional_encoding": "sinusoidal", "maximum_relative_position": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    "positions,extra_weights",
    [
        ({"positional_encoding": "relative", "maximum_relative_position": 2}, 2),
        ({"positional_encoding": "rotary"}, 0),
    ],
)
def test_blocks_with_positions_in_self_attention_only(tmp_path, positions, extra_weights):
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    run_layer_test(
        TransformerEncoderLayer,
        {"d_model": D, "num_heads": H, "d_ff": FF, **positions},
        [_x((2, 5, D)), mask],
        expected_output_shape=(2, 5, D),
        expected_num_trainable_weights=8 + 4 + 4 + extra_weights,
        tmp_path=tmp_path,
    )
    run_layer_test(
        TransformerDecoderLayer,
        {"d_model": D, "num_heads": H, "d_ff": FF, **positions},
        [_x((2, 4, D)), _x((2, 6, D), 1)],
        expected_output_shape=(2, 4, D),
        expected_num_trainable_weights=2 * 8 + 4 + 6 + extra_weights,
        tmp_path=tmp_path,
    )
    block = TransformerDecoderLayer(D, H, FF, **positions)
    mode = positions["positional_encoding"]
    assert (block.self_attention.position_mode, block.cross_attention.position_mode) == (
        mode,
        None,
    )
    assert block.cross_attention.maximum_relative_position is None


def test_maximum_relative_position_needs_relative_positions():
    with pytest.raises(ValueError, match="maximum_relative_position is only used with relative"):
        TransformerEncoderLayer(D, H, FF, maximum_relative_position=4)
    with pytest.raises(ValueError, match="maximum_relative_position is only used with relative"):
        TransformerEncoderLayer(D, H, FF, positional_encoding="rotary", maximum_relative_position=4)


def test_an_attention_class_without_position_mode_is_a_clear_error():
    import keras

    from transformer_tf.errors import UserError
    from transformer_tf.registry import register

    @register("attention", name="test_blocks.NoPositions")
    class NoPositions(keras.layers.Layer):
        def __init__(self, d_model, num_heads, dropout=0.0, **kwargs):
            super().__init__(**kwargs)

    TransformerEncoderLayer(D, H, FF, attention="test_blocks.NoPositions")  # absolute: fine
    with pytest.raises(UserError, match=r"cannot build attention .* must accept position_mode"):
        TransformerEncoderLayer(
            D, H, FF, attention="test_blocks.NoPositions", positional_encoding="rotary"
        )
