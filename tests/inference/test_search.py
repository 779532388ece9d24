"""Greedy and beam search: cached == uncached, batch independence, scores, EOS handling.

Two kinds of models: a random tiny ``Seq2SeqTransformer`` (the real cache and masks) and hand-made
fake models with known outputs (``tests/inference/fake_models.py``: a Markov chain where greedy is
provably suboptimal, and a model that copies its source), which pin down the exact tokens and
scores.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures import random_decoder, random_sources
from tests.inference.fake_models import CopyModel, MarkovModel
from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, PAD_ID
from transformer_tf.inference import DecodingOptions, beam_search, greedy_search, make_decoder
from transformer_tf.inference.search import cache_position_axes, segment_ends

VOCAB = 24
MAX_LENGTH = 8


@pytest.fixture(scope="module")
def model():
    """A random tiny model whose outputs end with EOS at varied lengths (EOS bias raised)."""
    return random_decoder(3, eos_bias=1.5, vocab=VOCAB)


def _sources(seed, batch=6, length=7):
    """Random sources with one unpadded row (the batch is full); see random_sources."""
    return random_sources(seed, VOCAB, batch, length, full_row=True)


def _assert_well_formed(ids, max_length):
    """Rows are tokens (no PAD, no BOS-padding gaps), then optionally EOS, then PAD only."""
    assert ids.dtype == np.int32 and ids.shape[1] <= max_length
    for row in ids:
        eos = np.flatnonzero(row == EOS_ID)
        end = eos[0] + 1 if len(eos) else len(row)
        assert np.all(row[: end - 1] != PAD_ID) and np.all(row[: end - 1] != EOS_ID)
        assert np.all(row[end:] == PAD_ID)
    # Trimmed: the longest row fills the output.
    assert np.any(ids[:, -1] != PAD_ID)


def _sequence_scores(model, source, ids, length_penalty):
    """The model's own summed log-prob of ``ids`` (up to EOS), teacher-forced, over the GNMT
    length penalty. ``(batch, source_length)``, ``(batch, length)`` -> ``(batch,)``."""
    encoded, source_mask = model.encode(source)
    target_in = np.concatenate([np.full((len(ids), 1), BOS_ID, "int32"), ids[:, :-1]], axis=1)
    log_probs = tf.nn.log_softmax(model.decode(target_in, encoded, source_mask)).numpy()
    token_log_probs = np.take_along_axis(log_probs, ids[..., None], axis=-1)[..., 0]
    valid = ids != PAD_ID
    lengths = valid.sum(axis=1)
    return (token_log_probs * valid).sum(axis=1) / ((5 + lengths) / 6) ** length_penalty


# --- the real model ---------------------------------------------------------------------------


def test_cached_and_uncached_greedy_agree(model):
    source = _sources(0)
    cached = greedy_search(model, source, MAX_LENGTH).numpy()
    uncached = greedy_search(model, source, MAX_LENGTH, use_cache=False).numpy()
    np.testing.assert_array_equal(cached, uncached)
    _assert_well_formed(cached, MAX_LENGTH)
    # The case is not trivial: some rows end with EOS, and outputs differ between rows.
    assert np.any(cached == EOS_ID) and len({tuple(r) for r in cached}) > 2


def test_cached_and_uncached_beam_agree(model):
    source = _sources(1)
    ids, scores = beam_search(model, source, MAX_LENGTH)
    ids_uncached, scores_uncached = beam_search(model, source, MAX_LENGTH, use_cache=False)
    np.testing.assert_array_equal(ids.numpy(), ids_uncached.numpy())
    np.testing.assert_allclose(scores.numpy(), scores_uncached.numpy(), atol=1e-4)
    _assert_well_formed(ids.numpy(), MAX_LENGTH)
    assert len({tuple(r) for r in ids.numpy()}) > 2


def test_beam_size_one_is_greedy(model):
    source = _sources(2)
    greedy = greedy_search(model, source, MAX_LENGTH).numpy()
    ids, _ = beam_search(model, source, MAX_LENGTH, beam_size=1, length_penalty=0.0)
    np.testing.assert_array_equal(ids.numpy(), greedy)


def test_padding_does_not_change_results(model):
    """Each row of a padded batch decodes as that source alone, unpadded."""
    source = _sources(3, batch=4)
    greedy = greedy_search(model, source, MAX_LENGTH).numpy()
    beam_ids, beam_scores = beam_search(model, source, MAX_LENGTH)
    beam_ids, beam_scores = beam_ids.numpy(), beam_scores.numpy()
    for row in range(len(source)):
        alone = source[row : row + 1, : np.count_nonzero(source[row])]
        expected = greedy_search(model, alone, MAX_LENGTH).numpy()[0]
        np.testing.assert_array_equal(greedy[row, : len(expected)], expected)
        assert np.all(greedy[row, len(expected) :] == PAD_ID)
        ids, scores = beam_search(model, alone, MAX_LENGTH)
        ids = ids.numpy()[0]
        np.testing.assert_array_equal(beam_ids[row, : len(ids)], ids)
        assert np.all(beam_ids[row, len(ids) :] == PAD_ID)
        np.testing.assert_allclose(beam_scores[row], scores.numpy()[0], atol=1e-4)


def test_beam_score_is_the_model_log_prob_and_beats_greedy(model):
    for seed in (4, 5, 6):
        source = _sources(seed)
        ids, scores = beam_search(model, source, MAX_LENGTH)
        ids, scores = ids.numpy(), scores.numpy()
        np.testing.assert_allclose(scores, _sequence_scores(model, source, ids, 0.6), atol=1e-4)
        greedy = greedy_search(model, source, MAX_LENGTH).numpy()
        greedy_scores = _sequence_scores(model, source, greedy, 0.6)
        assert np.all(scores >= greedy_scores - 1e-5)
        assert np.any(scores > greedy_scores + 1e-3)  # and sometimes strictly better


def test_make_decoder_traces_once(model):
    greedy = DecodingOptions(beam_size=1, max_output_length=MAX_LENGTH)
    decoder = make_decoder(model, greedy)
    assert make_decoder(model, DecodingOptions(beam_size=1, max_output_length=MAX_LENGTH)) is decoder  # fmt: skip
    for batch, length in ((2, 5), (3, 9)):
        source = _sources(7, batch=batch, length=length)
        np.testing.assert_array_equal(
            decoder(tf.constant(source)).numpy(), greedy_search(model, source, MAX_LENGTH).numpy()
        )
    assert decoder.experimental_get_tracing_count() == 1

    beam_decoder = make_decoder(model, greedy.replace(beam_size=4))
    source = _sources(8)
    np.testing.assert_array_equal(
        beam_decoder(tf.constant(source)).numpy(),
        beam_search(model, source, MAX_LENGTH, beam_size=4)[0].numpy(),
    )


def test_rejects_bad_lengths(model):
    with pytest.raises(ValueError, match="max_length"):
        greedy_search(model, _sources(9), 0)
    with pytest.raises(ValueError, match="max_length"):
        beam_search(model, _sources(9), model.max_length + 1)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, _sources(9), MAX_LENGTH, beam_size=0)


# --- hand-made models with known outputs ------------------------------------------------------


A, B = 4, 5


@pytest.mark.parametrize("use_cache", [True, False])
def test_beam_search_finds_the_better_path_greedy_misses(use_cache):
    # From BOS, A (0.6) beats B (0.4), but A -> EOS has probability 0.35 while B -> EOS has
    # 0.99: greedy returns [A, EOS] (0.21), the best sequence is [B, EOS] (0.396).
    trap = MarkovModel({BOS_ID: {A: 0.6, B: 0.4}, A: {EOS_ID: 0.35, A: 0.33, B: 0.32},
                        B: {EOS_ID: 0.99}})  # fmt: skip
    source = np.array([[6, 7]], "int32")
    greedy = greedy_search(trap, source, 6, use_cache=use_cache).numpy()
    np.testing.assert_array_equal(greedy, [[A, EOS_ID]])
    assert trap.calls.numpy() == 2  # stopped at EOS, not after 6 steps

    for alpha in (0.0, 0.6):
        trap.calls.assign(0)
        ids, scores = beam_search(
            trap, source, 6, beam_size=2, length_penalty=alpha, use_cache=use_cache
        )
        np.testing.assert_array_equal(ids.numpy(), [[B, EOS_ID]])
        expected = trap.log_prob([B, EOS_ID]) / (7 / 6) ** alpha
        np.testing.assert_allclose(scores.numpy(), [expected], atol=1e-5)
        if alpha == 0.0:
            # After step 2 the best alive hypothesis, A A (0.198), cannot beat the worst
            # finished one, A EOS (0.21): early exit.
            assert trap.calls.numpy() == 2
    # One beam keeps only the locally best candidate: greedy's answer.
    ids, _ = beam_search(trap, source, 6, beam_size=1, length_penalty=0.0, use_cache=use_cache)
    np.testing.assert_array_equal(ids.numpy(), [[A, EOS_ID]])


@pytest.mark.parametrize("use_cache", [True, False])
def test_beam_search_does_not_stop_at_the_first_finished_hypothesis(use_cache):
    # [EOS] (0.3) finishes at step 1, but A B EOS (0.7 * 0.9 * 0.9) is better.
    model = MarkovModel({BOS_ID: {EOS_ID: 0.3, A: 0.7}, A: {B: 0.9}, B: {EOS_ID: 0.9}})
    source = np.array([[6, 7, 8]], "int32")
    ids, scores = beam_search(
        model, source, 6, beam_size=2, length_penalty=0.0, use_cache=use_cache
    )
    np.testing.assert_array_equal(ids.numpy(), [[A, B, EOS_ID]])
    np.testing.assert_allclose(scores.numpy(), [model.log_prob([A, B, EOS_ID])], atol=1e-5)
    # Two finished hypotheses after step 3, and no alive one can beat them: early exit.
    assert model.calls.numpy() == 3


@pytest.mark.parametrize("use_cache", [True, False])
def test_length_penalty_bounds_the_early_exit(use_cache):
    # [EOS] (0.55) finishes at step 1, before A B EOS (0.45 * 0.99 * 0.99), which scores better
    # under a strong length penalty: log(0.441) / (8/6)^2 > log(0.55) / 1. The alive A (0.45)
    # must not be dropped because log(0.45) < log(0.55): divided by the penalty at max_length
    # it may still win.
    model = MarkovModel({BOS_ID: {EOS_ID: 0.55, A: 0.45}, A: {B: 0.99}, B: {EOS_ID: 0.99}})
    source = np.array([[6]], "int32")
    np.testing.assert_array_equal(greedy_search(model, source, 6, use_cache=use_cache), [[EOS_ID]])
    ids, scores = beam_search(
        model, source, 6, beam_size=1, length_penalty=2.0, use_cache=use_cache
    )
    np.testing.assert_array_equal(ids.numpy(), [[A, B, EOS_ID]])
    expected = model.log_prob([A, B, EOS_ID]) / (8 / 6) ** 2
    np.testing.assert_allclose(scores.numpy(), [expected], atol=1e-5)


@pytest.mark.parametrize("use_cache", [True, False])
def test_rows_stop_at_eos_and_max_length_is_respected(use_cache):
    source = np.array([[5, 6, 7, 8], [9, 4, 0, 0], [7, 0, 0, 0]], "int32")
    copy = CopyModel()
    expected = [[5, 6, 7, 8, EOS_ID], [9, 4, EOS_ID, 0, 0], [7, EOS_ID, 0, 0, 0]]
    np.testing.assert_array_equal(greedy_search(copy, source, 10, use_cache=use_cache), expected)
    assert copy.calls.numpy() == 5  # the loop stops when the last row has produced EOS
    ids, scores = beam_search(copy, source, 10, beam_size=3, use_cache=use_cache)
    np.testing.assert_array_equal(ids, expected)
    c = CopyModel.token_log_prob()
    lengths = np.array([5, 3, 2])
    np.testing.assert_allclose(scores, lengths * c / ((5 + lengths) / 6) ** 0.6, atol=1e-5)

    # max_length=3 truncates the first row, which then has no EOS (its best alive hypothesis).
    truncated = [[5, 6, 7], [9, 4, EOS_ID], [7, EOS_ID, 0]]
    np.testing.assert_array_equal(greedy_search(copy, source, 3, use_cache=use_cache), truncated)
    ids, scores = beam_search(copy, source, 3, beam_size=3, use_cache=use_cache)
    np.testing.assert_array_equal(ids, truncated)
    lengths = np.array([3, 3, 2])
    np.testing.assert_allclose(scores, lengths * c / ((5 + lengths) / 6) ** 0.6, atol=1e-5)


class _CrossKeyedCache(keras.Model):
    """The tiny model with its whole decoder cache under one ``"cross"`` key.

    The old beam search skipped every entry keyed ``cross`` when it reordered hypotheses; here
    that key holds per-hypothesis self-attention state, and the model says so through
    ``cache_reorder_flags``. Beam search must follow the flags, not the key's name.
    """

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def encode(self, source, training=None):
        return self.inner.encode(source, training=training)

    def decode(self, target, encoder_output, source_mask, training=None):
        return self.inner.decode(target, encoder_output, source_mask, training=training)

    def init_cache(self, encoder_output, max_length):
        return {"cross": self.inner.init_cache(encoder_output, max_length)}

    def cache_reorder_flags(self, cache):
        return {"cross": self.inner.cache_reorder_flags(cache["cross"])}

    def decode_step(self, token_ids, cache, index, source_mask):
        logits, inner = self.inner.decode_step(token_ids, cache["cross"], index, source_mask)
        return logits, {"cross": inner}


def test_beam_reorders_the_cache_entries_the_model_flags(model):
    wrapped = _CrossKeyedCache(model)
    source = _sources(1)
    ids, scores = beam_search(wrapped, source, MAX_LENGTH)
    expected, expected_scores = beam_search(model, source, MAX_LENGTH, use_cache=False)
    np.testing.assert_array_equal(ids.numpy(), expected.numpy())
    np.testing.assert_allclose(scores.numpy(), expected_scores.numpy(), atol=1e-4)


def test_the_model_flags_self_attention_entries_only(model):
    encoder_output, _ = model.encode(tf.constant(_sources(2)))
    cache = model.init_cache(encoder_output, MAX_LENGTH)
    flags = model.cache_reorder_flags(cache)
    assert tf.nest.flatten(tf.nest.map_structure(lambda f, _: f, flags, cache))  # same nesting
    for block_flags in flags:
        assert set(tf.nest.flatten(block_flags["self"])) == {True}
        assert set(tf.nest.flatten(block_flags["cross"])) == {False}


# --- cached decoding in segments (the cache grows with the steps) ------------------------------


def test_segment_ends_double_from_16_to_the_length():
    assert segment_ends(8) == [8]
    assert segment_ends(16) == [16]
    assert segment_ends(40) == [16, 32, 40]
    assert segment_ends(128) == [16, 32, 64, 128]
    assert segment_ends(300) == [16, 32, 64, 128, 256, 300]


def test_cache_position_axes_of_the_transformer(model):
    encoded, _ = model.encode(_sources(0))
    axes = cache_position_axes(model, encoded, 40)
    layer = {"self": {"key": 2, "value": 2}, "cross": {"key": None, "value": None}}
    assert axes == [layer, layer]


@pytest.fixture(scope="module")
def endless_model():
    """A random tiny model that never picks EOS, so every row decodes the full length and
    crosses several segments."""
    return random_decoder(5, eos_bias=-1e4, vocab=VOCAB, max_length=48)


def test_segmented_cached_decoding_equals_uncached(endless_model):
    length = 40  # segments end at 16, 32, 40
    source = _sources(4)
    cached, cached_scores = greedy_search(endless_model, source, length, with_scores=True)
    uncached, uncached_scores = greedy_search(
        endless_model, source, length, use_cache=False, with_scores=True
    )
    assert cached.shape == (6, length)
    np.testing.assert_array_equal(cached.numpy(), uncached.numpy())
    np.testing.assert_allclose(cached_scores.numpy(), uncached_scores.numpy(), atol=1e-4)
    ids, scores = beam_search(endless_model, source, length, beam_size=3, num_hypotheses=3)
    ids_u, scores_u = beam_search(
        endless_model, source, length, beam_size=3, num_hypotheses=3, use_cache=False
    )
    assert ids.shape == (6, 3, length)
    np.testing.assert_array_equal(ids.numpy(), ids_u.numpy())
    np.testing.assert_allclose(scores.numpy(), scores_u.numpy(), atol=1e-4)
    # And the beam's scores are the model's own log-probabilities of its hypotheses.
    best = ids.numpy()[:, 0]
    np.testing.assert_allclose(
        scores.numpy()[:, 0], _sequence_scores(endless_model, source, best, 0.6), atol=1e-3
    )
