"""Plain text for self-supervised pretraining, streamed with ``tf.data``.

``data.source: text`` names text files (one document per line) and folders (one document per
``*.txt`` file, as ``aclImdb/train/unsup``): :func:`text_documents` streams them, one string per
document; :func:`in_split` holds out a share of them for validation by a keyed hash of their text,
so the split needs no pass over the data and equal documents land on the same side;
:func:`length_batches` tokenizes in graph, cuts and batches by length, and :func:`mask_batches`
masks each batch (:func:`transformer_tf.data.masking.mask_tokens`) with a seed of its own;
:func:`denoising_pairs` corrupts each document by text infilling.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from transformer_tf.data.bucketing import batch_by_length, bucket_batch_sizes, bucket_lengths
from transformer_tf.data.classification import review_bucket_boundaries, truncate
from transformer_tf.data.masking import infill_spans, mask_tokens
from transformer_tf.data.seeds import epoch_seeds
from transformer_tf.data.special_tokens import PAD_ID
from transformer_tf.errors import DataError

__all__ = [
    "MASK_TOKEN",
    "chosen_positions",
    "denoising_pairs",
    "document_files",
    "in_split",
    "length_batches",
    "mask_batches",
    "text_documents",
]

#: The mask token of a masked-LM vocabulary: its last entry. Upper case, so that the cleaned
#: (lowercased) text of a document never produces it.
MASK_TOKEN = "[MASK]"

# Hash buckets of the validation split: fine enough for any fraction a config can give.
_SPLIT_BUCKETS = 1 << 30


def document_files(paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """``(folder documents, line files)``: every ``*.txt`` file of the folders in ``paths``
    (sorted by name, each one document) and the files in ``paths`` (one document per line),
    both in the order given.

    Raises:
        DataError: a path that is neither a file nor a folder with ``*.txt`` files.
    """
    whole, lines = [], []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(str(f) for f in path.glob("*.txt") if f.is_file())
            if not files:
                raise DataError(f"{path}: a folder with no *.txt file (no documents)")
            whole.extend(files)
        elif path.is_file():
            lines.append(str(path))
        else:
            raise DataError(f"{path}: no such text file or folder")
    return whole, lines


def text_documents(paths: Sequence[str | os.PathLike]) -> tf.data.Dataset:
    """The documents of ``paths`` (see :func:`document_files`): a dataset of scalar tf.string,
    the folders' files first, then the lines of the line files; empty lines are skipped."""
    whole, lines = document_files(paths)
    parts = []
    if whole:
        files = tf.data.Dataset.from_tensor_slices(tf.constant(whole, tf.string))
        # Reading is I/O bound (many ~1 KB files): parallel, in order.
        parts.append(files.map(tf.io.read_file, num_parallel_calls=16, deterministic=True))
    if lines:
        text = tf.data.TextLineDataset(tf.constant(lines, tf.string))
        parts.append(text.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0))
    documents = parts[0]
    for part in parts[1:]:
        documents = documents.concatenate(part)
    return documents


def in_split(text: tf.Tensor, split: str, fraction: float, seed: int) -> tf.Tensor:
    """Whether the document ``text`` (scalar tf.string) belongs to ``split``: ``validation``
    for a share ``fraction`` of the documents chosen by a hash of their text keyed with
    ``seed``, ``train`` for the others. A document's side depends only on its text, ``seed``
    and ``fraction``: not on its position or the other documents."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    bucket = tf.strings.to_hash_bucket_strong(text, _SPLIT_BUCKETS, key=[seed, 0x5EED])
    held_out = bucket < int(fraction * _SPLIT_BUCKETS)
    return held_out if split == "validation" else tf.logical_not(held_out)


def chosen_positions(inputs: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor):
    """The chosen positions of a masked batch, gathered: the model predicts only these.

    Args:
        inputs: int ``(batch, length)``, the corrupted ids (returned unchanged).
        labels, weights: ``(batch, length)``, as :func:`~transformer_tf.data.masking.mask_tokens`
            returns them (chosen where ``weights > 0``).

    Returns:
        ``({"token_ids": inputs, "mask_positions": positions}, {"ids": ids, "weights": w})``:
        ``positions`` int32 ``(batch, P)`` the chosen positions of each row in order, ``ids``
        (labels' dtype) and ``w`` float32 ``(batch, P)`` their labels and weights; P is the
        largest number of chosen positions of a row, shorter rows are padded with position 0
        and weight 0.
    """
    chosen = weights > 0  # (batch, length)
    length = tf.shape(inputs)[1]
    every = tf.broadcast_to(tf.range(length, dtype=tf.int32), tf.shape(inputs))
    positions = tf.ragged.boolean_mask(every, chosen).to_tensor(0)  # (batch, P)
    mask = tf.ragged.boolean_mask(chosen, chosen).to_tensor(False)  # (batch, P)
    ids = tf.where(
        mask, tf.gather(labels, positions, batch_dims=1), tf.zeros_like(positions, labels.dtype)
    )
    return (
        {"token_ids": inputs, "mask_positions": positions},
        {"ids": ids, "weights": tf.cast(mask, tf.float32)},
    )


def mask_batches(
    batches: tf.data.Dataset,
    *,
    mask_id: int,
    vocab_size: int,
    first_maskable_id: int,
    seed: int,
    epoch: int = 0,
    training: bool = True,
    mask_probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> tf.data.Dataset:
    """Masked-LM batches: each padded id batch of ``batches`` (:func:`length_batches`) masked
    (:func:`~transformer_tf.data.masking.mask_tokens`), the ``i``-th with the stateless seed
    ``(epoch seed, i)``, and its chosen positions gathered (:func:`chosen_positions`).

    Training (``training=True``) takes the seed of (``seed``, ``epoch``), so each epoch has its
    own masks; evaluation takes epoch 0's, the same tokens every time.

    Returns:
        tf.data.Dataset of ``(inputs, labels)`` as :func:`chosen_positions` returns them.
    """
    if not 0 < mask_id < vocab_size:
        raise ValueError(f"mask_id must be in [1, {vocab_size}), got {mask_id}")
    _, mask_seed = epoch_seeds(seed, epoch if training else 0)

    def mask(index, batch):  # (batch, length) -> the gathered masked batch
        batch_seed = tf.stack([tf.constant(mask_seed, tf.int64), index])
        inputs, labels, weights = mask_tokens(
            batch,
            batch_seed,
            mask_id=mask_id,
            vocab_size=vocab_size,
            mask_probability=mask_probability,
            mask_fraction=mask_fraction,
            random_fraction=random_fraction,
            first_maskable_id=first_maskable_id,
        )
        return chosen_positions(inputs, labels, weights)

    batches = batches.enumerate().map(mask, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def _encoded_documents(documents, tokenizer, max_length: int, truncation: str):
    """One int32 row per document with at least one token: encoded in graph and cut."""

    def encode(texts):  # (n,) tf.string -> (n, longest) padded ids and (n,) lengths
        ids = truncate(tokenizer.tf_encode(texts), max_length, truncation)
        return ids.to_tensor(PAD_ID), ids.row_lengths()

    def not_empty(row, length):
        return length > 0

    def unpadded(row, length):
        return row[:length]

    # Encoded 256 documents at a time (one op call each, not one per document), then one
    # dense row per document again.
    ids = documents.batch(256).map(encode, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    return ids.filter(not_empty).map(unpadded)


def denoising_pairs(
    documents: tf.data.Dataset,
    tokenizer,
    *,
    mask_id: int,
    max_length: int,
    seed: int,
    epoch: int = 0,
    training: bool = True,
    shuffle_buffer: int = 100_000,
    mask_ratio: float = 0.3,
    poisson_lambda: float = 3.0,
) -> tf.data.Dataset:
    """``(corrupted ids, original ids)`` pairs of ``documents`` for denoising (BART).

    Each document is encoded in graph (``tokenizer.tf_encode``) and cut to ``max_length - 1``
    tokens (the target gets EOS); documents with no token are dropped. The source is the
    document with text infilling (:func:`~transformer_tf.data.masking.infill_spans`, the
    ``i``-th document of the pass with the stateless seed ``(epoch seed, i)``), cut to
    ``max_length``. Training shuffles the documents first (seed of ``seed`` and ``epoch``);
    evaluation keeps their order and epoch 0's seeds, so it corrupts the same way every time.

    Returns:
        tf.data.Dataset of ``(int32 (source length,), int32 (target length,))``, no BOS/EOS:
        what :func:`~transformer_tf.data.translation.batch_translation_examples` batches.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    example_seed, mask_seed = epoch_seeds(seed, epoch if training else 0)
    if training:
        documents = documents.shuffle(shuffle_buffer, seed=example_seed)
    ids = _encoded_documents(documents, tokenizer, max_length - 1, "head")

    def corrupt(index, row):
        corrupted, _ = infill_spans(
            row,
            tf.stack([tf.constant(mask_seed, tf.int64), index]),
            mask_id=mask_id,
            mask_ratio=mask_ratio,
            poisson_lambda=poisson_lambda,
        )
        return corrupted[:max_length], row

    return ids.enumerate().map(corrupt, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def length_batches(
    documents: tf.data.Dataset,
    tokenizer,
    *,
    max_length: int,
    batch_size: int,
    seed: int,
    epoch: int = 0,
    training: bool = True,
    truncation: str = "head",
    batch_type: str = "examples",
    shuffle_buffer: int = 100_000,
) -> tf.data.Dataset:
    """The padded int32 ``(batch, length)`` id batches of ``documents``, which
    :func:`mask_batches` masks.

    Each document is encoded in graph (``tokenizer.tf_encode``), cut to ``max_length`` tokens
    (:func:`~transformer_tf.data.classification.truncate` with ``truncation``; documents with
    no token are dropped), batched by length (the classification buckets; ``batch_type`` as
    there) and padded with 0. Training (``training=True``) first shuffles the documents in a
    buffer of ``shuffle_buffer`` with the seed of (``seed``, ``epoch``); evaluation keeps their
    order."""
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
    example_seed, _ = epoch_seeds(seed, epoch if training else 0)
    if training:
        documents = documents.shuffle(shuffle_buffer, seed=example_seed)

    ids = _encoded_documents(documents, tokenizer, max_length, truncation)
    boundaries = review_bucket_boundaries(max_length)
    sizes = bucket_batch_sizes(bucket_lengths(boundaries, max_length), batch_size, batch_type)
    return batch_by_length(
        ids,
        lambda row: tf.shape(row)[0],
        boundaries,
        sizes,
        padded_shapes=[None],
        padding_values=tf.constant(PAD_ID, tf.int32),
    )
