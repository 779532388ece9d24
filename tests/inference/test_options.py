"""``DecodingOptions``: validated once, read from a config, frozen; and ``translate`` with it
decodes exactly as the search functions do."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures import random_decoder, translation_config
from transformer_tf.config import config_from_dict
from transformer_tf.data.special_tokens import EOS_ID, PAD_ID, SPECIAL_TOKENS
from transformer_tf.data.tokenizers import WordTokenizer
from transformer_tf.errors import DecodingOptionsError, UserError
from transformer_tf.inference import DecodingOptions, beam_search, greedy_search
from transformer_tf.inference.search import sample_search
from transformer_tf.inference.translate import Translations, translate

VOCAB = 24
MAX_OUTPUT = 9

# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"beam_size": 0}, "--beam-size must be >= 1, got 0"),
        ({"n_best": 0}, "--n-best must be >= 1, got 0"),
        ({"beam_size": 2, "n_best": 3}, "--n-best 3 must be between 1 and the beam size, 2 "),
        ({"length_penalty": -0.5}, "decoding.length_penalty must be >= 0, got -0.5"),
        ({"max_input_length": 0}, "data.max_length must be >= 1, got 0"),
        ({"max_output_length": 0}, "decoding.max_length must be >= 1, got 0"),
        ({"batch_size": 0}, r"decoding batch size \(training.batch_size\) must be >= 1, got 0"),
        ({"beam_size": 1, "sampling_topk": -1}, "decoding.sampling_topk must be >= 0, got -1"),
        ({"beam_size": 1, "sampling_topp": 0.0}, r"decoding.sampling_topp must be in \(0, 1\]"),
        ({"beam_size": 1, "sampling_topp": 1.5}, r"decoding.sampling_topp must be in \(0, 1\]"),
        ({"sampling_temperature": 0.0}, "decoding.sampling_temperature must be > 0, got 0.0"),
        ({"beam_size": 2, "sampling_topk": 0}, "--beam-size 2: .* sampling needs beam_size=1"),
        ({"beam_size": 4, "sampling_topp": 0.9}, "--beam-size 4: .*sampling_topp=0.9"),
    ],
)
def test_each_rule_is_refused_with_its_message(changes, message):
    with pytest.raises(DecodingOptionsError, match=message) as caught:
        DecodingOptions(**changes)
    # A UserError (the CLI prints it and exits 2) and a ValueError (a bad argument).
    assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)


def test_valid_settings_and_the_sampling_property():
    assert not DecodingOptions().sampling  # the config's defaults: beam search of 4
    assert DecodingOptions(beam_size=1, sampling_topk=0).sampling
    assert DecodingOptions(beam_size=1, sampling_topp=0.5).sampling
    assert not DecodingOptions(beam_size=1, sampling_temperature=0.7).sampling
    assert DecodingOptions(beam_size=5, n_best=5).n_best == 5


def test_check_flags_refuses_flags_below_one_before_any_config():
    DecodingOptions.check_flags(beam_size=None, n_best=None)
    DecodingOptions.check_flags(beam_size=8, n_best=20)  # above the beam: needs the config
    with pytest.raises(DecodingOptionsError, match="--beam-size must be >= 1, got 0"):
        DecodingOptions.check_flags(beam_size=0)
    with pytest.raises(DecodingOptionsError, match="--n-best must be >= 1, got -1"):
        DecodingOptions.check_flags(n_best=-1)


# --- frozen, replace, equality -----------------------------------------------------------------


def test_options_are_frozen_and_replace_validates_again():
    options = DecodingOptions(beam_size=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.beam_size = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.n_best = 2
    assert options.beam_size == 3
    wider = options.replace(n_best=3)
    assert (wider.beam_size, wider.n_best, options.n_best) == (3, 3, 1)
    with pytest.raises(DecodingOptionsError, match="--n-best 4 must be between 1"):
        options.replace(n_best=4)


def test_equal_settings_are_equal_options_whatever_their_number_types():
    plain = DecodingOptions(beam_size=2, length_penalty=1.0, max_output_length=12)
    numpy = DecodingOptions(beam_size=np.int64(2), length_penalty=1, max_output_length=12.0)
    assert plain == numpy and hash(plain) == hash(numpy)
    assert type(numpy.beam_size) is int and type(numpy.length_penalty) is float
    assert type(numpy.max_output_length) is int


# --- from_config -------------------------------------------------------------------------------


def _config(**sections):
    return config_from_dict(translation_config(**sections))


def test_from_config_reads_the_decoding_data_and_training_sections():
    config = _config(
        data={"max_length": 30},
        training={"batch_size": 16},
        decoding={"beam_size": 5, "length_penalty": 1.2, "max_length": 25},
    )
    options = DecodingOptions.from_config(config)
    assert options == DecodingOptions(
        beam_size=5,
        n_best=1,
        length_penalty=1.2,
        max_input_length=30,
        max_output_length=25,
        batch_size=16,
    )
    # A token budget: as many sentences of the maximum length as it holds.
    tokens = _config(data={"max_length": 30}, training={"batch_size": 320, "batch_type": "tokens"})
    assert DecodingOptions.from_config(tokens).batch_size == 320 // 30


def test_from_config_reads_sampling_and_the_flags_override_the_config():
    config = _config(decoding={"beam_size": 1, "sampling_topk": 5, "sampling_topp": 0.8,
                               "sampling_temperature": 0.7, "seed": 9})  # fmt: skip
    options = DecodingOptions.from_config(config)
    assert options.sampling
    assert (options.sampling_topk, options.sampling_topp) == (5, 0.8)
    assert (options.sampling_temperature, options.seed) == (0.7, 9)

    beam = _config(decoding={"beam_size": 4})
    assert DecodingOptions.from_config(beam, beam_size=6, n_best=3).beam_size == 6
    assert DecodingOptions.from_config(beam, beam_size=6, n_best=3).n_best == 3
    assert DecodingOptions.from_config(beam, n_best=4).n_best == 4
    with pytest.raises(DecodingOptionsError, match="--n-best 5 must be between 1 and the beam size, 4"):  # fmt: skip
        DecodingOptions.from_config(beam, n_best=5)
    with pytest.raises(DecodingOptionsError, match="--beam-size must be >= 1, got 0"):
        DecodingOptions.from_config(beam, beam_size=0)
    # The run samples: a beam from the command line is refused.
    with pytest.raises(DecodingOptionsError, match="--beam-size 3: .*sampling_topk=5"):
        DecodingOptions.from_config(config, beam_size=3)


def test_the_options_module_does_not_import_tensorflow():
    """The CLI refuses a bad --n-best with it before TensorFlow starts."""
    code = (
        "TRANSFORMER_TF_DEFER_BUILTINS = True\n"
        "import sys\n"
        "from transformer_tf.inference import DecodingOptions\n"
        "DecodingOptions(beam_size=2)\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


# --- translate with options == the search functions --------------------------------------------


@pytest.fixture(scope="module")
def model():
    """A random tiny model whose outputs end with EOS at varied lengths (EOS bias raised, as in
    test_search.py)."""
    return random_decoder(3, eos_bias=1.5, vocab=VOCAB, max_length=16)


@pytest.fixture(scope="module")
def tokenizer():
    return WordTokenizer([*SPECIAL_TOKENS, *(f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS)))])


# Sorted by length, so that translate's one length-sorted batch is the direct call's batch.
TEXTS = ["w3", "w1 w2", "w4 w9 w2", "w7 w7 w8 w1", "w5 w11 w6 w12 w13", "w2 w4 w6 w8 w10 w12"]


def _direct_batch(tokenizer):
    ids = tokenizer.encode_batch(TEXTS)
    batch = np.full((len(ids), max(map(len, ids))), PAD_ID, "int32")
    for row, row_ids in enumerate(ids):
        batch[row, : len(row_ids)] = row_ids
    return tf.constant(batch)


def _strip(row) -> list[int]:
    out = []
    for token in row.tolist():
        if token == EOS_ID:
            break
        if token != PAD_ID:
            out.append(token)
    return out


def _translate(model, tokenizer, **settings):
    options = DecodingOptions(
        max_input_length=10, max_output_length=MAX_OUTPUT, batch_size=len(TEXTS), **settings
    )
    result = translate(model, tokenizer, tokenizer, TEXTS, options)
    assert isinstance(result, Translations) and len(result) == len(TEXTS)
    assert all(len(hypotheses) == options.n_best for hypotheses in result)
    return result


def _assert_same(result, ids, scores, tokenizer):
    """``ids (batch, N, length)`` and ``scores (batch, N)`` of the direct call."""
    for hypotheses, row_ids, row_scores in zip(result, ids, scores, strict=True):
        assert [h.ids for h in hypotheses] == [_strip(h) for h in row_ids]  # exactly
        assert [h.score for h in hypotheses] == [float(s) for s in row_scores]
        assert [h.text for h in hypotheses] == [tokenizer.decode(_strip(h)) for h in row_ids]
    assert result.texts == [hypotheses[0].text for hypotheses in result]


def test_translate_greedy_equals_greedy_search(model, tokenizer):
    result = _translate(model, tokenizer, beam_size=1)
    ids, scores = greedy_search(model, _direct_batch(tokenizer), MAX_OUTPUT, with_scores=True)
    _assert_same(result, ids.numpy()[:, None], scores.numpy()[:, None], tokenizer)
    assert len(set(result.texts)) >= 3  # varied outputs: the comparison means something


def test_translate_beam_equals_beam_search(model, tokenizer):
    result = _translate(model, tokenizer, beam_size=3, length_penalty=0.6)
    ids, scores = beam_search(model, _direct_batch(tokenizer), MAX_OUTPUT, beam_size=3)
    _assert_same(result, ids.numpy()[:, None], scores.numpy()[:, None], tokenizer)


def test_translate_n_best_equals_beam_search_hypotheses(model, tokenizer):
    result = _translate(model, tokenizer, beam_size=3, n_best=3, length_penalty=0.6)
    ids, scores = beam_search(
        model, _direct_batch(tokenizer), MAX_OUTPUT, beam_size=3, num_hypotheses=3
    )
    _assert_same(result, ids.numpy(), scores.numpy(), tokenizer)
    assert any(len({tuple(h.ids) for h in hypotheses}) == 3 for hypotheses in result)


def test_translate_sampling_equals_sample_search(model, tokenizer):
    result = _translate(model, tokenizer, beam_size=1, sampling_topk=0, seed=4)
    ids, scores = sample_search(model, _direct_batch(tokenizer), MAX_OUTPUT, topk=0, seed=4)
    _assert_same(result, ids.numpy()[:, None], scores.numpy()[:, None], tokenizer)
