import keras
import numpy as np
import pytest
from keras import ops

from transformer_tf.models import TransformerClassifier, build_model

SMALL = dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, dropout=0.0)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_shapes_parameter_count_and_padding_invariance(pooling):
    model = TransformerClassifier(30, num_classes=3, pooling=pooling, **SMALL)
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 30, size=(4, 6)).astype("int32")
    ids[0, 3:] = 0
    logits = model(ids)
    assert tuple(logits.shape) == (4, 3) and logits.dtype == "float32"
    padded = np.concatenate([ids, np.zeros((4, 5), "int32")], axis=1)
    np.testing.assert_allclose(
        ops.convert_to_numpy(model(padded)), ops.convert_to_numpy(logits), atol=1e-5
    )
    d, ff = 16, 32
    encoder = 4 * (d * d + d) + d * ff + ff + ff * d + d + 2 * 2 * d
    expected = 30 * d + encoder + d * 3 + 3 + (d if pooling == "cls" else 0)
    assert model.count_params() == expected


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_token_dropout_leaves_tokens_out_as_if_they_were_padding(pooling, monkeypatch):
    model = TransformerClassifier(30, num_classes=3, pooling=pooling, token_dropout=0.5, **SMALL)
    ids = np.array([[5, 6, 7, 8, 0], [9, 10, 11, 12, 13]], "int32")
    # Inference ignores token dropout: the logits are those of the same weights without it.
    inference = ops.convert_to_numpy(model(ids))
    model.token_dropout = 0.0
    np.testing.assert_array_equal(inference, ops.convert_to_numpy(model(ids, training=True)))
    model.token_dropout = 0.5
    # In training, a token whose draw is below the rate is dropped: tokens 6 and 8 of the
    # first review, 13 of the second (the padding's draw does not matter).
    draws = np.array([[0.9, 0.2, 0.7, 0.4, 0.1], [0.6, 0.5, 0.8, 0.99, 0.3]], "float32")
    monkeypatch.setattr(keras.random, "uniform", lambda shape, seed=None: ops.array(draws))
    dropped = np.array([[5, 0, 7, 0, 0], [9, 10, 11, 12, 0]], "int32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(model(ids, training=True)),
        ops.convert_to_numpy(model(dropped)),
        rtol=1e-6,
        atol=1e-6,
    )
    assert model.get_config()["token_dropout"] == 0.5


def test_naive_bayes_ratios_are_the_smoothed_log_count_ratios():
    model = TransformerClassifier(6, num_classes=2, naive_bayes=True, **SMALL)
    model.build()
    # Documents containing each token, per class: columns (negative, positive).
    counts = np.array([[0, 0], [4, 0], [1, 3], [0, 0], [2, 2], [3, 1]])
    model.adapt_naive_bayes(counts)
    ratios = ops.convert_to_numpy(model.naive_bayes_ratios)
    # p(t | c) = (1 + n[t, c]) / (5 + sum of the column) over the 5 non-padding tokens.
    negative = np.array([5, 2, 1, 3, 4]) / 15
    positive = np.array([1, 4, 1, 3, 2]) / 11
    np.testing.assert_allclose(ratios[1:, 1] - ratios[1:, 0], np.log(positive / negative), 1e-6)
    np.testing.assert_allclose(ratios.sum(axis=1), 0, atol=1e-6)
    np.testing.assert_array_equal(ratios[0], [0, 0])


def test_naive_bayes_path_adds_the_weighted_ratios_of_the_distinct_tokens():
    model = TransformerClassifier(8, num_classes=3, naive_bayes=True, **SMALL)
    ids = np.array([[3, 5, 3, 3, 0, 0], [7, 6, 5, 4, 2, 1]], "int32")
    before = ops.convert_to_numpy(model(ids))  # zero weights: the path adds nothing
    rng = np.random.default_rng(0)
    model.naive_bayes_ratios.assign(rng.normal(size=(8, 3)).astype("float32"))
    model.naive_bayes_weights.assign(rng.normal(size=8).astype("float32"))
    ratios = ops.convert_to_numpy(model.naive_bayes_ratios)
    weights = ops.convert_to_numpy(model.naive_bayes_weights)
    # Token 3 counts once however often it occurs; padding not at all.
    expected = np.stack(
        [
            weights[3] * ratios[3] + weights[5] * ratios[5],
            sum(weights[t] * ratios[t] for t in (7, 6, 5, 4, 2, 1)),
        ]
    )
    np.testing.assert_allclose(ops.convert_to_numpy(model(ids)) - before, expected, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        model.adapt_naive_bayes(np.ones((8, 2)))


def test_naive_bayes_path_is_float32_under_mixed_precision():
    model = TransformerClassifier(8, naive_bayes=True, dtype="mixed_bfloat16", **SMALL)
    model.build()
    assert model.naive_bayes_ratios.dtype == "float32"
    model.naive_bayes_ratios.assign(np.full((8, 2), [0.0, 1.0 + 2**-12], "float32"))
    model.naive_bayes_weights.assign(np.ones(8, "float32"))
    ids = np.array([[1, 2, 3, 4, 5, 6, 7]], "int32")
    logits = ops.convert_to_numpy(model(ids))
    model.naive_bayes_weights.assign(np.zeros(8, "float32"))
    # bfloat16 would round 1 + 2**-12 to 1 and the sum to 7.
    np.testing.assert_allclose(
        logits - ops.convert_to_numpy(model(ids)), [[0.0, 7 * (1 + 2**-12)]], rtol=1e-6
    )


def test_keras_save_and_reload(tmp_path):
    model = TransformerClassifier(30, pooling="cls", **SMALL)
    ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0]], "int32")
    expected = ops.convert_to_numpy(model(ids))
    model.save(tmp_path / "clf.keras")
    reloaded = keras.saving.load_model(tmp_path / "clf.keras", safe_mode=True)
    np.testing.assert_array_equal(ops.convert_to_numpy(reloaded(ids)), expected)


def test_learns_a_separable_task():
    """Label = whether token 5 occurs anywhere in a variable-length, padded sequence."""
    rng = np.random.default_rng(1)
    n = 1024
    ids = rng.integers(6, 20, size=(n, 10)).astype("int32")
    labels = rng.integers(0, 2, size=n).astype("int32")
    positions = rng.integers(0, 5, size=n)
    ids[labels == 1, positions[labels == 1]] = 5
    lengths = rng.integers(5, 11, size=n)
    ids[np.arange(10)[None, :] >= lengths[:, None]] = 0
    model = build_model("transformer_classifier", vocab_size=20, num_classes=2, **SMALL)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(ids, labels, batch_size=32, epochs=8, verbose=0, validation_split=0.25)
    assert history.history["val_accuracy"][-1] > 0.95


def test_config_of_older_versions_reloads_with_the_same_keys_and_attributes():
    old = {
        "name": "old_classifier", "trainable": True, "vocab_size": 30, "num_classes": 3,
        "num_layers": 1, "d_model": 16, "num_heads": 2, "d_ff": 24, "dropout": 0.1,
        "attention_dropout": 0.0, "ffn_dropout": 0.1, "activation": "relu",
        "normalize_first": False, "layer_norm_epsilon": 1e-06, "positional_encoding": "sinusoidal",
        "max_length": 512, "attention": "multi_head", "feed_forward": "position_wise",
        "normalization": "layer_norm", "encoder_layer": "transformer", "pooling": "cls",
    }  # fmt: skip
    model = TransformerClassifier.from_config(old)
    config = model.get_config()
    config.pop("dtype")
    # Keys added since: their defaults.
    new_keys = {"token_dropout": 0.0, "naive_bayes": False, "maximum_relative_position": None}
    assert config == {**old, **new_keys}
    for name, value in old.items():
        if name not in ("name", "trainable"):
            assert getattr(model, name) == value, name
    assert model.encoder.blocks[0].ffn_dropout == 0.1
    assert model(np.array([[5, 6, 0]], "int32")).shape == (1, 3)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize(
    "positions,extra",
    [
        ({"positional_encoding": "relative", "maximum_relative_position": 2}, 2 * 5 * 8),
        ({"positional_encoding": "rotary"}, 0),
    ],
)
def test_positions_in_self_attention_keep_padding_invariance(pooling, positions, extra):
    """Relative (two 5 x 8 tables in the one block) and rotary (no weights) classifiers ignore
    padding; with the cls vector prepended, the review tokens are positions 1..."""
    model = TransformerClassifier(30, num_classes=3, pooling=pooling, **SMALL, **positions)
    ids = np.random.default_rng(1).integers(4, 30, size=(2, 6)).astype("int32")
    ids[0, 4:] = 0
    logits = ops.convert_to_numpy(model(ids))
    padded = np.concatenate([ids, np.zeros((2, 4), "int32")], axis=1)
    np.testing.assert_allclose(ops.convert_to_numpy(model(padded)), logits, atol=1e-5)
    plain = TransformerClassifier(30, num_classes=3, pooling=pooling, **SMALL)
    plain(ids)
    assert model.count_params() == plain.count_params() + extra
