"""The reference models: the same architectures from keras-hub layers, as keras-io builds them.

``keras_hub.layers.TokenAndPositionEmbedding`` (``mask_zero=True``, so padding masks flow to
the attention layers as Keras masks), ``TransformerEncoder`` / ``TransformerDecoder`` (post-norm,
ReLU, like the engine's default blocks) and a Dense output layer; trained with ``Model.fit``.
"""

from __future__ import annotations

import keras
import keras_hub


def build_reference_seq2seq(
    *, source_vocab, target_vocab, length, num_layers, d_model, num_heads, d_ff, dropout
):
    block = {
        "intermediate_dim": d_ff,
        "num_heads": num_heads,
        "dropout": dropout,
        "activation": "relu",
        "layer_norm_epsilon": 1e-6,
        "normalize_first": False,
    }
    source = keras.Input((None,), dtype="int32", name="source")
    target = keras.Input((None,), dtype="int32", name="target")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        source_vocab, length, d_model, mask_zero=True, name="source_embedding"
    )(source)
    x = keras.layers.Dropout(dropout)(x)
    for i in range(num_layers):
        x = keras_hub.layers.TransformerEncoder(name=f"encoder_{i}", **block)(x)
    y = keras_hub.layers.TokenAndPositionEmbedding(
        target_vocab, length, d_model, mask_zero=True, name="target_embedding"
    )(target)
    y = keras.layers.Dropout(dropout)(y)
    for i in range(num_layers):
        y = keras_hub.layers.TransformerDecoder(name=f"decoder_{i}", **block)(y, x)
    # float32 logits (a no-op under the float32 policy), as the engine computes them.
    logits = keras.layers.Dense(target_vocab, dtype="float32", name="logits")(y)
    return keras.Model({"source": source, "target": target}, logits, name="reference_seq2seq")


def build_reference_classifier(*, vocab, length, num_layers, d_model, num_heads, d_ff, dropout):
    ids = keras.Input((None,), dtype="int32", name="ids")
    x = keras_hub.layers.TokenAndPositionEmbedding(vocab, length, d_model, mask_zero=True)(ids)
    x = keras.layers.Dropout(dropout)(x)
    for i in range(num_layers):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=d_ff,
            num_heads=num_heads,
            dropout=dropout,
            activation="relu",
            layer_norm_epsilon=1e-6,
            name=f"encoder_{i}",
        )(x)
    x = keras.layers.GlobalAveragePooling1D()(x)  # masked mean (the mask flows from the embedding)
    x = keras.layers.Dropout(dropout)(x)
    logits = keras.layers.Dense(2, dtype="float32")(x)
    return keras.Model(ids, logits, name="reference_classifier")
