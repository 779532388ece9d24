"""Length buckets for ``tf.data`` pipelines: one boundary convention for every task.

Convention: ``boundaries`` is an increasing list of **inclusive upper lengths**. Bucket ``i``
holds the examples whose length ``n`` satisfies ``boundaries[i-1] < n <= boundaries[i]`` (with
``boundaries[-1]`` read as 0 for ``i = 0``); one extra *overflow* bucket, index
``len(boundaries)``, holds every ``n > boundaries[-1]``. So the bucket of a length is the number
of boundaries strictly below it (:func:`bucket_index`).

The *nominal length* of bucket ``i`` is ``boundaries[i]``, the longest example it can hold, and
for the overflow bucket the longest example of the data (:func:`bucket_lengths`). It is what a
token budget divides by (``batch_type="tokens"``: ``max(1, batch_size // nominal)`` examples per
batch, :func:`bucket_batch_sizes`) and what static-shape padding pads to. Without static padding
each batch is padded to its own longest example, which is at most the nominal length.

Example: ``bucket_boundaries(20, step=8)`` is ``[8, 16, 20]``; lengths 1-8 go to bucket 0,
9-16 to bucket 1, 17-20 to bucket 2 and 21 or more to the overflow bucket 3.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import tensorflow as tf

from transformer_tf.errors import UserError

DEFAULT_BUCKET_STEP = 8
# What a pipeline's `batch_size` counts (the config's `training.batch_type`).
BATCH_TYPES = ("examples", "tokens")


def bucket_boundaries(
    max_length: int,
    step: int = DEFAULT_BUCKET_STEP,
    growth: float = 1.0,
    first: int | None = None,
):
    """Inclusive upper bucket lengths from ``first`` up to ``max_length`` (module convention).

    The first boundary is ``first`` (``step`` by default); each next one is ``max(b + step, round(b * growth))``, so
    buckets are ``step`` wide while that is wider than ``growth`` and grow geometrically after
    (a batch then pads each example by at most about ``growth - 1`` of its length). The last
    boundary is exactly ``max_length``, so that no bucket is nominally longer than the data.

    Known answers: ``bucket_boundaries(61)`` is ``[8, 16, 24, 32, 40, 48, 56, 61]``;
    ``bucket_boundaries(100, step=8, growth=1.25)`` is ``[8, 16, 24, 32, 40, 50, 62, 78, 98,
    100]``; ``bucket_boundaries(24, step=1, growth=1.25, first=8)`` is ``[8, 10, 12, 15, 19,
    24]``; ``bucket_boundaries(5)`` is ``[5]``.

    Args:
        max_length: int >= 1, the longest example length to cover.
        step: int >= 1, the first boundary and the smallest bucket width. Defaults to 8.
        growth: float >= 1.0, the ratio between consecutive boundaries once the buckets are
            wider than ``step``. Defaults to 1.0 (buckets of constant width ``step``).
        first: int >= 1 or None, the first boundary. Defaults to ``step``.

    Returns:
        list[int], strictly increasing, ending with ``max_length``.

    Raises:
        UserError: an argument out of range.
    """
    first = step if first is None else first
    if max_length < 1 or step < 1 or growth < 1.0 or first < 1:
        raise UserError(
            "bucket_boundaries needs max_length, step and first >= 1 and growth >= 1, got "
            f"{max_length}, {step}, {first}, {growth}"
        )
    boundaries = []
    bound = first
    while bound < max_length:
        boundaries.append(bound)
        bound = max(bound + step, round(bound * growth))
    boundaries.append(max_length)
    return boundaries


def check_boundaries(boundaries: Sequence[int]) -> list[int]:
    """``boundaries`` as a list of int after checking it is positive and strictly increasing.

    Raises:
        UserError: a boundary < 1 or a non-increasing pair.
    """
    boundaries = [int(b) for b in boundaries]
    if any(b < 1 for b in boundaries) or any(a >= b for a, b in itertools.pairwise(boundaries)):
        raise UserError(f"bucket_boundaries must be positive and increasing, got {boundaries}")
    return boundaries


def bucket_lengths(
    boundaries: Sequence[int], longest: int, pad_to_multiple: int | None = None
) -> list[int]:
    """Nominal length of every bucket, the overflow bucket last (``len(boundaries) + 1`` items).

    Args:
        boundaries: Sequence[int], inclusive upper lengths (module convention).
        longest: int, the longest example of the data: the overflow bucket's nominal length
            (at least ``boundaries[-1] + 1``, the shortest length it can hold).
        pad_to_multiple: int | None, round every nominal length up to a multiple of this.
            Defaults to None (no rounding).

    Returns:
        list[int]. Example: ``bucket_lengths([8, 16], 30)`` is ``[8, 16, 30]``;
        ``bucket_lengths([10, 20], 30, pad_to_multiple=8)`` is ``[16, 24, 32]``.
    """
    lengths = [*boundaries, max(longest, boundaries[-1] + 1 if boundaries else 1)]
    if pad_to_multiple is not None:
        lengths = [-(-n // pad_to_multiple) * pad_to_multiple for n in lengths]
    return [int(n) for n in lengths]


def bucket_batch_sizes(lengths: Sequence[int], batch_size: int, batch_type: str) -> list[int]:
    """Examples per batch of each bucket, given the buckets' nominal ``lengths``.

    ``batch_type="examples"``: ``batch_size`` for every bucket. ``"tokens"``: ``batch_size`` is a
    token budget, bucket ``i`` batches ``max(1, batch_size // lengths[i])`` examples, so every
    batch holds at most about ``batch_size`` positions whatever its length.

    Raises:
        UserError: an unknown ``batch_type`` or ``batch_size < 1``.
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if batch_type not in BATCH_TYPES:
        raise UserError(f"batch_type must be one of {', '.join(BATCH_TYPES)}, got {batch_type!r}")
    if batch_type == "tokens":
        return [max(1, batch_size // max(int(n), 1)) for n in lengths]
    return [batch_size] * len(lengths)


def bucket_index(length: tf.Tensor, boundaries: Sequence[int] | tf.Tensor) -> tf.Tensor:
    """In-graph bucket of ``length`` (scalar int): the number of boundaries below it, int64."""
    boundaries = tf.cast(tf.convert_to_tensor(boundaries), tf.int32)
    return tf.reduce_sum(tf.cast(boundaries < tf.cast(length, tf.int32), tf.int64))


def batch_by_length(
    dataset: tf.data.Dataset,
    length_fn: Callable[..., tf.Tensor],
    boundaries: Sequence[int],
    batch_sizes: Sequence[int],
    *,
    padded_shapes,
    padding_values,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Group the examples of ``dataset`` into length buckets and pad-batch each bucket.

    A batch is emitted as soon as its bucket holds ``batch_sizes[i]`` examples; at the end of a
    pass the incomplete batches are emitted bucket by bucket (or dropped with
    ``drop_remainder``). Each batch is padded to its own longest example.

    Args:
        dataset: tf.data.Dataset of single examples.
        length_fn: callable taking one dataset element (unpacked like ``map``) and returning its
            length, a scalar int tensor.
        boundaries: Sequence[int], inclusive upper lengths (module convention); empty: one
            bucket.
        batch_sizes: Sequence[int], ``len(boundaries) + 1`` examples-per-batch values
            (:func:`bucket_batch_sizes`).
        padded_shapes, padding_values: as for ``tf.data.Dataset.padded_batch``.
        drop_remainder: bool, drop each bucket's incomplete batches. Defaults to False.

    Returns:
        tf.data.Dataset of padded batches.
    """
    if len(batch_sizes) != len(boundaries) + 1:
        raise ValueError(
            f"{len(boundaries)} boundaries need {len(boundaries) + 1} batch sizes, got "
            f"{len(batch_sizes)}"
        )
    boundaries_tensor = tf.constant(list(boundaries), tf.int32)
    sizes_tensor = tf.constant(list(batch_sizes), tf.int64)

    def key(*element):
        return bucket_index(length_fn(*element), boundaries_tensor)

    def reduce(bucket, window):
        return window.padded_batch(
            sizes_tensor[bucket],
            padded_shapes=padded_shapes,
            padding_values=padding_values,
            drop_remainder=drop_remainder,
        )

    return dataset.group_by_window(
        key_func=key, reduce_func=reduce, window_size_func=lambda bucket: sizes_tensor[bucket]
    )
