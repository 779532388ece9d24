import keras
import numpy as np
from keras import ops

from transformer_tf.models import (
    TransformerClassifier,
    TransformerMaskedLM,
    build_model,
    weight_path,
)

SMALL = dict(num_layers=1, d_model=16, num_heads=2, d_ff=32, dropout=0.0)


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def test_shapes_parameter_count_and_padding_invariance():
    model = TransformerMaskedLM(30, **SMALL)
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 30, size=(4, 6)).astype("int32")
    ids[0, 3:] = 0
    logits = model(ids)
    assert tuple(logits.shape) == (4, 6, 30) and logits.dtype == "float32"
    padded = np.concatenate([ids, np.zeros((4, 5), "int32")], axis=1)
    real = ids != 0
    np.testing.assert_allclose(_numpy(model(padded))[:, :6][real], _numpy(logits)[real], atol=1e-5)
    d, ff = 16, 32
    encoder = 4 * (d * d + d) + d * ff + ff + ff * d + d + 2 * 2 * d
    # The embedding, the encoder, the transform (dense and norm) and one bias per token; the
    # output projection is the embedding itself.
    assert model.count_params() == 30 * d + encoder + (d * d + d) + 2 * d + 30


def test_logits_are_the_transformed_states_against_the_embedding_rows():
    model = TransformerMaskedLM(12, **SMALL)
    ids = np.array([[5, 6, 7, 0]], "int32")
    model.build()
    model.logits_bias.assign(np.arange(12, dtype="float32") / 10)
    states = model.encoder(model.embedding(ids), padding_mask=ids != 0)
    hidden = _numpy(model.transform_norm(model.transform(states)))  # (1, 4, d_model)
    table = _numpy(model.embedding.token_embedding.embeddings)  # (12, d_model)
    expected = hidden @ table.T + np.arange(12, dtype="float32") / 10
    np.testing.assert_allclose(_numpy(model(ids)), expected, rtol=1e-5, atol=1e-6)


def test_the_embedding_and_encoder_are_the_classifiers():
    """A classifier can take every embedding and encoder weight of a masked LM, by path and
    shape (fine-tuning); what is left on each side is its own head."""
    lm = TransformerMaskedLM(30, **SMALL)
    classifier = TransformerClassifier(30, num_classes=2, **SMALL)
    lm.build()
    classifier.build()
    lm_weights = {weight_path(w): tuple(w.shape) for w in lm.weights}
    classifier_weights = {weight_path(w): tuple(w.shape) for w in classifier.weights}
    shared = lm_weights.keys() & classifier_weights.keys()
    assert {p.split("/")[0] for p in shared} == {"embedding", "encoder"}
    assert all(lm_weights[p] == classifier_weights[p] for p in shared)
    assert {p.split("/")[0] for p in lm_weights.keys() - shared} == {
        "transform",
        "transform_norm",
        "logits_bias",
    }
    assert {p.split("/")[0] for p in classifier_weights.keys() - shared} == {"head"}
    assert not [p for p in lm_weights if p.split("/")[0] in ("embedding", "encoder")
                and p not in shared]  # fmt: skip


def test_get_config_builds_the_same_model_and_keras_reloads_it(tmp_path):
    model = build_model("transformer_masked_lm", vocab_size=20, activation="gelu", **SMALL)
    assert isinstance(model, TransformerMaskedLM)
    config = model.get_config()
    assert config["vocab_size"] == 20 and config["num_layers"] == 1
    assert config["activation"] == "gelu" and config["d_model"] == 16
    ids = np.array([[4, 9, 13, 0], [5, 6, 7, 8]], "int32")
    expected = _numpy(model(ids))
    path = tmp_path / "lm.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded) is TransformerMaskedLM
    np.testing.assert_allclose(_numpy(reloaded(ids)), expected, rtol=1e-6, atol=1e-6)
