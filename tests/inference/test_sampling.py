"""Sampling (``decoding.sampling_*``): top-k, top-p, temperature and seeds, on a hand-made model
whose next-token distribution is known, and on a random tiny ``Seq2SeqTransformer``."""

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures import random_decoder, random_sources
from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, PAD_ID
from transformer_tf.inference import DecodingOptions, greedy_search, make_decoder
from transformer_tf.inference.search import sample_search

VOCAB = 10
# From BOS: token 4 (0.5), 5 (0.3), 6 (0.15), 7 (0.05); every token then ends with EOS.
FIRST = {4: 0.5, 5: 0.3, 6: 0.15, 7: 0.05}
SAMPLES = 4000


class KnownModel:
    """A Markov chain over the decoding interface: ``table[token]`` is the next-token
    distribution (PAD gets probability 0 from BOS, as the search masks it anyway)."""

    def __init__(self, table):
        self.log_probs = np.log(np.maximum(table, 1e-30))

    def encode(self, source_ids, training=False):
        return tf.one_hot(source_ids, VOCAB), tf.not_equal(source_ids, PAD_ID)

    def init_cache(self, encoder_output, max_length):
        return [{"self": tf.zeros([tf.shape(encoder_output)[0], max_length], tf.int32)}]

    def decode_step(self, token_ids, cache, index, source_mask):
        return tf.gather(tf.constant(self.log_probs, tf.float32), token_ids[:, 0]), cache

    def decode(self, target_ids, encoder_output, source_mask, training=False):
        return tf.gather(tf.constant(self.log_probs, tf.float32), target_ids)


def _first_token_model():
    table = np.full((VOCAB, VOCAB), 0.0)
    table[:, EOS_ID] = 1.0
    table[BOS_ID] = 0.0
    for token, p in FIRST.items():
        table[BOS_ID, token] = p
    return KnownModel(table)


def _flat_model():
    """Every token but PAD/BOS equally likely at every step, EOS included."""
    table = np.full((VOCAB, VOCAB), 1.0)
    table[:, [PAD_ID, BOS_ID]] = 0.0
    return KnownModel(table / table.sum(axis=1, keepdims=True))


SOURCE = np.full((SAMPLES, 2), 8, "int32")  # identical rows: each draws its own sample


def _first_tokens(**settings):
    ids, scores = sample_search(_first_token_model(), SOURCE, 4, **settings)
    ids = ids.numpy()
    assert np.all(ids[:, 1] == EOS_ID)  # then EOS, as the model says
    return ids[:, 0], scores.numpy()


def test_full_distribution_frequencies_match_the_model():
    tokens, scores = _first_tokens(topk=0, seed=1)
    counts = np.bincount(tokens, minlength=VOCAB) / SAMPLES
    assert set(np.unique(tokens)) == set(FIRST)
    # Four standard deviations of a frequency over 4000 draws is at most 0.032.
    for token, p in FIRST.items():
        assert abs(counts[token] - p) < 0.032, (token, counts[token], p)
    # The score is the model's log-prob of the sample (then EOS, probability 1).
    np.testing.assert_allclose(scores, np.log([FIRST[t] for t in tokens]), atol=1e-5)


def test_topk_never_leaves_the_k_most_probable_tokens():
    tokens, _ = _first_tokens(topk=2, seed=2)
    assert set(np.unique(tokens)) == {4, 5}
    # Renormalized over the two: 0.5 / 0.8 and 0.3 / 0.8.
    assert abs(np.mean(tokens == 4) - 0.625) < 0.031


def test_topp_keeps_the_nucleus():
    # Mass before 4: 0, before 5: 0.5, before 6: 0.8, before 7: 0.95.
    assert set(np.unique(_first_tokens(topk=0, topp=0.4, seed=3)[0])) == {4}
    assert set(np.unique(_first_tokens(topk=0, topp=0.6, seed=3)[0])) == {4, 5}
    assert set(np.unique(_first_tokens(topk=0, topp=0.9, seed=3)[0])) == {4, 5, 6}
    # top-k and top-p together: the smaller set.
    assert set(np.unique(_first_tokens(topk=2, topp=0.9, seed=3)[0])) == {4, 5}


def test_temperature_sharpens_and_flattens():
    tokens, _ = _first_tokens(topk=0, temperature=1e-3, seed=4)
    assert np.all(tokens == 4)  # near 0: greedy
    # Temperature 2: probabilities proportional to sqrt(p).
    tokens, _ = _first_tokens(topk=0, temperature=2.0, seed=4)
    weights = np.sqrt(list(FIRST.values()))
    for token, p in zip(FIRST, weights / weights.sum(), strict=True):
        assert abs(np.mean(tokens == token) - p) < 0.032, (token, p)


def test_same_seed_same_output_and_another_seed_another():
    model = _flat_model()
    source = np.full((8, 3), 8, "int32")
    first, _ = sample_search(model, source, 10, topk=0, seed=7)
    again, _ = sample_search(model, source, 10, topk=0, seed=7)
    other, _ = sample_search(model, source, 10, topk=0, seed=8)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())
    # Rows of one batch differ too: they do not share their random numbers.
    assert len({tuple(row) for row in first.numpy()}) > 1


@pytest.fixture(scope="module")
def model():
    return random_decoder(3, eos_bias=1.0, num_layers=1)


def _sources(seed, batch=6, length=7):
    return random_sources(seed, 24, batch, length)


def test_topk_one_is_greedy_on_the_real_model(model):
    source = _sources(0)
    greedy, greedy_scores = greedy_search(model, source, 8, with_scores=True)
    # topk=1 with topp < 1 goes through the sampling path, which may keep only the argmax.
    sampled, scores = sample_search(model, source, 8, topk=1, topp=0.9, temperature=0.7, seed=5)
    np.testing.assert_array_equal(sampled.numpy(), greedy.numpy())
    np.testing.assert_allclose(scores.numpy(), greedy_scores.numpy(), atol=1e-6)
    # The default settings of make_decoder are greedy.
    np.testing.assert_array_equal(
        make_decoder(model, DecodingOptions(beam_size=1, max_output_length=8))(
            tf.constant(source)
        ).numpy(),
        greedy.numpy(),
    )


def test_cached_and_uncached_sampling_agree(model):
    source = _sources(1)
    cached, _ = sample_search(model, source, 8, topk=0, seed=11)
    uncached, _ = sample_search(model, source, 8, topk=0, seed=11, use_cache=False)
    np.testing.assert_array_equal(cached.numpy(), uncached.numpy())
    greedy = greedy_search(model, source, 8).numpy()
    assert cached.shape != greedy.shape or not np.array_equal(cached.numpy(), greedy)


def test_make_decoder_samples_reproducibly_and_rejects_bad_settings(model):
    source = tf.constant(_sources(2))
    options = DecodingOptions(beam_size=1, max_output_length=8, sampling_topk=0, seed=3)
    decoder = make_decoder(model, options)
    np.testing.assert_array_equal(decoder(source).numpy(), decoder(source).numpy())
    np.testing.assert_array_equal(
        decoder(source).numpy(), sample_search(model, source, 8, topk=0, seed=3)[0].numpy()
    )
    with pytest.raises(ValueError, match="sampling needs beam_size=1"):
        make_decoder(model, options.replace(beam_size=2))
    with pytest.raises(ValueError, match="sampling_temperature"):
        make_decoder(model, options.replace(sampling_temperature=0.0))
    with pytest.raises(ValueError, match="sampling_topp"):
        make_decoder(model, options.replace(sampling_topk=1, sampling_topp=1.5))
    with pytest.raises(ValueError, match="sampling_topk"):
        make_decoder(model, options.replace(sampling_topk=-1))
