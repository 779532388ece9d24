"""Streamed translation input: text pairs read record by record, tokenized in the graph.

The training split of a large corpus never lives in Python: ``tf.data.TextLineDataset`` reads the
line-aligned files (one or several shards per side), the tokenizers run as TensorFlow ops
(``Tokenizer.tf_encode``), a bounded buffer shuffles, and
:func:`transformer_tf.data.translation.batch_translation_examples` buckets and batches. Memory is
then set by the buffers (``shuffle_buffer`` examples plus the bucketing windows), not by the
corpus size.

Splitting the input among ``P`` input pipelines (one per worker): by file when there are at least
``P`` shards (pipeline ``i`` reads shards ``i, i + P, ...``), else by line (pipeline ``i`` keeps
lines ``i, i + P, ...`` of the stream, before tokenization). The ``P`` parts are disjoint and
together hold every line once.

Helpers here also take a bounded, deterministic sample for learning a vocabulary
(:func:`sample_parallel`) and check that paired shards have the same number of lines
(:func:`count_lines`, a byte scan).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import tensorflow as tf

from transformer_tf.data.parallel import open_data_file
from transformer_tf.data.tokenizers import Tokenizer
from transformer_tf.errors import DataError

# Sentences tokenized per op call: the in-graph tokenizers are much faster on batches.
TOKENIZE_BATCH = 1024

__all__ = [
    "check_aligned",
    "collect_pairs",
    "count_lines",
    "encode_text_pairs",
    "filter_pairs",
    "parallel_text_pairs",
    "sample_parallel",
    "shard_plan",
    "tfds_text_pairs",
    "weighted_mixture",
]


def count_lines(path: str | os.PathLike) -> int:
    """Lines of ``path`` up to its last non-blank one (as :func:`read_parallel` counts them),
    by a chunked byte scan: no line is decoded or kept.

    Raises:
        DataError: a missing or unreadable file.
    """
    total = last = 0
    with open_data_file(path) as f:
        while chunk := f.read(1 << 22):
            stripped = chunk.rstrip()
            if stripped:
                # The last non-blank byte of this chunk is on line total + (newlines before it).
                last = total + stripped.count(b"\n") + 1
            total += chunk.count(b"\n")
    return last


def check_aligned(sources: Sequence[str], targets: Sequence[str]) -> int:
    """Check that each source shard has as many lines as its target shard; returns the total.

    Raises:
        DataError: shards that differ in length (both named, with their counts).
    """
    total = 0
    for source, target in zip(sources, targets, strict=True):
        n, m = count_lines(source), count_lines(target)
        if n != m:
            raise DataError(
                f"parallel files differ in length: {source} has {n} lines but {target} has {m} "
                "(not counting empty lines at the end)"
            )
        total += n
    return total


def shard_plan(num_files: int, num_pipelines: int, pipeline_id: int) -> tuple[list[int], bool]:
    """Which shards pipeline ``pipeline_id`` of ``num_pipelines`` reads, and whether it must
    also keep only every ``num_pipelines``-th line of them.

    Returns:
        (file indices, by_line): by file (``by_line`` False) when ``num_files >= num_pipelines``:
        indices ``pipeline_id, pipeline_id + num_pipelines, ...``; else every file, by line.
    """
    if num_pipelines <= 1:
        return list(range(num_files)), False
    if num_files >= num_pipelines:
        return list(range(pipeline_id, num_files, num_pipelines)), False
    return list(range(num_files)), True


def _clean(lines: tf.Tensor, lowercase: bool) -> tf.Tensor:
    # As read_parallel: a byte order mark and surrounding whitespace go (TextLineDataset has
    # already removed the "\n" and a "\r" before it).
    lines = tf.strings.regex_replace(lines, "^\ufeff", "")
    lines = tf.strings.strip(lines)
    if lowercase:
        lines = tf.strings.lower(lines, encoding="utf-8")
    return lines


def parallel_text_pairs(
    sources: Sequence[str],
    targets: Sequence[str],
    *,
    num_pipelines: int = 1,
    pipeline_id: int = 0,
    lowercase: bool = False,
) -> tf.data.Dataset:
    """``(source, target)`` string pairs of line-aligned shards, read line by line.

    The shards are read one after the other in the given order; with several pipelines, this
    pipeline's part only (see :func:`shard_plan`).

    Args:
        sources, targets: Sequence[str], aligned shard paths (source shard i pairs with target
            shard i).
        num_pipelines: int, input pipelines sharing the data. Defaults to 1.
        pipeline_id: int in ``[0, num_pipelines)``. Defaults to 0.
        lowercase: bool, lowercase both sides (UTF-8 aware). Defaults to False.

    Returns:
        tf.data.Dataset of ``(tf.string (), tf.string ())``, stripped of surrounding whitespace.
    """
    indices, by_line = shard_plan(len(sources), num_pipelines, pipeline_id)
    source_files = tf.constant([os.fspath(sources[i]) for i in indices], tf.string)
    target_files = tf.constant([os.fspath(targets[i]) for i in indices], tf.string)

    def read(source_file, target_file):
        return tf.data.Dataset.zip(
            tf.data.TextLineDataset(source_file), tf.data.TextLineDataset(target_file)
        )

    pairs = tf.data.Dataset.from_tensor_slices((source_files, target_files)).flat_map(read)
    if by_line:
        pairs = pairs.shard(num_pipelines, pipeline_id)
    return _cleaned(pairs, lowercase)


def _cleaned(pairs: tf.data.Dataset, lowercase: bool) -> tf.data.Dataset:
    """``(source, target)`` string pairs cleaned as the in-memory reader cleans them."""
    return pairs.map(
        lambda s, t: (_clean(s, lowercase), _clean(t, lowercase)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def encode_text_pairs(
    pairs: tf.data.Dataset,
    source_tokenizer: Tokenizer,
    target_tokenizer: Tokenizer,
    sampling=None,
) -> tf.data.Dataset:
    """Tokenize a dataset of ``(source, target)`` strings in the graph, in batches of
    :data:`TOKENIZE_BATCH`; yields ``(source ids, target ids)`` int32 vectors without BOS/EOS
    (as ``Tokenizer.encode``). ``sampling`` (``data.subword_regularization``: ``alpha``,
    ``nbest_size``) samples each side's segmentation anew every time a pair is read
    (``Tokenizer.tf_sampling_encoder``): training only."""
    # Built before tracing: the tokenizers' tables and models are created eagerly, once.
    if sampling is None:
        source_tokenizer.tf_module, target_tokenizer.tf_module  # noqa: B018
        encode_source, encode_target = source_tokenizer.tf_encode, target_tokenizer.tf_encode
    else:
        encode_source, encode_target = (
            tokenizer.tf_sampling_encoder(sampling.alpha, sampling.nbest_size)
            for tokenizer in (source_tokenizer, target_tokenizer)
        )

    def encode(sources, targets):
        x = tf.cast(encode_source(sources), tf.int32)
        y = tf.cast(encode_target(targets), tf.int32)
        return x, y

    return (
        pairs.batch(TOKENIZE_BATCH)
        .map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .unbatch()
    )


#: Corpus choices of a weighted mixture are drawn (and counted) in blocks of this many.
SELECT_BLOCK = 1024


def weighted_mixture(
    streams: Sequence[tf.data.Dataset],
    weights: Sequence[float],
    seed: int,
    on_draw=None,
) -> tf.data.Dataset:
    """Draw examples from ``streams`` in proportion to ``weights``, forever (each stream is
    repeated).

    The corpus of each example comes from a counter-based stateless draw (block ``b`` of
    :data:`SELECT_BLOCK` choices from seed ``(seed, b)``), so the sequence is the same on every
    run and every worker, and a resumed run that skips the batches it has seen continues it
    exactly. ``on_draw(choices)`` (a NumPy function of each block of corpus indices, returning
    it) sees every block as it is drawn, ahead of training by the pipeline's buffers: the
    per-corpus counts of the log.
    """
    total = float(sum(weights))
    logits = tf.math.log(tf.constant([[w / total for w in weights]], tf.float64))  # (1, n)
    base = tf.constant(seed, tf.int64)

    def block(index):
        seeds = tf.stack([base, index])
        choices = tf.random.stateless_categorical(logits, SELECT_BLOCK, seeds, dtype=tf.int64)
        choices = choices[0]  # (SELECT_BLOCK,)
        if on_draw is not None:
            choices = tf.ensure_shape(tf.py_function(on_draw, [choices], tf.int64), [SELECT_BLOCK])
        return choices

    selector = tf.data.Dataset.counter().map(block).unbatch()
    return tf.data.Dataset.choose_from_datasets(
        [stream.repeat() for stream in streams], selector, stop_on_empty_dataset=False
    )


def filter_pairs(ids: tf.data.Dataset, max_length: int) -> tf.data.Dataset:
    """Keep the training pairs with both sides non-empty and at most ``max_length - 1`` tokens
    (room for BOS/EOS), as :func:`transformer_tf.data.translation.encode_pairs` does."""
    limit = max_length - 1

    def keep(x, y):
        nx, ny = tf.size(x), tf.size(y)
        return (nx > 0) & (ny > 0) & (nx <= limit) & (ny <= limit)

    return ids.filter(keep)


def sample_parallel(
    sources: Sequence[str], targets: Sequence[str], limit: int, *, lowercase: bool = False
) -> tuple[list[str], list[str]]:
    """At most ``limit`` sentence pairs for learning a vocabulary, never the whole corpus.

    Deterministic: the first ``limit // n`` non-empty pairs of each of the ``n`` shards in order
    (the first ``limit % n`` shards take one more), read lazily, so the memory is bounded by
    ``limit``. Pairs with an empty side are skipped as :func:`read_parallel` skips them.

    Returns:
        (source sentences, target sentences), aligned.
    """
    n = len(sources)
    quotas = [limit // n + (i < limit % n) for i in range(n)]
    source_sample: list[str] = []
    target_sample: list[str] = []
    for source, target, quota in zip(sources, targets, quotas, strict=True):
        for x, y in _first_pairs(Path(source), Path(target), quota):
            source_sample.append(x.lower() if lowercase else x)
            target_sample.append(y.lower() if lowercase else y)
    return source_sample, target_sample


def _first_pairs(source: Path, target: Path, quota: int) -> Iterator[tuple[str, str]]:
    if quota <= 0:
        return
    taken = 0
    with _open_text(source) as fs, _open_text(target) as ft:
        for number, (x, y) in enumerate(zip(fs, ft, strict=False), start=1):
            if number == 1:
                x, y = x.removeprefix("\ufeff"), y.removeprefix("\ufeff")
            x, y = x.strip(), y.strip()
            if x and y:
                yield x, y
                taken += 1
                if taken >= quota:
                    return


def _open_text(path: Path):
    try:
        # newline="\n": split on "\n" only, like read_parallel; errors="replace": a sample for a
        # vocabulary must not fail on one bad byte (read_parallel names it for the eval splits).
        return open(path, encoding="utf-8", errors="replace", newline="\n")
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None


# --- TensorFlow Datasets ----------------------------------------------------------------------


def _tfds_builder(name: str, data_dir: str | None, split: str):
    import tensorflow_datasets as tfds  # slow to import, and only this source needs it

    where = data_dir if data_dir is not None else "the default tfds data_dir"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare()
        return builder
    except Exception as exc:
        # tfds reports a missing dataset, a failed download and a missing optional download
        # dependency with many unrelated exception types; all mean "no data here".
        raise DataError(
            f"could not load tensorflow-datasets {name!r} (split {split!r}) from {where}: no "
            "prepared data was found and preparing it failed (no network?). Prepare it where "
            "there is a network (`tfds build` or tfds.load) and set data.data_dir, or use "
            f"data.source: parallel_text. tfds said: {type(exc).__name__}: {exc}"
        ) from None


def _tfds_dataset(name, split, source_language, target_language, data_dir):
    builder = _tfds_builder(name, data_dir, split)
    try:
        dataset = builder.as_dataset(split=split, shuffle_files=False)
    except Exception as exc:
        raise DataError(
            f"tensorflow-datasets {name!r} has no split {split!r} (data.splits): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    keys = set(dataset.element_spec) if isinstance(dataset.element_spec, dict) else set()
    missing = [k for k in (source_language, target_language) if k not in keys]
    if missing:
        raise DataError(
            f"tensorflow-datasets {name!r} has no feature {', '.join(map(repr, missing))}; its "
            f"examples have {', '.join(map(repr, sorted(keys)))} (data.source_language and "
            "data.target_language name two of them)"
        )
    return dataset.map(lambda example: (example[source_language], example[target_language]))


def tfds_text_pairs(
    name: str,
    split: str,
    source_language: str,
    target_language: str,
    *,
    data_dir: str | None = None,
    lowercase: bool = False,
    num_pipelines: int = 1,
    pipeline_id: int = 0,
) -> tf.data.Dataset:
    """``(source, target)`` string pairs of a tfds translation split, streamed in the tfds
    order (files not shuffled, so the order is the same on every run); with several pipelines,
    pipeline ``pipeline_id`` keeps every ``num_pipelines``-th example.

    Raises:
        DataError: the dataset cannot be prepared, or lacks the split or a language key.
    """
    pairs = _tfds_dataset(name, split, source_language, target_language, data_dir)
    if num_pipelines > 1:
        pairs = pairs.shard(num_pipelines, pipeline_id)
    return _cleaned(pairs, lowercase)


def collect_pairs(pairs: tf.data.Dataset, limit: int = -1) -> tuple[list[str], list[str]]:
    """The first ``limit`` (-1: all) pairs with two non-empty sides of a dataset of
    ``(source, target)`` strings (:func:`tfds_text_pairs`), decoded, as two aligned lists of
    str: a vocabulary's sample, or a whole evaluation split in memory."""
    pairs = pairs.filter(lambda s, t: (tf.strings.length(s) > 0) & (tf.strings.length(t) > 0))
    sources, targets = [], []
    for x, y in pairs.take(limit).as_numpy_iterator():
        sources.append(x.decode("utf-8", errors="replace"))
        targets.append(y.decode("utf-8", errors="replace"))
    return sources, targets
