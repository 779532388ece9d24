"""Batched ``tf.data`` input for text classification: reviews encoded once with the run's
:class:`~transformer_tf.data.review_tokenizer.ReviewTokenizer`, truncated (:func:`truncate`),
shuffled each epoch and batched by length (:func:`make_classification_dataset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from transformer_tf.data.bucketing import (
    batch_by_length,
    bucket_batch_sizes,
    bucket_boundaries,
    bucket_lengths,
)
from transformer_tf.data.review_tokenizer import ReviewTokenizer
from transformer_tf.data.seeds import epoch_seeds
from transformer_tf.data.special_tokens import PAD_ID

__all__ = [
    "EncodedTexts",
    "document_counts",
    "encode_texts",
    "make_classification_dataset",
    "review_bucket_boundaries",
    "truncate",
]

TRUNCATIONS = ("head", "tail", "head_tail")


# --- tf.data ---------------------------------------------------------------------------------


def review_bucket_boundaries(max_length: int) -> list[int]:
    """Inclusive bucket boundaries (:mod:`~transformer_tf.data.bucketing` convention) for
    reviews truncated to ``max_length`` tokens.

    Buckets grow by about 25% (lengths 1-7, 8-9, 10-11, 12-14, 15-18, ...), so a batch pads each
    example by at most about a quarter of its length; the last boundary is ``max_length - 1``,
    so truncated reviews (often the majority, all exactly ``max_length`` long) get the overflow
    bucket to themselves, with no padding at all. These are the buckets the IMDb recipe was
    tuned with. Example: ``review_bucket_boundaries(24)`` is ``[7, 9, 11, 14, 18, 23]``.

    Args:
        max_length: int >= 1, the truncation length.

    Returns:
        list[int], strictly increasing, ending with ``max_length - 1`` (empty for 1).
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    # One less than bucket_boundaries' (8, 10, 12, 15, 19, ..., max_length): each bucket ends
    # just below where the next starts, and max_length itself is the overflow bucket.
    bounds = bucket_boundaries(max_length, step=1, growth=1.25, first=8)
    return [b - 1 for b in bounds if b > 1]


def truncate(ids: tf.RaggedTensor, max_length: int, truncation: str = "head") -> tf.RaggedTensor:
    """Keep at most ``max_length`` ids per row of a ragged ``(batch, None)`` tensor.

    The training pipeline (:func:`encode_texts`) and the exported model
    (:func:`~transformer_tf.inference.export.build_classification_module`) both truncate with
    this function, so they keep the same ids.

    Args:
        ids: tf.RaggedTensor ``(batch, None)``, e.g. :meth:`ReviewTokenizer.tf_encode`'s output.
        max_length: int >= 1, ids kept per row.
        truncation: str, which ids a longer row keeps: ``"head"`` (default) the first
            ``max_length``, ``"tail"`` the last ``max_length``, ``"head_tail"`` the first
            ``max_length // 4`` and the last ``max_length - max_length // 4`` (long reviews often
            conclude at the end). Shorter rows are unchanged.

    Returns:
        tf.RaggedTensor ``(batch, None)`` with rows of at most ``max_length`` ids, same dtype.

    Raises:
        ValueError: ``max_length < 1`` or an unknown ``truncation``.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    lengths = ids.row_lengths()
    positions = tf.ragged.range(lengths).flat_values
    row_length = tf.repeat(lengths, lengths)  # each id's row length, aligned with `positions`
    if truncation == "head":
        keep = positions < max_length
    elif truncation == "tail":
        keep = positions >= row_length - max_length
    else:  # head_tail: the opening quarter and the closing three quarters, where verdicts are
        head = max_length // 4
        keep = (positions < head) | (positions >= row_length - (max_length - head))
    return tf.ragged.boolean_mask(ids, ids.with_flat_values(keep))


@dataclass(eq=False)
class EncodedTexts:
    """Vectorized, truncated texts as one flat id array plus row offsets (cheap to slice in a
    ``tf.data`` map, and small: int32 ids, no padding).

    Attributes:
        ids: np.ndarray of int32, every text's ids concatenated.
        starts: np.ndarray of int64, shape [N + 1]; text ``i`` is ``ids[starts[i]:starts[i+1]]``.
        max_length: int, the truncation length they were made with.
        truncation: str, the truncation rule they were made with.
    """

    ids: np.ndarray
    starts: np.ndarray
    max_length: int
    truncation: str

    def __len__(self) -> int:
        return len(self.starts) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)


def encode_texts(
    texts: Sequence[str],
    tokenizer: ReviewTokenizer,
    *,
    max_length: int,
    truncation: str = "head",
) -> EncodedTexts:
    """Encode raw ``texts`` with ``tokenizer.encode_batch`` (cleaning included) and
    :func:`truncate` them, once: a run encodes each split once and builds every epoch from the
    result.

    Args:
        texts: Sequence[str], raw texts; length N.
        tokenizer: ReviewTokenizer.
        max_length: int >= 1, ids kept per text.
        truncation: str, see :func:`truncate`. Defaults to ``"head"``.

    Returns:
        EncodedTexts of N texts.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    rows = tokenizer.encode_batch(texts)
    flat = np.fromiter((i for row in rows for i in row), np.int32, sum(len(r) for r in rows))
    lengths = np.fromiter((len(row) for row in rows), np.int64, len(rows))
    ids = truncate(
        tf.RaggedTensor.from_row_lengths(tf.constant(flat), tf.constant(lengths)),
        max_length,
        truncation,
    )
    starts = np.concatenate([[0], np.cumsum(ids.row_lengths().numpy())]).astype(np.int64)
    return EncodedTexts(ids.flat_values.numpy().astype(np.int32), starts, max_length, truncation)


def document_counts(
    encoded: EncodedTexts, labels: np.ndarray | Sequence[int], *, vocab_size: int, num_classes: int
) -> np.ndarray:
    """How many texts of each class contain each token (naive-Bayes statistics).

    Args:
        encoded: EncodedTexts of N texts.
        labels: int array-like, shape [N], in ``[0, num_classes)``.
        vocab_size: int, ids are in ``[0, vocab_size)``.
        num_classes: int.

    Returns:
        np.ndarray of int64, shape ``(vocab_size, num_classes)``: entry ``[t, c]`` counts the
        texts of class ``c`` in which id ``t`` occurs at least once.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(encoded):
        raise ValueError(f"{len(encoded)} texts but {len(labels)} labels")
    text_of_id = np.repeat(np.arange(len(encoded), dtype=np.int64), encoded.lengths())
    pairs = np.unique(text_of_id * vocab_size + encoded.ids.astype(np.int64))  # distinct per text
    cells = (pairs % vocab_size) * num_classes + labels[pairs // vocab_size]
    counts = np.bincount(cells, minlength=vocab_size * num_classes)
    return counts.reshape(vocab_size, num_classes)


def make_classification_dataset(
    texts: Sequence[str] | EncodedTexts,
    labels: np.ndarray | Sequence[int],
    tokenizer: ReviewTokenizer | None = None,
    *,
    batch_size: int,
    max_length: int,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    truncation: str = "head",
    drop_remainder: bool = False,
    bucket: bool = True,
    batch_type: str = "examples",
) -> tf.data.Dataset:
    """Batched ``(token ids, label)`` dataset for sequence classification.

    Pipeline: the raw texts are encoded by `tokenizer` (cleaning included) and truncated to
    `max_length` (:func:`encode_texts`; pass its result as `texts` to skip this step, as
    training does once per split rather than once per epoch). The dataset
    then shuffles example indices, slices each example's ids out of one flat array, batches by
    length, pads with 0 and prefetches.

    Order: with ``shuffle=True`` the first pass over the dataset has an order fixed by
    (`seed`, `epoch`); different epochs give different orders. Further passes over the same
    dataset object (e.g. ``model.fit(..., epochs=3)``) reshuffle, also deterministically. To
    reproduce the order of epoch k exactly (resuming a run), build the dataset with ``epoch=k``
    and iterate it once. If a global TensorFlow seed is set (``keras.utils.set_random_seed``),
    it is part of the order too.

    Batching: with ``bucket=True`` examples are grouped into length buckets
    (:func:`review_bucket_boundaries`: about 25% apart, and one bucket for the
    reviews of exactly `max_length` tokens) and each batch is padded to its longest example, so
    padding stays small; batches then come out in bucket-fill order rather than input order, and
    the last batch of each bucket can be smaller. With ``bucket=False`` batches follow the
    (shuffled) input order. Every example appears exactly once per pass unless
    `drop_remainder` drops incomplete batches (one per bucket with bucketing).
    ``batch_type="tokens"`` (with bucketing) makes `batch_size` a token budget: a bucket whose
    examples are at most n tokens long batches ``max(1, batch_size // n)`` of them (without
    bucketing ``max(1, batch_size // max_length)``).

    Args:
        texts: sequence of str, raw texts; length N. Or the
            :class:`EncodedTexts` of :func:`encode_texts` (then `tokenizer` is not needed, and
            `max_length`/`truncation` must match the ones it was encoded with).
        labels: int array-like, shape [N].
        tokenizer: ReviewTokenizer, required with raw texts.
        batch_size: int >= 1, examples per batch (or tokens, see `batch_type`).
        max_length: int >= 1, maximum tokens per example.
        shuffle: bool, shuffle the examples (training) or keep their order (evaluation).
        seed: int >= 0, shuffle seed.
        epoch: int >= 0, default 0; selects the order of the first pass.
        truncation: str, default "head"; which tokens to keep of a longer example: "head" the
            first `max_length`, "tail" the last `max_length`, "head_tail" the first quarter and
            the last three quarters of `max_length` (long reviews often conclude at the end).
        drop_remainder: bool, default False; drop incomplete batches.
        bucket: bool, default True; batch by length (see above).
        batch_type: str, "examples" (default) or "tokens" (see above).

    Returns:
        tf.data.Dataset of (ids int32 [batch, length], labels int32 [batch]) with
        length <= max_length, padded with ``PAD_ID`` (0); an empty text is a row of padding.

    Raises:
        ValueError: mismatched lengths or an argument out of range.
    """
    labels = np.asarray(labels, dtype=np.int32).reshape(-1)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(texts) == 0:
        raise ValueError("no examples to make a dataset from")
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
    if batch_type not in ("examples", "tokens"):
        raise ValueError(f"batch_type must be 'examples' or 'tokens', got {batch_type!r}")
    if isinstance(texts, EncodedTexts):
        if (texts.max_length, texts.truncation) != (max_length, truncation):
            raise ValueError(
                f"texts were encoded with max_length={texts.max_length}, truncation="
                f"{texts.truncation!r}; the dataset asks for {max_length}, {truncation!r}"
            )
        encoded = texts
    elif tokenizer is None:
        raise ValueError("a tokenizer is needed to make a dataset from raw texts")
    else:
        encoded = encode_texts(texts, tokenizer, max_length=max_length, truncation=truncation)

    flat_ids = tf.constant(encoded.ids, tf.int32)
    starts = tf.constant(encoded.starts, tf.int64)
    label_tensor = tf.constant(labels, tf.int32)

    def to_example(index):
        return flat_ids[starts[index] : starts[index + 1]], label_tensor[index]

    dataset = tf.data.Dataset.range(len(labels))
    if shuffle:
        # A buffer as large as the dataset is a full shuffle; it only holds indices.
        dataset = dataset.shuffle(
            len(labels), seed=epoch_seeds(seed, epoch)[0], reshuffle_each_iteration=True
        )
    dataset = dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padded_shapes = ([None], [])
    padding_values = (tf.constant(PAD_ID, tf.int32), tf.constant(0, tf.int32))
    if bucket:
        boundaries = review_bucket_boundaries(max_length)
        sizes = bucket_batch_sizes(bucket_lengths(boundaries, max_length), batch_size, batch_type)
        dataset = batch_by_length(
            dataset,
            lambda ids, label: tf.shape(ids)[0],
            boundaries,
            sizes,
            padded_shapes=padded_shapes,
            padding_values=padding_values,
            drop_remainder=drop_remainder,
        )
    else:
        if batch_type == "tokens":
            batch_size = max(1, batch_size // max_length)
        dataset = dataset.padded_batch(
            batch_size,
            padded_shapes=padded_shapes,
            padding_values=padding_values,
            drop_remainder=drop_remainder,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)
