import inspect

import keras
import numpy as np
import pytest
from keras import ops

from transformer_tf.models import Seq2SeqTransformer, build_model

SMALL = dict(num_layers=2, d_model=32, num_heads=4, d_ff=64, dropout=0.0)

# Absolute (sinusoidal) positions, and the two that self-attention applies. K = 3 is shorter
# than the test sequences, so that the clipping of relative distances is exercised.
POSITIONS = [
    pytest.param({}, id="sinusoidal"),
    pytest.param(
        {"positional_encoding": "relative", "maximum_relative_position": 3}, id="relative"
    ),
    pytest.param({"positional_encoding": "rotary"}, id="rotary"),
]


def _ids(rng, batch, length, vocab, pad_from=None):
    ids = rng.integers(4, vocab, size=(batch, length)).astype("int32")
    if pad_from is not None:
        ids[:, pad_from:] = 0
    return ids


def _expected_params(vs, vt, d, ff, n_enc, n_dec, tie, share, normalize_first=False, bias=False):
    attn, ffn, norm = 4 * (d * d + d), d * ff + ff + ff * d + d, 2 * d
    params = vs * d + (0 if share else vt * d)
    params += n_enc * (attn + ffn + 2 * norm) + n_dec * (2 * attn + ffn + 3 * norm)
    params += 2 * norm if normalize_first else 0
    params += 0 if tie else d * vt + vt
    params += vt if tie and bias else 0
    return params


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"tie_embeddings": False},
        {"share_embeddings": True},
        {"share_embeddings": True, "output_bias": True},
        {"normalize_first": True, "num_encoder_layers": 3, "num_decoder_layers": 1},
    ],
)
def test_shapes_dtypes_and_parameter_count(kwargs):
    vs, vt = 40, 40 if kwargs.get("share_embeddings") else 50
    model = Seq2SeqTransformer(vs, vt, **{**SMALL, **kwargs})
    rng = np.random.default_rng(0)
    # Two batches of different lengths through the same model.
    for src_len, tgt_len in [(7, 5), (3, 9)]:
        logits = model({"source": _ids(rng, 3, src_len, vs), "target": _ids(rng, 3, tgt_len, vt)})
        assert tuple(logits.shape) == (3, tgt_len, vt)
        assert logits.dtype == "float32"
    expected = _expected_params(
        vs,
        vt,
        32,
        64,
        kwargs.get("num_encoder_layers", 2),
        kwargs.get("num_decoder_layers", 2),
        kwargs.get("tie_embeddings", True),
        kwargs.get("share_embeddings", False),
        kwargs.get("normalize_first", False),
        kwargs.get("output_bias", False),
    )
    assert model.count_params() == expected


def test_decoder_reads_target_embeddings_not_source():
    model = Seq2SeqTransformer(30, 70, **SMALL)
    model.build()
    assert model.target_embedding is not model.source_embedding
    assert model.target_embedding.token_embedding.embeddings.shape == (70, 32)
    with pytest.raises(ValueError, match="share_embeddings needs one vocabulary"):
        Seq2SeqTransformer(30, 70, share_embeddings=True)


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("normalize_first", [False, True])
def test_causality(normalize_first, positions):
    model = Seq2SeqTransformer(40, 40, **SMALL, **positions, normalize_first=normalize_first)
    rng = np.random.default_rng(1)
    source, target = _ids(rng, 2, 6, 40), _ids(rng, 2, 8, 40)
    base = ops.convert_to_numpy(model({"source": source, "target": target}))
    for t in range(8):
        changed = target.copy()
        changed[:, t + 1 :] = rng.integers(4, 40, size=changed[:, t + 1 :].shape)
        out = ops.convert_to_numpy(model({"source": source, "target": changed}))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize(
    ("side", "seed", "padding"),
    [pytest.param("source", 2, 6, id="source"), pytest.param("target", 3, 3, id="target")],
)
def test_padding_does_not_change_outputs_at_real_positions(side, seed, padding, positions):
    model = Seq2SeqTransformer(40, 40, **SMALL, **positions)
    rng = np.random.default_rng(seed)
    inputs = {"source": _ids(rng, 2, 5, 40), "target": _ids(rng, 2, 4, 40)}
    padded = dict(inputs)
    padded[side] = np.concatenate([inputs[side], np.zeros((2, padding), "int32")], axis=1)
    a = ops.convert_to_numpy(model(inputs))
    b = ops.convert_to_numpy(model(padded))
    # Target padding adds output positions past the real ones: compare the real ones.
    np.testing.assert_allclose(a, b[:, : a.shape[1]], atol=1e-5)


@pytest.mark.parametrize(
    "positions",
    [
        pytest.param({"positional_encoding": "learned"}, id="learned"),
        *POSITIONS[1:],
    ],
)
def test_keras_save_and_reload(tmp_path, positions):
    model = Seq2SeqTransformer(40, 45, **SMALL, **positions, tie_embeddings=False)
    rng = np.random.default_rng(4)
    inputs = {"source": _ids(rng, 2, 5, 40, pad_from=4), "target": _ids(rng, 2, 3, 45)}
    expected = ops.convert_to_numpy(model(inputs))
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(ops.convert_to_numpy(reloaded(inputs)), expected)
    assert reloaded.get_config() == model.get_config()
    assert Seq2SeqTransformer.from_config(model.get_config()).get_config() == model.get_config()


@pytest.mark.parametrize("positions", POSITIONS)
def test_mixed_precision_logits_are_float32(positions):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = Seq2SeqTransformer(40, 40, **SMALL, **positions)
    rng = np.random.default_rng(5)
    logits = model({"source": _ids(rng, 2, 5, 40), "target": _ids(rng, 2, 3, 40)})
    assert logits.dtype == "float32"
    assert model.encoder.blocks[0].self_attention.query_dense.compute_dtype == "bfloat16"


@pytest.mark.parametrize("positions", POSITIONS)
def test_cached_decode_step_equals_full_decode(positions):
    """Step t sees only the cache: the relative distances and rotary angles of its query
    (position t) and keys (0..t, the cache rotated when written) are those of the full call."""
    model = Seq2SeqTransformer(40, 40, **SMALL, **positions)
    rng = np.random.default_rng(6)
    source, target = _ids(rng, 2, 6, 40, pad_from=4), _ids(rng, 2, 7, 40)
    encoded, source_mask = model.encode(source)
    full = ops.convert_to_numpy(model.decode(target, encoded, source_mask))
    cache = model.init_cache(encoded, 10)
    for t in range(7):
        logits, cache = model.decode_step(target[:, t : t + 1], cache, t, source_mask)
        np.testing.assert_allclose(ops.convert_to_numpy(logits), full[:, t], rtol=1e-5, atol=1e-6)


def test_output_bias_is_added_to_the_tied_logits_and_cached_decoding_keeps_it():
    model = Seq2SeqTransformer(40, 40, **SMALL, share_embeddings=True, output_bias=True)
    rng = np.random.default_rng(8)
    source, target = _ids(rng, 2, 6, 40, pad_from=4), _ids(rng, 2, 5, 40)
    inputs = {"source": source, "target": target}
    without = ops.convert_to_numpy(model(inputs))
    bias = rng.normal(size=40).astype("float32")
    model.logits_bias.assign(bias)
    with_bias = ops.convert_to_numpy(model(inputs))
    np.testing.assert_allclose(with_bias - without, np.broadcast_to(bias, without.shape), atol=1e-5)
    encoded, source_mask = model.encode(source)
    cache = model.init_cache(encoded, 8)
    for t in range(5):
        logits, cache = model.decode_step(target[:, t : t + 1], cache, t, source_mask)
        np.testing.assert_allclose(ops.convert_to_numpy(logits), with_bias[:, t], atol=1e-4)
    assert [name for _, name, _ in model.vocabulary_weights()] == ["source", "target"]
    assert model.vocabulary_weights()[1][0] is model.logits_bias


def test_learns_to_reverse_sequences():
    """A tiny model learns to reverse 6-token sequences: teacher-forced loss < 0.1."""
    rng = np.random.default_rng(7)
    n, length, vocab = 2048, 6, 14
    source = rng.integers(4, vocab, size=(n, length)).astype("int32")
    labels = np.concatenate([source[:, ::-1], np.full((n, 1), 3)], axis=1).astype("int32")
    target = np.concatenate([np.full((n, 1), 2), source[:, ::-1]], axis=1).astype("int32")
    model = build_model(
        "seq2seq_transformer", source_vocab_size=vocab, target_vocab_size=vocab, **SMALL
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        {"source": source, "target": target}, labels, batch_size=64, epochs=10, verbose=0
    )  # 320 steps
    assert history.history["loss"][-1] < 0.1
    predictions = ops.convert_to_numpy(model({"source": source[:256], "target": target[:256]}))
    assert (predictions.argmax(-1) == labels[:256]).mean() > 0.98


# get_config of a model made by the version before the block arguments had one definition.
OLD_CONFIG = {
    "name": "old_seq2seq", "trainable": True, "source_vocab_size": 30, "target_vocab_size": 31,
    "num_layers": 1, "d_model": 16, "num_heads": 2, "d_ff": 24, "dropout": 0.0,
    "attention_dropout": 0.05, "ffn_dropout": 0.0, "activation": "gelu", "normalize_first": True,
    "layer_norm_epsilon": 1e-05, "positional_encoding": "sinusoidal", "max_length": 512,
    "attention": "multi_head", "feed_forward": "position_wise", "normalization": "layer_norm",
    "encoder_layer": "transformer", "decoder_layer": "transformer", "num_encoder_layers": None,
    "num_decoder_layers": 2, "share_embeddings": False, "tie_embeddings": False,
}  # fmt: skip


def test_config_of_older_versions_reloads_with_the_same_keys_and_attributes():
    model = Seq2SeqTransformer.from_config(OLD_CONFIG)
    config = model.get_config()
    config.pop("dtype")
    assert config.pop("output_bias") is False  # added since; off, as those models had it
    assert config.pop("maximum_relative_position") is None  # added since; unused, as then
    assert config == OLD_CONFIG
    for name, value in OLD_CONFIG.items():
        if name not in ("name", "trainable"):
            assert getattr(model, name) == value, name
    block = model.decoder.blocks[1]
    assert (block.d_ff, block.activation, block.attention_dropout) == (24, "gelu", 0.05)
    assert (len(model.encoder.blocks), len(model.decoder.blocks)) == (1, 2)
    assert model.decoder.final_norm.epsilon == 1e-05


def test_constructor_signature_lists_every_argument_with_its_default():
    parameters = inspect.signature(Seq2SeqTransformer.__init__).parameters
    defaults = {name: p.default for name, p in parameters.items() if name not in ("self", "kwargs")}
    assert defaults == {
        "source_vocab_size": inspect.Parameter.empty, "target_vocab_size": inspect.Parameter.empty,
        "num_layers": 2, "d_model": 128, "num_heads": 4, "d_ff": 512, "dropout": 0.1,
        "attention_dropout": 0.0, "ffn_dropout": 0.0, "activation": "relu",
        "normalize_first": False, "layer_norm_epsilon": 1e-6, "positional_encoding": "sinusoidal",
        "max_length": 512, "attention": "multi_head", "feed_forward": "position_wise",
        "normalization": "layer_norm", "encoder_layer": "transformer",
        "decoder_layer": "transformer", "num_encoder_layers": None, "num_decoder_layers": None,
        "share_embeddings": False, "tie_embeddings": True, "output_bias": False,
        "maximum_relative_position": None,
    }  # fmt: skip
    # build_model passes the block arguments (found in the signature) and drops the others.
    model = build_model(
        "seq2seq_transformer",
        source_vocab_size=20,
        target_vocab_size=20,
        pooling="cls",
        **{**SMALL, "normalize_first": True, "ffn_dropout": 0.2},
    )
    assert (model.d_model, model.normalize_first, model.ffn_dropout) == (32, True, 0.2)
    assert model.encoder.blocks[0].ffn_dropout == 0.2
    assert not hasattr(model, "pooling")
