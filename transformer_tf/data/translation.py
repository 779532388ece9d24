"""Token ids for translation pairs and the length-bucketed ``tf.data`` pipeline for training.

Example format (what ``Seq2SeqTransformer`` consumes)::

    ({"source": x, "target": [BOS] + y}, y + [EOS])

where ``x`` and ``y`` are the token ids of the source and target sentences (``Tokenizer.encode``:
no BOS/EOS on the source, the same as ``Tokenizer.tf_encode`` at inference), padded with
``PAD_ID`` = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from transformer_tf.data.bucketing import (
    BATCH_TYPES,
    batch_by_length,
    bucket_batch_sizes,
    bucket_boundaries,
    bucket_lengths,
    check_boundaries,
)
from transformer_tf.data.parallel import ParallelCorpus
from transformer_tf.data.seeds import epoch_seeds
from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from transformer_tf.data.tokenizers import Tokenizer
from transformer_tf.errors import UserError

# Batch shuffle buffer (in batches). The first batch of an epoch waits until the buffer is
# full, so a whole-epoch buffer stalls every epoch start for the whole epoch's bucketing (seconds
# on 20k pairs); 64 batches already mix the lengths that group_by_window emits in bucket order,
# and prefetch produces the rest while the steps run.
MAX_BATCH_SHUFFLE_BUFFER = 64

# Default bucket width (``data.bucket_width``), in tokens. Width 2 (as the OpenNMT-tf run of
# benchmarks/peer.py buckets) cuts the padding of 128-sentence Multi30k batches enough to
# train 17% faster than width 8 on a 2-core CPU (benchmarks/peer.py, 100 steps: 3,170 against
# 2,714 target tokens/s); the shapes do not matter without XLA (the loop is traced once).
DEFAULT_BUCKET_WIDTH = 2


def encode_pairs(
    pairs_or_corpus: Sequence[tuple[str, str]] | ParallelCorpus,
    source_tokenizer: Tokenizer,
    target_tokenizer: Tokenizer,
    max_length: int,
    *,
    truncate: bool = False,
) -> tuple[list[list[int]], list[list[int]], int]:
    """Tokenize sentence pairs for :func:`make_translation_dataset`.

    ``max_length`` counts the added BOS/EOS, so each side may have at most ``max_length - 1``
    tokens (the decoder input ``[BOS] + y`` and the labels ``y + [EOS]`` then fit in
    ``max_length``).

    Args:
        pairs_or_corpus: Sequence[tuple[str, str]] | ParallelCorpus, the sentence pairs.
        source_tokenizer, target_tokenizer: Tokenizer.
        max_length: int >= 2, the longest sequence the model takes, BOS/EOS included.
        truncate: bool. False (training): drop pairs with a side longer than ``max_length - 1``
            tokens or with a side that encodes to no token. True (evaluation): keep every pair
            (the output stays aligned with the references) and cut long sides to
            ``max_length - 1`` tokens. Defaults to False.

    Returns:
        (source_ids, target_ids, count): two aligned lists of token-id lists without BOS/EOS, and
        the number of pairs dropped (``truncate=False``) or truncated (``truncate=True``).
    """
    if max_length < 2:
        raise UserError(f"max_length must be >= 2 (room for BOS/EOS), got {max_length}")
    if isinstance(pairs_or_corpus, ParallelCorpus):
        sources, targets = pairs_or_corpus.sources, pairs_or_corpus.targets
    else:
        sources = [source for source, _ in pairs_or_corpus]
        targets = [target for _, target in pairs_or_corpus]
    limit = max_length - 1
    source_ids, target_ids = [], []
    count = 0
    encoded = zip(
        source_tokenizer.encode_batch(sources), target_tokenizer.encode_batch(targets), strict=True
    )
    for x, y in encoded:
        too_long = len(x) > limit or len(y) > limit
        if truncate:
            count += too_long
            source_ids.append(x[:limit])
            target_ids.append(y[:limit])
        elif too_long or not x or not y:
            count += 1
        else:
            source_ids.append(x)
            target_ids.append(y)
    return source_ids, target_ids, count


# The name this module used before the boundaries moved to transformer_tf.data.bucketing.
default_bucket_boundaries = bucket_boundaries


def make_translation_dataset(
    source_ids: Sequence[Sequence[int]],
    target_ids: Sequence[Sequence[int]],
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    bucket_boundaries: Sequence[int] | None = None,
    bucket_width: int = DEFAULT_BUCKET_WIDTH,
    drop_remainder: bool = False,
    pad_to_multiple: int | None = None,
    batch_type: str = "examples",
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batches of translation examples grouped by length.

    An example's length is ``max(len(x), len(y) + 1)``. Bucket ``i`` holds the examples with
    length in ``(boundaries[i-1], boundaries[i]]``, plus a last bucket for longer ones (the
    convention of :mod:`transformer_tf.data.bucketing`); each batch is drawn from one bucket, so
    padding stays small. ``batch_size`` counts examples, or
    with ``batch_type="tokens"`` it is a token budget: bucket ``i`` batches
    ``max(1, batch_size // boundaries[i])`` examples (the bucket's padded length), so every
    batch holds about the same number of positions whatever its sentence length.

    Shuffling (``shuffle=True``) permutes the examples before bucketing and then the finished
    batches, both with seeds derived from ``(seed, epoch)``: the same pair gives the same batch
    order on every run, another epoch another order. Iterating the same dataset object again
    reshuffles (deterministically), so it also works with ``keras.Model.fit(epochs=...)``;
    for exactly resumable runs build one dataset per epoch with ``epoch=e``. (tf.data combines
    these seeds with TensorFlow's global seed, so programs that compare orders must also set that
    one alike, e.g. with ``keras.utils.set_random_seed``.)

    Args:
        source_ids, target_ids: Sequence[Sequence[int]], aligned token ids without BOS/EOS (see
            :func:`encode_pairs`).
        batch_size: int, examples per batch, or tokens per batch with ``batch_type="tokens"``.
        shuffle: bool, shuffle examples and batches (training); False keeps the batches in a
            fixed order (evaluation).
        seed: int, the shuffling seed.
        epoch: int, the epoch number mixed into the seed. Defaults to 0.
        bucket_boundaries: Sequence[int] | None, increasing inclusive length limits of the
            buckets. None: ``bucket_boundaries(longest, step)``, multiples of ``step`` =
            ``bucket_width`` (or ``pad_to_multiple`` if given) below the longest example, then
            the longest example. An empty list disables bucketing (one bucket, examples in
            shuffled order).
        bucket_width: int >= 1, the width of the default buckets in tokens (ignored with
            ``pad_to_multiple``, whose multiples are then the buckets). Defaults to
            :data:`DEFAULT_BUCKET_WIDTH` (2).
        drop_remainder: bool, drop each bucket's last incomplete batch so that the batch
            dimension is static (examples dropped vary with the epoch). Defaults to False.
        pad_to_multiple: int | None, pad both sides of every batch to its bucket boundary
            rounded up to a multiple of this (the overflow bucket: the batch's longest example
            rounded up), so that a batch has one of few static shapes, as TPU/XLA want. None:
            pad each side to the longest sequence in the batch. Defaults to None.
        batch_type: str, ``"examples"`` or ``"tokens"`` (see above). Defaults to
            ``"examples"``.
        shard: tuple[int, int] | None, ``(num_pipelines, pipeline_id)``: keep only examples
            ``pipeline_id, pipeline_id + num_pipelines, ...`` (one input pipeline's part, before
            shuffling). Defaults to None (all).

    Returns:
        tf.data.Dataset of ``({"source": int32 (batch, source_length), "target": int32 (batch,
        target_length)}, labels int32 (batch, target_length))`` with ``target[:, 0] == BOS``,
        ``labels[:, t] == target[:, t + 1]`` and EOS as the last label of each example.
    """
    if len(source_ids) != len(target_ids):
        raise ValueError(
            f"source_ids and target_ids differ in length: {len(source_ids)} != {len(target_ids)}"
        )
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if batch_type not in BATCH_TYPES:
        raise UserError(f"batch_type must be one of {', '.join(BATCH_TYPES)}, got {batch_type!r}")
    if pad_to_multiple is not None and pad_to_multiple < 1:
        raise UserError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    source_lengths = np.array([len(x) for x in source_ids], dtype=np.int64)
    target_lengths = np.array([len(y) for y in target_ids], dtype=np.int64)
    num_examples = len(source_lengths)
    longest = int(np.max(np.maximum(source_lengths, target_lengths + 1), initial=1))

    # The examples live in two flat tensors plus row offsets; the pipeline shuffles indices (cheap,
    # so the shuffle buffer can hold the whole epoch) and slices rows out of them.
    source_flat = tf.constant(_concatenate(source_ids), tf.int32)
    target_flat = tf.constant(_concatenate(target_ids), tf.int32)
    source_starts = tf.constant(np.concatenate([[0], np.cumsum(source_lengths)]), tf.int64)
    target_starts = tf.constant(np.concatenate([[0], np.cumsum(target_lengths)]), tf.int64)
    example_seed, batch_seed = epoch_seeds(seed, epoch)

    def ids(index):
        x = source_flat[source_starts[index] : source_starts[index + 1]]
        y = target_flat[target_starts[index] : target_starts[index + 1]]
        return x, y

    dataset = tf.data.Dataset.range(num_examples)
    if shard is not None:
        dataset = dataset.shard(*shard)
        num_examples = len(range(shard[1], num_examples, shard[0]))
    if shuffle and num_examples:
        dataset = dataset.shuffle(num_examples, seed=example_seed, reshuffle_each_iteration=True)
    dataset = dataset.map(ids, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batch_translation_examples(
        dataset,
        longest=longest,
        batch_size=batch_size,
        shuffle=shuffle,
        batch_seed=batch_seed,
        bucket_boundaries=bucket_boundaries,
        bucket_width=bucket_width,
        drop_remainder=drop_remainder,
        pad_to_multiple=pad_to_multiple,
        batch_type=batch_type,
        num_examples=num_examples,
    )


def batch_translation_examples(
    ids: tf.data.Dataset,
    *,
    longest: int,
    batch_size: int,
    shuffle: bool,
    batch_seed: int,
    bucket_boundaries: Sequence[int] | None = None,
    bucket_width: int = DEFAULT_BUCKET_WIDTH,
    drop_remainder: bool = False,
    pad_to_multiple: int | None = None,
    batch_type: str = "examples",
    num_examples: int | None = None,
) -> tf.data.Dataset:
    """The batching tail of every translation pipeline (in memory or streamed).

    Turns ``(source ids, target ids)`` pairs (int32 vectors without BOS/EOS) into examples,
    buckets and batches them and shuffles the batches, as described in
    :func:`make_translation_dataset`.

    Args:
        ids: tf.data.Dataset of ``(int32 (source_length,), int32 (target_length,))``.
        longest: int, the longest example length ``max(len(x), len(y) + 1)`` the data can have
            (a streamed corpus: ``data.max_length``): the default boundaries end with it and the
            overflow bucket's token budget counts it.
        batch_size, bucket_boundaries, bucket_width, drop_remainder, pad_to_multiple,
            batch_type: see
            :func:`make_translation_dataset`.
        shuffle: bool, shuffle the finished batches (a buffer of at most
            :data:`MAX_BATCH_SHUFFLE_BUFFER` batches).
        batch_seed: int, the seed of that shuffle.
        num_examples: int | None, the number of examples when known (a smaller batch buffer
            for tiny data); None: unknown (streamed). Defaults to None.

    Returns:
        tf.data.Dataset of batches, with deterministic order, prefetched.
    """
    if bucket_boundaries is None:
        bucket_boundaries = default_bucket_boundaries(longest, pad_to_multiple or bucket_width)
    boundaries = check_boundaries(bucket_boundaries)

    def to_example(x, y):
        target = tf.concat([[BOS_ID], y], axis=0)
        labels = tf.concat([y, [EOS_ID]], axis=0)
        return {"source": x, "target": target}, labels

    def example_length(features, labels):
        return tf.maximum(tf.size(features["source"]), tf.size(labels))

    boundaries_tensor = tf.constant(boundaries, tf.int32)
    # Examples per batch of each bucket (the last one is the overflow bucket).
    bucket_sizes = bucket_batch_sizes(
        bucket_lengths(boundaries, longest, pad_to_multiple), batch_size, batch_type
    )

    def pad_batch(features, labels):
        # All examples of a batch come from one bucket, so the smallest boundary >= the batch's
        # longest example is that bucket's boundary.
        longest_in_batch = tf.maximum(tf.shape(features["source"])[1], tf.shape(labels)[1])
        # Appending the batch's own length as a last "boundary" covers the overflow bucket.
        limits = tf.concat([boundaries_tensor, [longest_in_batch]], axis=0)
        length = limits[tf.argmax(limits >= longest_in_batch)]
        length = (length + pad_to_multiple - 1) // pad_to_multiple * pad_to_multiple

        def pad(t):
            return tf.pad(t, [[0, 0], [0, length - tf.shape(t)[1]]], constant_values=PAD_ID)

        source, target, labels = pad(features["source"]), pad(features["target"]), pad(labels)
        if drop_remainder and batch_type == "examples":
            source, target, labels = (
                tf.ensure_shape(t, [batch_size, None]) for t in (source, target, labels)
            )
        return {"source": source, "target": target}, labels

    dataset = ids.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = batch_by_length(
        dataset,
        example_length,
        boundaries,
        bucket_sizes,
        padded_shapes=({"source": [None], "target": [None]}, [None]),
        padding_values=({"source": PAD_ID, "target": PAD_ID}, PAD_ID),
        drop_remainder=drop_remainder,
    )
    if pad_to_multiple is not None:
        dataset = dataset.map(pad_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
        # Batches leave group_by_window roughly in bucket order at the end of an epoch (the
        # partial batches are flushed bucket by bucket); shuffling the batches mixes lengths.
        buffer = MAX_BATCH_SHUFFLE_BUFFER
        if num_examples is not None:
            buffer = min(buffer, num_examples // min(bucket_sizes) + len(boundaries) + 2)
        dataset = dataset.shuffle(buffer, seed=batch_seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def seq2seq_probe_batch(length: int, tokens: int):
    """``({"source", "target"}, labels)``: the worst-case batch of a token budget of ``tokens``
    for an encoder-decoder, every example ``length`` tokens long on both sides (built with
    TensorFlow ops, for ``training.batch_size: auto``'s memory probe)."""
    (examples,) = bucket_batch_sizes([length], tokens, "tokens")
    ids = tf.fill([examples, length], tf.constant(UNK_ID, tf.int32))
    return {"source": ids, "target": ids}, ids


def padding_fraction(dataset: tf.data.Dataset) -> float:
    """Share of padding (``PAD_ID``) positions in the ``source`` and ``target`` tensors of
    ``dataset`` (labels excluded), over one pass. 0.0 for an empty dataset."""
    padding = total = 0
    for features, _ in dataset.as_numpy_iterator():
        for name in ("source", "target"):
            padding += int(np.sum(features[name] == PAD_ID))
            total += features[name].size
    return padding / total if total else 0.0


def _concatenate(rows: Sequence[Sequence[int]]) -> np.ndarray:
    if not rows:
        return np.zeros([0], np.int32)
    return np.concatenate([np.asarray(r, dtype=np.int32).reshape(-1) for r in rows])
