"""transformer_tf.data.bucketing: boundaries, bucket of a length, nominal lengths, batching."""

from __future__ import annotations

import pytest
import tensorflow as tf

from transformer_tf.data.bucketing import (
    batch_by_length,
    bucket_batch_sizes,
    bucket_boundaries,
    bucket_index,
    bucket_lengths,
    check_boundaries,
)
from transformer_tf.errors import UserError


def test_bucket_boundaries_known_answers():
    assert bucket_boundaries(61) == [8, 16, 24, 32, 40, 48, 56, 61]
    assert bucket_boundaries(64) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert bucket_boundaries(20, step=8) == [8, 16, 20]
    assert bucket_boundaries(5) == [5]
    assert bucket_boundaries(8) == [8]
    assert bucket_boundaries(9) == [8, 9]
    # 8 wide while 25% is less than 8 tokens, then geometric (round half to even: 62.5 -> 62).
    assert bucket_boundaries(100, step=8, growth=1.25) == [8, 16, 24, 32, 40, 50, 62, 78, 98, 100]
    assert bucket_boundaries(7, step=2, growth=3.0) == [2, 6, 7]
    # A first boundary of its own, then at least 1 wider and 25% apart (the review buckets).
    assert bucket_boundaries(24, step=1, growth=1.25, first=8) == [8, 10, 12, 15, 19, 24]
    with pytest.raises(UserError, match="first >= 1"):
        bucket_boundaries(24, first=0)
    with pytest.raises(UserError, match="max_length, step and first >= 1"):
        bucket_boundaries(0)
    with pytest.raises(UserError, match="growth >= 1"):
        bucket_boundaries(10, growth=0.5)


@pytest.mark.parametrize(
    ("length", "bucket"),
    [(1, 0), (8, 0), (9, 1), (16, 1), (17, 2), (20, 2), (21, 3), (500, 3)],
)
def test_bucket_index_inclusive_upper_bounds(length: int, bucket: int):
    boundaries = [8, 16, 20]
    assert int(bucket_index(tf.constant(length), boundaries)) == bucket
    # The same bucket as a direct reading of the convention b[i-1] < n <= b[i].
    lower = [0, *boundaries]
    upper = [*boundaries, float("inf")]
    assert lower[bucket] < length <= upper[bucket]


def test_bucket_index_without_boundaries_is_one_bucket():
    assert int(bucket_index(tf.constant(7), [])) == 0


def test_bucket_lengths_and_batch_sizes_known_answers():
    assert bucket_lengths([8, 16], 30) == [8, 16, 30]
    assert bucket_lengths([8, 16], 10) == [8, 16, 17]  # the overflow holds at least b[-1] + 1
    assert bucket_lengths([10, 20], 30, pad_to_multiple=8) == [16, 24, 32]
    assert bucket_lengths([], 5) == [5]
    assert bucket_batch_sizes([8, 16, 30], 64, "tokens") == [8, 4, 2]
    assert bucket_batch_sizes([8, 16, 100], 64, "tokens") == [8, 4, 1]  # never 0
    assert bucket_batch_sizes([8, 16, 30], 5, "examples") == [5, 5, 5]
    with pytest.raises(UserError, match="batch_type"):
        bucket_batch_sizes([8], 5, "sentences")
    with pytest.raises(UserError, match="batch_size must be >= 1"):
        bucket_batch_sizes([8], 0, "examples")


def test_check_boundaries():
    assert check_boundaries((4, 9.0)) == [4, 9]
    for bad in ([0, 4], [4, 4], [9, 4]):
        with pytest.raises(UserError, match="positive and increasing"):
            check_boundaries(bad)


def test_batch_by_length_groups_and_pads_known_batches():
    """Lengths 1..10 with boundaries [3, 6]: buckets {1,2,3}, {4,5,6}, {7,...,10}."""
    rows = [[length] * length for length in (1, 5, 2, 7, 3, 10, 4, 8, 6, 9)]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(rows), output_signature=tf.TensorSpec([None], tf.int32)
    )

    def batched(drop_remainder):
        return batch_by_length(
            dataset,
            lambda ids: tf.shape(ids)[0],
            [3, 6],
            [3, 2, 2],
            padded_shapes=[None],
            padding_values=0,
            drop_remainder=drop_remainder,
        )

    got = [
        [int(row[0]) for row in batch] + [batch.shape[1]]
        for batch in batched(drop_remainder=False).as_numpy_iterator()
    ]
    # Full batches as they fill (bucket 0 once 1, 2, 3 are in, bucket 2 once 7 and 10 are, bucket 1
    # once 5 and 4 are, ...), then the incomplete ones; padded to the batch's longest row.
    assert got == [[1, 2, 3, 3], [7, 10, 10], [5, 4, 5], [8, 9, 9], [6, 6]]
    dropped = batched(drop_remainder=True)
    assert [b.shape for b in dropped.as_numpy_iterator()] == [(3, 3), (2, 10), (2, 5), (2, 9)]
    with pytest.raises(ValueError, match="need 3 batch sizes"):
        batch_by_length(dataset, len, [3, 6], [3], padded_shapes=[None], padding_values=0)
