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
    assert config == old
    for name, value in old.items():
        if name not in ("name", "trainable"):
            assert getattr(model, name) == value, name
    assert model.encoder.blocks[0].ffn_dropout == 0.1
    assert model(np.array([[5, 6, 0]], "int32")).shape == (1, 3)
