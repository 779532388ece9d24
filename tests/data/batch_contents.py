"""What a batched translation dataset holds, read back from its padded batches (for the tests
of the in-memory and the streamed pipelines)."""

from __future__ import annotations

import collections

import numpy as np

from transformer_tf.data.special_tokens import PAD_ID


def unpad(row: np.ndarray) -> tuple[int, ...]:
    """The ids of a padded row, without its PAD ids."""
    return tuple(int(i) for i in row[row != PAD_ID])


def examples(dataset) -> collections.Counter:
    """Each example as (source, target without BOS) recovered from the padded batches."""
    found = collections.Counter()
    for features, _ in dataset.as_numpy_iterator():
        for source, target in zip(features["source"], features["target"], strict=True):
            found[(unpad(source), unpad(target)[1:])] += 1
    return found
