"""n-best lists with scores, and scoring given translations (``inference.scoring``).

Hand-made models with known probabilities pin the exact hypotheses and scores; a random tiny
``Seq2SeqTransformer`` checks that scoring the beam's own hypotheses gives the beam's scores.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures import random_decoder, random_sources
from tests.inference.fake_models import CopyModel, MarkovModel
from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS
from transformer_tf.data.tokenizers import WordTokenizer
from transformer_tf.errors import UserError
from transformer_tf.inference import DecodingOptions, beam_search, greedy_search, make_decoder
from transformer_tf.inference.scoring import score_ids, score_texts
from transformer_tf.inference.serving import build_translation_module

VOCAB = 24
A, B, C = 4, 5, 6


RIGHT = CopyModel.token_log_prob()  # log-prob of the predicted token
WRONG = 0.0 - np.log(np.exp(8.0) + CopyModel.vocab - 1)  # of any other one


def trap():
    # Sequences: B EOS (0.4 * 0.99), A EOS (0.6 * 0.35), A B EOS (0.6 * 0.32 * 0.99), ...
    return MarkovModel(
        {BOS_ID: {A: 0.6, B: 0.4}, A: {EOS_ID: 0.35, A: 0.33, B: 0.32}, B: {EOS_ID: 0.99}}
    )


@pytest.fixture(scope="module")
def model():
    return random_decoder(3, eos_bias=1.5, vocab=VOCAB)


def _sources(seed, batch=6, length=7):
    return random_sources(seed, VOCAB, batch, length)


def _strip(row):
    row = list(row)
    return row[: row.index(EOS_ID)] if EOS_ID in row else [t for t in row if t != PAD_ID]


# --- n-best ------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_cache", [True, False])
def test_nbest_lists_the_known_best_hypotheses_with_their_scores(use_cache):
    model = trap()
    ids, scores = beam_search(
        model, np.array([[7, 8]], "int32"), 6, beam_size=3, length_penalty=0.0,
        use_cache=use_cache, num_hypotheses=3,
    )  # fmt: skip
    assert ids.shape[:2] == (1, 3) and scores.shape == (1, 3)
    # B EOS (0.396), A EOS (0.21), A B EOS (0.6 * 0.32 * 0.99 = 0.19) beats A A EOS (0.07).
    expected = [[B, EOS_ID], [A, EOS_ID], [A, B, EOS_ID]]
    assert [list(row[: len(e)]) for row, e in zip(ids.numpy()[0], expected, strict=True)] == (
        expected
    )
    np.testing.assert_allclose(scores.numpy()[0], [model.log_prob(e) for e in expected], atol=1e-5)
    # With a length penalty the scores are divided by it and the order follows: A B EOS
    # (log 0.19 / (8/6) = -1.25) now beats A EOS (log 0.21 / (7/6) = -1.35).
    _, penalized = beam_search(
        model, np.array([[7, 8]], "int32"), 6, beam_size=3, length_penalty=1.0,
        use_cache=use_cache, num_hypotheses=2,
    )  # fmt: skip
    np.testing.assert_allclose(
        penalized.numpy()[0],
        [model.log_prob(e) / ((5 + len(e)) / 6) for e in (expected[0], expected[2])],
        atol=1e-5,
    )


def test_nbest_first_column_is_the_one_best_and_scores_descend(model):
    source = _sources(1)
    best, best_scores = beam_search(model, source, 8, beam_size=4)
    ids, scores = beam_search(model, source, 8, beam_size=4, num_hypotheses=4)
    np.testing.assert_array_equal(ids.numpy()[:, 0, : best.shape[1]], best.numpy())
    np.testing.assert_allclose(scores.numpy()[:, 0], best_scores.numpy(), atol=1e-6)
    assert np.all(np.diff(scores.numpy(), axis=1) <= 1e-6)
    # Distinct hypotheses per source.
    for row in ids.numpy():
        assert len({tuple(_strip(h)) for h in row}) == 4


def test_make_decoder_n_best_traces_once_and_rejects_more_than_the_beam(model):
    options = DecodingOptions(beam_size=3, n_best=2, max_output_length=8)
    decoder = make_decoder(model, options, with_scores=True)
    for batch, length in ((2, 5), (3, 9)):
        source = _sources(2, batch=batch, length=length)
        ids, scores = decoder(tf.constant(source))
        expected, expected_scores = beam_search(model, source, 8, beam_size=3, num_hypotheses=2)
        np.testing.assert_array_equal(ids.numpy(), expected.numpy())
        np.testing.assert_allclose(scores.numpy(), expected_scores.numpy(), atol=1e-6)
    assert decoder.experimental_get_tracing_count() == 1
    # The ids-only decoder is unchanged.
    assert make_decoder(model, options)(tf.constant(source)).shape.rank == 2
    with pytest.raises(ValueError, match="--n-best 3"):
        make_decoder(model, options.replace(beam_size=2, n_best=3), with_scores=True)


def test_greedy_scores_are_summed_log_probs():
    model = trap()
    ids, scores = greedy_search(model, np.array([[7]], "int32"), 6, with_scores=True)
    np.testing.assert_array_equal(ids.numpy(), [[A, EOS_ID]])
    np.testing.assert_allclose(scores.numpy(), [model.log_prob([A, EOS_ID])], atol=1e-6)
    options = DecodingOptions(beam_size=1, max_output_length=6)
    ids, scores = make_decoder(model, options, with_scores=True)(tf.constant([[7]]))
    assert ids.shape[:2] == (1, 1)
    np.testing.assert_allclose(scores.numpy(), [[model.log_prob([A, EOS_ID])]], atol=1e-6)


# --- scoring -----------------------------------------------------------------------------------


def test_scores_on_a_markov_model_are_the_hand_computed_log_probs():
    model = trap()
    targets = [[B], [A], [A, A, B], [], [C, A]]
    result = score_ids(model, [[7]] * len(targets), targets, batch_size=2)
    expected = [model.log_prob([*t, EOS_ID]) for t in targets]
    np.testing.assert_allclose(result.scores, expected, atol=1e-5)
    assert result.tokens == [2, 2, 4, 1, 3]
    assert result.total_tokens == 12
    np.testing.assert_allclose(result.mean_nll, -sum(expected) / 12, rtol=1e-5)
    np.testing.assert_allclose(result.perplexity, np.exp(-sum(expected) / 12), rtol=1e-5)


def test_scores_on_a_copy_model_count_right_and_wrong_tokens():
    model = CopyModel()
    sources = [[5, 6, 7], [5, 6, 7], [9], [9]]
    targets = [[5, 6, 7], [5, 9, 7], [9], [9, 9]]
    result = score_ids(model, sources, targets, batch_size=3)
    # [5 9 7] EOS: one wrong token; [9 9] EOS: the second 9 stands where EOS is predicted (and
    # EOS is predicted again after it, rightly).
    expected = [4 * RIGHT, 3 * RIGHT + WRONG, 2 * RIGHT, 2 * RIGHT + WRONG]
    np.testing.assert_allclose(result.scores, expected, atol=1e-5)


def test_scoring_the_beams_hypotheses_gives_the_beams_scores(model):
    """With length_penalty 0 the beam's score is the summed log-prob that scoring computes."""
    source = _sources(4)
    ids, scores = beam_search(model, source, 8, beam_size=4, length_penalty=0.0, num_hypotheses=4)
    sources, targets, expected = [], [], []
    for row, (hypotheses, row_scores) in enumerate(zip(ids.numpy(), scores.numpy(), strict=True)):
        for hypothesis, score in zip(hypotheses, row_scores, strict=True):
            if EOS_ID in hypothesis:  # finished: scoring appends the EOS the beam produced
                sources.append([t for t in source[row] if t != PAD_ID])
                targets.append(_strip(hypothesis))
                expected.append(score)
    assert len(expected) >= 12  # most hypotheses finish: the comparison covers many
    result = score_ids(model, sources, targets, batch_size=5)
    np.testing.assert_allclose(result.scores, expected, atol=1e-4)


def test_score_texts_checks_pairs_and_target_lengths(model):
    tokenizer = WordTokenizer([*SPECIAL_TOKENS, *(f"w{i}" for i in range(VOCAB - 4))])
    with pytest.raises(UserError, match="2 sources but 1 targets"):
        score_texts(model, tokenizer, tokenizer, ["w1", "w2"], ["w3"], max_input_length=8)
    too_long = " ".join(["w1"] * model.max_length)
    with pytest.raises(UserError, match="target line 2 has"):
        score_texts(model, tokenizer, tokenizer, ["w1", "w2"], ["w3", too_long], max_input_length=8)
    result = score_texts(model, tokenizer, tokenizer, ["w1 w2"], ["w3 w4"], max_input_length=8)
    np.testing.assert_allclose(
        result.scores, score_ids(model, [[5, 6]], [[7, 8]]).scores, atol=1e-6
    )


# --- the export's outputs ----------------------------------------------------------------------


def test_translation_module_returns_scores_nbest_and_truncation(model):
    tokenizer = WordTokenizer([*SPECIAL_TOKENS, *(f"w{i}" for i in range(VOCAB - 4))])
    texts = ["w1 w2 w3", "w5", "w1 w2 w3 w4 w5 w6 w7", "w1 w2 w3 w4 w5 w6"]
    options = DecodingOptions(
        max_input_length=7, max_output_length=8, beam_size=3, length_penalty=0.6, n_best=2
    )
    module = build_translation_module(model, tokenizer, tokenizer, options, nbest_outputs=True)
    outputs = {k: v.numpy() for k, v in module.serve(tf.constant(texts)).items()}
    assert outputs["truncated"].tolist() == [False, False, True, False]
    source = np.zeros((4, 6), "int32")
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text)[:6]
        source[row, : len(ids)] = ids
    ids, scores = beam_search(model, source, 8, beam_size=3, length_penalty=0.6, num_hypotheses=2)
    np.testing.assert_allclose(outputs["all_scores"], scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(outputs["scores"], scores.numpy()[:, 0], atol=1e-4)
    expected = [[tokenizer.decode(h) for h in row] for row in ids.numpy()]
    assert [[t.decode() for t in row] for row in outputs["translations"]] == expected
    assert [t.decode() for t in outputs["translation"]] == [row[0] for row in expected]
    # Without n_best: the same translation and scores, no n-best outputs.
    plain_module = build_translation_module(model, tokenizer, tokenizer, options.replace(n_best=1))
    plain = plain_module.serve(tf.constant(texts))
    assert set(plain) == {"translation", "scores", "truncated"}
    np.testing.assert_array_equal(plain["translation"].numpy(), outputs["translation"])
    assert plain["translation"].shape == (4,)
    assert module.serve(tf.constant([], tf.string))["translations"].shape == (0, 2)


def test_tokens_are_the_vocabulary_entries_up_to_eos():
    tokenizer = WordTokenizer([*SPECIAL_TOKENS, "w0", "w1"])
    assert tokenizer.tokens([4, BOS_ID, 5, EOS_ID, 4]) == ["w0", "w1"]
    assert tokenizer.tokens([99]) == [SPECIAL_TOKENS[1]]  # out of the vocabulary: UNK
    assert tokenizer.id_to_token(5) == "w1"
