import numpy as np
import pytest
from keras import ops

from tests.layer_harness import run_layer_test
from transformer_tf.layers import (
    LearnedPositionalEmbedding,
    RelativePositions,
    RotaryPositions,
    SinusoidalPositionalEncoding,
    TransformerEmbedding,
)


def test_sinusoidal_values_follow_the_paper():
    layer = SinusoidalPositionalEncoding(max_length=50, d_model=8)
    out = ops.convert_to_numpy(layer(np.zeros((1, 6, 8), "float32"), start_index=3))[0]
    pos = np.arange(3, 9)[:, None]
    i = np.arange(4)[None, :]
    angle = pos / 10000 ** (2 * i / 8)
    np.testing.assert_allclose(out[:, 0::2], np.sin(angle), atol=1e-5)
    np.testing.assert_allclose(out[:, 1::2], np.cos(angle), atol=1e-5)


@pytest.mark.parametrize(
    "name,first,denominator",
    [("opennmt_sinusoidal", 1, "d/2-1"), ("marian_sinusoidal", 0, "d")],
)
def test_other_toolkits_sinusoidal_layouts(name, first, denominator):
    """Sines then cosines (not interleaved); OpenNMT-tf's frequencies 10000^(-i/(d/2-1)) and
    first position 1, Marian's 10000^(-2i/d) from position 0."""
    from transformer_tf.registry import build

    d = 8
    layer = build("positional_encoding", name, 50, d)
    out = ops.convert_to_numpy(layer(np.zeros((1, 6, d), "float32"), start_index=3))[0]
    pos = np.arange(3, 9)[:, None] + first
    i = np.arange(d // 2)[None, :]
    exponent = i / (d / 2 - 1) if denominator == "d/2-1" else 2 * i / d
    angle = pos / 10000.0**exponent
    np.testing.assert_allclose(out[:, : d // 2], np.sin(angle), atol=1e-5)
    np.testing.assert_allclose(out[:, d // 2 :], np.cos(angle), atol=1e-5)


def test_sinusoidal_needs_even_d_model():
    with pytest.raises(ValueError, match="even d_model"):
        SinusoidalPositionalEncoding(10, 7)


def test_learned_positions_start_index_selects_rows(tmp_path):
    layer = LearnedPositionalEmbedding(max_length=10, d_model=4)
    out = ops.convert_to_numpy(layer(np.zeros((2, 3, 4), "float32"), start_index=5))
    np.testing.assert_allclose(out[0], layer.position_embeddings.numpy()[5:8], atol=1e-7)
    run_layer_test(
        LearnedPositionalEmbedding,
        {"max_length": 10, "d_model": 4},
        np.ones((2, 3, 4), "float32"),
        expected_output_shape=(2, 3, 4),
        expected_num_trainable_weights=1,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize(
    "positional_encoding,weights",
    [("sinusoidal", 1), ("learned", 2), ("relative", 1), ("rotary", 1)],
)
def test_embedding_harness(tmp_path, positional_encoding, weights):
    ids = np.array([[3, 4, 5, 0], [7, 0, 0, 0]], "int32")
    run_layer_test(
        TransformerEmbedding,
        {
            "vocab_size": 10,
            "d_model": 8,
            "max_length": 16,
            "positional_encoding": positional_encoding,
        },
        ids,
        expected_output_shape=(2, 4, 8),
        expected_num_trainable_weights=weights,
        tmp_path=tmp_path,
    )


def test_embedding_is_scaled_by_sqrt_d_model_and_projects_back():
    layer = TransformerEmbedding(10, 16, positional_encoding="sinusoidal")
    ids = np.array([[4]], "int32")
    out = ops.convert_to_numpy(layer(ids))[0, 0]
    table = layer.token_embedding.embeddings.numpy()
    position0 = np.tile([0.0, 1.0], 8)  # sin(0), cos(0)
    np.testing.assert_allclose(out, table[4] * 4.0 + position0, atol=1e-5)
    logits = ops.convert_to_numpy(layer.project(np.ones((1, 2, 16), "float32")))
    np.testing.assert_allclose(logits[0, 0], table.sum(axis=1), atol=1e-5)


def test_unknown_positional_encoding_lists_registered_names():
    with pytest.raises(
        KeyError,
        match="learned, marian_sinusoidal, opennmt_sinusoidal, relative, rotary, sinusoidal",
    ):
        TransformerEmbedding(10, 8, positional_encoding="alibi")


@pytest.mark.parametrize("cls,mode", [(RelativePositions, "relative"), (RotaryPositions, "rotary")])
def test_attention_positions_add_nothing_and_name_the_attention_mode(tmp_path, cls, mode):
    """``relative`` and ``rotary`` are applied by self-attention: the embedding is unchanged."""
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    layer = cls(max_length=10, d_model=4)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x, start_index=5)), x)
    assert (cls.position_mode, cls.length_limited) == (mode, False)
    assert cls.from_config(layer.get_config()).get_config() == layer.get_config()
    embedding = TransformerEmbedding(10, 4, positional_encoding=mode)
    ids = np.array([[3, 4, 0]], "int32")
    table = ops.convert_to_numpy(embedding(ids)) / 2.0  # sqrt(d_model) = 2
    np.testing.assert_allclose(
        table[0], embedding.token_embedding.embeddings.numpy()[[3, 4, 0]], rtol=1e-6
    )
