"""Alignments and attention plots: the last decoder block's cross-attention, averaged over heads."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from transformer_tf.assembly import load_run
from transformer_tf.cli import main
from transformer_tf.data.special_tokens import BOS_ID, PAD_ID
from transformer_tf.errors import UserError
from transformer_tf.inference.ensemble import Ensemble
from transformer_tf.inference.options import DecodingOptions
from transformer_tf.inference.translate import (
    attention_matrices,
    attention_plot_size,
    pharaoh,
    translate,
)
from transformer_tf.layers.decoder_layer import TransformerDecoderLayer
from transformer_tf.models import Seq2SeqTransformer

# The commands load the shared run once per set of arguments (tests/shared_runs.py): the same
# model object, whose traced decoders later commands reuse.
pytestmark = pytest.mark.usefixtures("load_each_run_once")

VOCAB = 20


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(7)
    model = Seq2SeqTransformer(
        VOCAB, VOCAB, num_layers=1, d_model=16, num_heads=2, d_ff=32, dropout=0.0
    )
    model.build()
    # Sharpen the cross-attention so that the argmax is well separated from ties.
    cross = model.decoder.blocks[-1].cross_attention
    cross.query_dense.kernel.assign(cross.query_dense.kernel * 6.0)
    return model


SOURCE = np.array([[5, 6, 7, 8, 9], [10, 11, 12, PAD_ID, PAD_ID]], "int32")
TARGET = np.array([[BOS_ID, 4, 5, 6], [BOS_ID, 7, PAD_ID, PAD_ID]], "int32")


def _weights_by_hand(model, source, target):
    """The one-block decoder taken apart: embedding, self-attention sublayer (post-norm), then the
    cross-attention layer called directly with ``return_attention_scores``."""
    encoder_output, source_mask = model.encode(source)
    block = model.decoder.blocks[0]
    y = model.target_embedding(target)
    h = block.self_attention(y, y, key_padding_mask=target != PAD_ID, causal=True)
    h = block.self_attention_norm(y + h)
    _, weights = block.cross_attention(
        h, encoder_output, key_padding_mask=source_mask, return_attention_scores=True
    )
    return weights.numpy()


def test_cross_attention_is_the_last_blocks_softmax_over_real_source_positions(model):
    weights = model.cross_attention(tf.constant(SOURCE), tf.constant(TARGET)).numpy()
    assert weights.shape == (2, 2, 4, 5)
    np.testing.assert_allclose(weights, _weights_by_hand(model, SOURCE, TARGET), atol=1e-6)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(weights[1, :, :, 3:], 0.0)  # padded source positions
    assert np.all(weights[1, :, :, :3] > 0)


def test_alignment_is_the_argmax_of_the_head_average(model):
    sources = [[5, 6, 7, 8, 9], [10, 11, 12]]
    targets = [[4, 5, 6], [7]]
    matrices = attention_matrices(model, sources, targets, batch_size=1)
    by_hand = _weights_by_hand(model, SOURCE, TARGET).mean(axis=1)  # (batch, target, source)
    assert [m.shape for m in matrices] == [(3, 5), (1, 3)]
    np.testing.assert_allclose(matrices[0], by_hand[0, :3], atol=1e-6)
    np.testing.assert_allclose(matrices[1], by_hand[1, :1, :3], atol=1e-6)
    for matrix, by in zip(matrices, [by_hand[0, :3], by_hand[1, :1, :3]], strict=True):
        expected = " ".join(f"{s}-{t}" for t, s in enumerate(by.argmax(axis=1)))
        assert pharaoh(matrix) == expected
    # The test is not trivial: the rows do not all point at one source position.
    assert len(set(matrices[0].argmax(axis=1))) > 1
    # Batching does not change the matrices; an ensemble aligns with its first model.
    together = attention_matrices(Ensemble([model, model]), sources, targets, batch_size=8)
    for a, b in zip(matrices, together, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_pharaoh_pairs_source_with_target_in_target_order():
    attention = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.0, 0.6, 0.4]])
    assert pharaoh(attention) == "1-0 0-1 2-2 1-3"
    assert pharaoh(np.zeros((0, 3))) == ""


class _NoScoresLayer(TransformerDecoderLayer):
    """A plugin decoder layer whose call has no ``return_attention_scores``."""

    def call(self, x, encoder_output=None, source_padding_mask=None, target_padding_mask=None,
             cache=None, cache_index=None, training=None):  # fmt: skip
        return super().call(
            x, encoder_output, source_padding_mask, target_padding_mask, cache, cache_index,
            training,
        )  # fmt: skip


def test_a_decoder_layer_without_attention_scores_is_a_clear_error():
    keras.utils.set_random_seed(1)
    plugin = Seq2SeqTransformer(VOCAB, VOCAB, num_layers=1, d_model=8, num_heads=2, d_ff=16)
    plugin.build()
    plugin.decoder.blocks[-1].__class__ = _NoScoresLayer
    with pytest.raises(UserError, match="--alignment: the decoder layer _NoScoresLayer"):
        attention_matrices(plugin, [[5, 6]], [[4]], batch_size=4)


# --- the command line on a trained toy run ------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(request):
    """The toy run shared with other files (tests/shared_runs.py): 60 steps, beam size 3."""
    return request.getfixturevalue("toy_translation_run")


def _sentence(run):
    """The first test sentence that translation does not cut (data.max_length - 1 tokens)."""
    limit = run.config.data.max_length - 1
    source = run.task.source_tokenizer
    return next(s for s, _ in run.task.raw_splits["test"] if len(source.encode(s)) <= limit)


def _translate_aligned(run, sentence):
    """The best hypotheses of ``sentence`` with their alignments (the run's decoding)."""
    options = DecodingOptions.from_config(run.config)
    source, target = run.task.source_tokenizer, run.task.target_tokenizer
    return translate(run.model, source, target, [sentence], options, alignment=True)[0]


def test_translate_alignment_text_and_jsonl(run_dir, capsys):
    run = load_run(run_dir)
    sentence = _sentence(run)
    (best,) = _translate_aligned(run, sentence)
    source_ids = run.task.source_tokenizer.encode_batch([sentence])[0]
    (matrix,) = attention_matrices(run.model, [source_ids], [best.ids], batch_size=1)
    expected = pharaoh(matrix)
    assert len(expected.split()) == len(best.ids) > 0
    assert best.source_tokens == run.task.source_tokenizer.tokens(source_ids)

    assert main(["translate", str(run_dir), sentence, "--alignment"]) == 0
    assert capsys.readouterr().out == f"{best.text} ||| {expected}\n"
    assert main(["translate", str(run_dir), sentence, "--alignment", "--with-scores"]) == 0
    assert capsys.readouterr().out == f"{best.score:.6f} ||| {best.text} ||| {expected}\n"
    assert main(["translate", str(run_dir), sentence, "--alignment", "--format", "jsonl"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["hypotheses"][0]["alignment"] == expected
    assert main(["translate", str(run_dir), sentence, "--format", "jsonl"]) == 0
    assert "alignment" not in json.loads(capsys.readouterr().out)["hypotheses"][0]


def test_attention_plot_writes_a_png_of_the_expected_size(run_dir, tmp_path, capsys):
    matplotlib_image = pytest.importorskip("matplotlib.image")
    run = load_run(run_dir)
    sentence = _sentence(run)
    (best,) = _translate_aligned(run, sentence)
    path = tmp_path / "attention.png"
    assert main(["translate", str(run_dir), sentence, "--attention-plot", str(path)]) == 0
    assert capsys.readouterr().out == f"{best.text}\n"  # the translation, no alignment
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib_image.imread(path)
    width, height = attention_plot_size(len(best.source_tokens), len(best.tokens))
    assert image.shape[:2] == (height, width)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], "exactly one SENTENCE"),
        (["one sentence", "two sentences"], "got 2 sentences"),
        (["a b", "--attention-plot-folder"], "cannot write there"),
    ],
)
def test_bad_attention_plot_arguments_exit_2(run_dir, tmp_path, capsys, arguments, message):
    path = tmp_path / "plot.png"
    if "--attention-plot-folder" in arguments:
        arguments = [arguments[0]]
        path = tmp_path / "missing" / "plot.png"
    code = main(["translate", str(run_dir), *arguments, "--attention-plot", str(path)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not path.exists()
