"""encode_pairs and make_translation_dataset: format, bucketing, determinism, static shapes."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf

from tests.data.batch_contents import examples, unpad
from transformer_tf.data.parallel import ParallelCorpus
from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, PAD_ID
from transformer_tf.data.tokenizers import WordTokenizer
from transformer_tf.data.toy import toy_splits
from transformer_tf.data.translation import (
    default_bucket_boundaries,
    encode_pairs,
    make_translation_dataset,
    padding_fraction,
)
from transformer_tf.errors import UserError


@pytest.fixture(scope="module")
def mixed_lengths():
    """600 distinct examples with lengths from 1 to 60, target length close to source length
    (as in real parallel data). The first two ids of each source encode its index."""
    rng = np.random.default_rng(0)
    sources, targets = [], []
    for i in range(600):
        length = int(rng.integers(2, 60))
        sources.append([4 + i // 100, 4 + i % 100, *rng.integers(4, 200, length - 2).tolist()])
        target_length = max(1, length + int(rng.integers(-3, 4)))
        targets.append(rng.integers(4, 200, target_length).tolist())
    return sources, targets


def _batches(dataset):
    return list(dataset.as_numpy_iterator())


def test_encode_pairs_drops_or_truncates_long_pairs():
    tokenizer = WordTokenizer.build(["a b c d e f"])
    pairs = [("a b", "c d"), ("a b c d e", "c"), ("a", "b c d e f"), ("", "a")]
    sources, targets, dropped = encode_pairs(pairs, tokenizer, tokenizer, max_length=5)
    assert len(sources) == len(targets) == 1 and dropped == 3  # 2 too long, 1 empty source
    assert tokenizer.decode(sources[0]) == "a b" and tokenizer.decode(targets[0]) == "c d"

    sources, targets, truncated = encode_pairs(
        pairs, tokenizer, tokenizer, max_length=5, truncate=True
    )
    assert truncated == 2 and len(sources) == len(pairs)
    assert [len(s) for s in sources] == [2, 4, 1, 0]
    assert [len(t) for t in targets] == [2, 1, 4, 1]

    corpus = ParallelCorpus(sources=["a b"], targets=["c d"])
    assert encode_pairs(corpus, tokenizer, tokenizer, max_length=5)[:2] == ([[4, 5]], [[6, 7]])


def test_batches_have_the_model_format(mixed_lengths):
    sources, targets = mixed_lengths
    dataset = make_translation_dataset(sources, targets, batch_size=16, shuffle=True, seed=0)
    features_spec, labels_spec = dataset.element_spec
    assert set(features_spec) == {"source", "target"}
    for spec in (features_spec["source"], features_spec["target"], labels_spec):
        assert spec.dtype == tf.int32 and spec.shape.rank == 2
    for features, labels in _batches(dataset):
        source, target = features["source"], features["target"]
        assert source.shape[0] == target.shape[0] == labels.shape[0] <= 16
        assert target.shape == labels.shape
        assert (target[:, 0] == BOS_ID).all()
        # Teacher forcing: the label at t is the decoder input at t + 1 (where the decoder input
        # has padding, the label is EOS or padding) ...
        shifted = np.where(labels[:, :-1] == EOS_ID, PAD_ID, labels[:, :-1])
        np.testing.assert_array_equal(shifted, target[:, 1:])
        # ... and each label row is y + [EOS] followed by padding.
        for target_row, label_row in zip(target, labels, strict=True):
            y = unpad(target_row)[1:]
            assert unpad(label_row) == (*y, EOS_ID)


def test_bucketing_keeps_padding_small(mixed_lengths):
    sources, targets = mixed_lengths
    kwargs = dict(batch_size=16, shuffle=True, seed=0)
    unbucketed = padding_fraction(
        make_translation_dataset(sources, targets, bucket_boundaries=[], **kwargs)
    )
    bucketed = padding_fraction(make_translation_dataset(sources, targets, **kwargs))
    assert unbucketed > 0.35
    assert bucketed < 0.15
    assert bucketed < unbucketed / 3


@pytest.mark.parametrize("width", [1, 2, 8])
def test_bucket_width_bounds_the_lengths_within_a_batch(mixed_lengths, width):
    sources, targets = mixed_lengths
    dataset = make_translation_dataset(
        sources, targets, batch_size=8, shuffle=True, seed=0, bucket_width=width
    )
    spreads = []
    for features, labels in _batches(dataset):
        # An example's length is max(len(x), len(y) + 1); buckets are (k*width, (k+1)*width].
        lengths = [
            max(len(unpad(x)), len(unpad(y)))
            for x, y in zip(features["source"], labels, strict=True)
        ]
        assert len({(n - 1) // width for n in lengths}) == 1, lengths
        spreads.append(max(lengths) - min(lengths))
    assert max(spreads) == width - 1  # the buckets are full width, no narrower
    assert sum(examples(dataset).values()) == len(sources)


def test_every_example_appears_exactly_once_per_epoch(mixed_lengths):
    sources, targets = mixed_lengths
    expected = collections.Counter(
        (tuple(s), tuple(t)) for s, t in zip(sources, targets, strict=True)
    )
    dataset = make_translation_dataset(sources, targets, batch_size=16, shuffle=True, seed=3)
    assert examples(dataset) == expected
    assert examples(dataset) == expected  # a second pass (reshuffled) too


def test_shuffling_is_deterministic_per_seed_and_epoch(mixed_lengths):
    sources, targets = mixed_lengths

    def first_ids(seed, epoch):
        dataset = make_translation_dataset(
            sources, targets, batch_size=16, shuffle=True, seed=seed, epoch=epoch
        )
        # The first two source ids identify an example.
        return [tuple(map(tuple, f["source"][:, :2])) for f, _ in _batches(dataset)]

    epoch0 = first_ids(seed=1, epoch=0)
    assert first_ids(seed=1, epoch=0) == epoch0
    assert first_ids(seed=1, epoch=1) != epoch0
    assert first_ids(seed=2, epoch=0) != epoch0

    ordered = make_translation_dataset(sources, targets, batch_size=16, shuffle=False, seed=0)
    assert [b[1].tolist() for b in _batches(ordered)] == [b[1].tolist() for b in _batches(ordered)]


def test_drop_remainder_and_pad_to_multiple_give_static_multiples(mixed_lengths):
    sources, targets = mixed_lengths
    dataset = make_translation_dataset(
        sources,
        targets,
        batch_size=16,
        shuffle=True,
        seed=0,
        drop_remainder=True,
        pad_to_multiple=8,
    )
    features_spec, labels_spec = dataset.element_spec
    assert features_spec["source"].shape[0] == labels_spec.shape[0] == 16
    shapes = set()
    for features, labels in _batches(dataset):
        assert features["source"].shape == features["target"].shape == labels.shape
        assert labels.shape[0] == 16 and labels.shape[1] % 8 == 0
        shapes.add(labels.shape)
    # One shape per bucket: the boundaries 8, 16, ..., 64.
    assert len(shapes) <= len(default_bucket_boundaries(61)) == 8


def test_pad_to_multiple_with_custom_boundaries_and_overflow(mixed_lengths):
    sources, targets = mixed_lengths
    dataset = make_translation_dataset(
        sources,
        targets,
        batch_size=32,
        shuffle=False,
        seed=0,
        bucket_boundaries=[10, 20],
        pad_to_multiple=16,
    )
    lengths = {labels.shape[1] for _, labels in _batches(dataset)}
    assert lengths <= {16, 32, 48, 64} and 16 in lengths and 32 in lengths
    assert sum(examples(dataset).values()) == len(sources)


@pytest.mark.parametrize("pad_to_multiple", [None, 8])
def test_token_budget_batches(mixed_lengths, pad_to_multiple):
    sources, targets = mixed_lengths
    budget = 256
    dataset = make_translation_dataset(
        sources,
        targets,
        batch_size=budget,
        batch_type="tokens",
        shuffle=True,
        seed=0,
        bucket_width=8,
        pad_to_multiple=pad_to_multiple,
    )
    sizes_by_length = collections.defaultdict(set)
    for features, labels in _batches(dataset):
        rows, length = labels.shape
        assert features["source"].shape[0] == rows
        # The budget counts the bucket's padded length, so the batch itself never exceeds it.
        assert rows * max(length, features["source"].shape[1]) <= budget
        sizes_by_length[length].add(rows)
    # Short sentences come in large batches, long ones in small batches.
    shortest, longest = min(sizes_by_length), max(sizes_by_length)
    assert max(sizes_by_length[shortest]) >= 4 * max(sizes_by_length[longest])
    assert max(sizes_by_length[shortest]) == budget // 8  # the first bucket: lengths <= 8
    expected = collections.Counter(
        (tuple(s), tuple(t)) for s, t in zip(sources, targets, strict=True)
    )
    assert examples(dataset) == expected


def test_token_budget_smaller_than_a_sentence_gives_single_examples(mixed_lengths):
    sources, targets = mixed_lengths
    dataset = make_translation_dataset(
        sources[:50], targets[:50], batch_size=4, batch_type="tokens", shuffle=False, seed=0
    )
    assert {labels.shape[0] for _, labels in _batches(dataset)} == {1}
    assert sum(examples(dataset).values()) == 50


def test_unknown_batch_type_is_a_user_error(mixed_lengths):
    sources, targets = mixed_lengths
    with pytest.raises(UserError, match="batch_type must be one of examples, tokens"):
        make_translation_dataset(
            sources, targets, batch_size=8, batch_type="sentences", shuffle=False, seed=0
        )


def test_toy_corpus_end_to_end():
    splits = toy_splits(300, 0, 0, seed=0)
    pairs = splits["train"]
    source_tok = WordTokenizer.build(s for s, _ in pairs)
    target_tok = WordTokenizer.build(t for _, t in pairs)
    sources, targets, dropped = encode_pairs(pairs, source_tok, target_tok, max_length=32)
    assert dropped == 0
    dataset = make_translation_dataset(sources, targets, batch_size=32, shuffle=True, seed=0)
    decoded = {
        (source_tok.decode(f["source"][i]), target_tok.decode(f["target"][i, 1:]))
        for f, _ in _batches(dataset)
        for i in range(len(f["source"]))
    }
    assert decoded == set(pairs)
    assert padding_fraction(dataset) < 0.25
    assert padding_fraction(dataset.take(0)) == 0.0
