"""Regression tests for the defects of the article this project started from.

Each test fails on the article's construction; see docs/article_errata.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from transformer_tf.layers import TransformerDecoderLayer
from transformer_tf.models import Seq2SeqTransformer, TransformerClassifier
from transformer_tf.tasks.losses import class_cross_entropy, token_cross_entropy

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


def _forward_from_blocks(model, source, target, memory):
    """The model's forward pass rebuilt from its sublayers, with a choice of what decoder block
    ``i`` cross-attends to: ``memory(i, embedded_source, encoder_block_outputs, final_output)``."""
    source_mask, target_mask = source != 0, target != 0
    embedded = model.source_embedding(source)
    x, block_outputs = embedded, []
    for block in model.encoder.blocks:
        x = block(x, padding_mask=source_mask)
        block_outputs.append(x)
    final = x if model.encoder.final_norm is None else model.encoder.final_norm(x)
    y = model.target_embedding(target)
    for i, block in enumerate(model.decoder.blocks):
        y = block(
            y,
            memory(i, embedded, block_outputs, final),
            source_padding_mask=source_mask,
            target_padding_mask=target_mask,
        )
    if model.decoder.final_norm is not None:
        y = model.decoder.final_norm(y)
    return ops.convert_to_numpy(model.project(y))


# What decoder block i attends to: the fix, and the wirings the article's code amounts to.
MEMORIES = {
    "final_encoder_output": lambda i, embedded, outputs, final: final,
    # `enc_outputs[i]` had the list been filled: block i reads encoder block i.
    "encoder_block_i": lambda i, embedded, outputs, final: outputs[i],
    # The decoder built on the encoder's embeddings of the source.
    "embedded_source": lambda i, embedded, outputs, final: embedded,
    # Pre-norm only: the last block's output without the stack's final norm.
    "unnormalised_last_block": lambda i, embedded, outputs, final: outputs[-1],
}


def _reads_final_encoder_output(model, source, target) -> bool:
    logits = ops.convert_to_numpy(model({"source": source, "target": target}))
    reference = _forward_from_blocks(model, source, target, MEMORIES["final_encoder_output"])
    return bool(np.allclose(logits, reference, atol=1e-5, rtol=0))


class _EncoderBlockIMemory(Seq2SeqTransformer):
    """The article's intended wiring (decoder block i attends to encoder block i)."""

    def call(self, inputs, training=None):
        return _forward_from_blocks(
            self, inputs["source"], inputs["target"], MEMORIES["encoder_block_i"]
        )


class _EmbeddedSourceMemory(Seq2SeqTransformer):
    """Every decoder block attends to the embedded source instead of the encoder output."""

    def call(self, inputs, training=None):
        source = inputs["source"]
        return self.decode(inputs["target"], self.source_embedding(source), source != 0)


@pytest.mark.parametrize("normalize_first", [False, True])
def test_decoder_reads_the_final_encoder_output(normalize_first):
    """Every decoder block attends to the *last* encoder block's output, after the stack's final
    norm in pre-norm (the article indexed an empty list of per-layer encoder outputs)."""
    config = dict(SMALL, num_layers=3, normalize_first=normalize_first)
    model = Seq2SeqTransformer(30, 30, **config)
    rng = np.random.default_rng(1)
    source = rng.integers(4, 30, size=(2, 5)).astype("int32")
    source[1, 3:] = 0
    target = rng.integers(4, 30, size=(2, 4)).astype("int32")
    model({"source": source, "target": target})
    assert _reads_final_encoder_output(model, source, target)

    # The check can tell the wirings apart: each wrong memory gives other logits ...
    reference = _forward_from_blocks(model, source, target, MEMORIES["final_encoder_output"])
    wrong = ["encoder_block_i", "embedded_source"]
    if normalize_first:
        wrong.append("unnormalised_last_block")
    for name in wrong:
        other = _forward_from_blocks(model, source, target, MEMORIES[name])
        assert np.abs(other - reference).max() > 1e-3, name
    # ... and models wired that way, with the very same weights, fail it.
    for wrong_class, name in (
        (_EncoderBlockIMemory, "encoder_block_i"),
        (_EmbeddedSourceMemory, "embedded_source"),
    ):
        wired_wrong = wrong_class(30, 30, **config)
        wired_wrong({"source": source, "target": target})
        wired_wrong.set_weights(model.get_weights())
        assert not _reads_final_encoder_output(wired_wrong, source, target), name
        # Same weights: the wiring is the only difference.
        wrong_logits = ops.convert_to_numpy(wired_wrong({"source": source, "target": target}))
        expected = _forward_from_blocks(model, source, target, MEMORIES[name])
        np.testing.assert_allclose(wrong_logits, expected, atol=1e-5)


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
