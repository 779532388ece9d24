"""Regression tests for the defects of the article this project started from.

Each test fails on the article's construction; see docs/article_errata.md.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

from transformer_tf.layers import TransformerDecoderLayer
from transformer_tf.models import Seq2SeqTransformer, TransformerClassifier
from transformer_tf.training.losses import class_cross_entropy, token_cross_entropy

SMALL = dict(num_layers=2, d_model=32, num_heads=4, d_ff=64, dropout=0.0)


def test_decoder_self_attention_runs_before_cross_attention():
    layer = TransformerDecoderLayer(16, 2, 32)
    calls = []
    for name in ("self_attention", "cross_attention", "feed_forward_layer"):
        sublayer = getattr(layer, name)
        original = sublayer.call

        def recording(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        sublayer.call = recording
    x = np.random.default_rng(0).normal(size=(1, 3, 16)).astype("float32")
    layer(x, x)
    assert calls == ["self_attention", "cross_attention", "feed_forward_layer"]


def test_decoder_reads_the_final_encoder_output():
    """Every decoder block attends to the *last* encoder block's output (the article indexed
    an empty list of per-layer encoder outputs)."""
    model = Seq2SeqTransformer(30, 30, **SMALL)
    rng = np.random.default_rng(1)
    source = rng.integers(4, 30, size=(2, 5)).astype("int32")
    target = rng.integers(4, 30, size=(2, 4)).astype("int32")
    encoded, mask = model.encode(source)
    via_model = ops.convert_to_numpy(model({"source": source, "target": target}))
    via_final = ops.convert_to_numpy(model.decode(target, encoded, mask))
    np.testing.assert_allclose(via_model, via_final, atol=1e-6)
    # ... and the last encoder block matters: perturbing its output changes the logits.
    shifted = ops.convert_to_numpy(model.decode(target, encoded + 1.0, mask))
    assert np.abs(shifted - via_final).max() > 1e-3


def test_positions_matter():
    """Without positional encoding a Transformer encoder is permutation-equivariant: swapping
    two source tokens would not change a mean-pooled classifier's output."""
    model = TransformerClassifier(30, 2, **SMALL)
    ids = np.array([[5, 6, 7, 8, 9]], "int32")
    swapped = ids[:, [1, 0, 2, 3, 4]]
    a, b = ops.convert_to_numpy(model(ids)), ops.convert_to_numpy(model(swapped))
    assert np.abs(a - b).max() > 1e-4


def test_losses_take_logits_and_integer_labels_and_skip_padding():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 7)).astype("float32")
    labels = np.array([[4, 5, 0], [6, 0, 0]], "int32")
    loss, count = token_cross_entropy(labels, logits)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(log_probs[0, 0, 4] + log_probs[0, 1, 5] + log_probs[1, 0, 6])
    assert float(count) == 3.0
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # Label smoothing eps: (1 - eps) * NLL + eps * mean over the vocabulary of -log p.
    smoothed, _ = token_cross_entropy(labels, logits, label_smoothing=0.1)
    mask = labels != 0
    uniform = -log_probs.mean(-1)[mask].sum()
    np.testing.assert_allclose(float(smoothed), 0.9 * expected + 0.1 * uniform, rtol=1e-5)
    clf_loss, n = class_cross_entropy(np.array([1, 0]), logits[:, 0, :2])
    p = tf.nn.log_softmax(logits[:, 0, :2]).numpy()
    np.testing.assert_allclose(float(clf_loss), -(p[0, 1] + p[1, 0]), rtol=1e-5)
    assert float(n) == 2.0
