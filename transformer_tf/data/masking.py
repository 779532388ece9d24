"""Self-supervised pretraining objectives computed inside the ``tf.data`` graph.

Every function here takes padded int id batches (id 0 is padding; ids 1-3 are UNK, BOS and EOS,
:mod:`transformer_tf.data.special_tokens`) and is made of TensorFlow ops only, so that it runs
inside ``tf.data.Dataset.map`` and under ``tf.function``. Randomness comes only from stateless
ops driven by an explicit ``seed`` (a shape-(2,) int32/int64 tensor): the same seed gives the
same corruption, and a pipeline that varies the seed per epoch or per example (e.g.
``tf.stack([epoch_seed, example_index])``) gets a fresh one each time, reproducibly.

Objectives:

* **Masked language modelling** (BERT: Devlin, Chang, Lee and Toutanova, "BERT: Pre-training of
  Deep Bidirectional Transformers for Language Understanding", NAACL 2019). Each ordinary token
  is *chosen* with probability 0.15; a chosen token is replaced by a mask token 80% of the time,
  by a random token 10% of the time and left unchanged 10% of the time, and the model is trained
  to predict the original token at the chosen positions only (:func:`mask_tokens`, with the loss
  and accuracy of :func:`masked_token_loss` and :func:`masked_token_accuracy`).
* **Text infilling** (BART: Lewis, Liu, Goyal, Ghazvininejad, Mohamed, Levy, Stoyanov and
  Zettlemoyer, "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language
  Generation, Translation, and Comprehension", ACL 2020). Spans of tokens with lengths drawn from
  Poisson(3) are replaced by a single mask token each (a span of length 0 inserts a mask token)
  until about 30% of the tokens are covered; an encoder-decoder model reads the corrupted text
  and generates the original (:func:`infill_spans`). BART fixes the number of masked tokens of
  each row and places the spans at random; here every position starts a span independently
  (:func:`sample_spans`), with a start probability calibrated so that a token is covered with
  probability ``mask_ratio`` (:func:`span_start_probability`). The exact definition is in
  :func:`infill_spans`.

Special tokens (ids ``1 <= id < first_maskable_id``) and padding are never chosen, masked or
covered by a span: BOS and EOS stay in place and UNK is never a prediction target.
"""

from __future__ import annotations

import math

import tensorflow as tf

from transformer_tf.data.special_tokens import EOS_ID

#: The first id of an ordinary token: ids 0-3 are PAD, UNK, BOS and EOS.
FIRST_MASKABLE_ID = EOS_ID + 1


def _check_first_maskable_id(first_maskable_id: int) -> None:
    if first_maskable_id < 1:
        raise ValueError(
            f"first_maskable_id must be >= 1 (id 0 is padding), got {first_maskable_id}"
        )


def _check_mask_id(mask_id: int) -> None:
    if mask_id < 1:
        raise ValueError(f"mask_id must be >= 1 (id 0 is padding), got {mask_id}")


def mask_tokens(
    ids,
    seed,
    *,
    mask_id: int,
    vocab_size: int,
    mask_probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    first_maskable_id: int = FIRST_MASKABLE_ID,
):
    """BERT masked-LM corruption of a padded id batch.

    Each position whose id is ``>= first_maskable_id`` (never padding or a special token) is
    *chosen* independently with probability ``mask_probability``. A chosen position is replaced
    by ``mask_id`` with probability ``mask_fraction``, by a token drawn uniformly from
    ``[first_maskable_id, vocab_size)`` with probability ``random_fraction``, and kept unchanged
    otherwise. The random token may happen to equal the original or ``mask_id`` (as in BERT).

    Args:
        ids: int32/int64 tensor, any shape (typically (batch, length) or (length,) inside
            ``Dataset.map``), 0 for padding.
        seed: shape-(2,) int32/int64 tensor, the stateless seed of the draws.
        mask_id: int >= 1, the mask token's id (typically the last vocabulary id).
        vocab_size: int > first_maskable_id, the end (excluded) of the random tokens' range.
        mask_probability: float in (0, 1), the share of maskable positions chosen. Defaults to
            0.15.
        mask_fraction: float in [0, 1], the share of chosen positions replaced by ``mask_id``.
            Defaults to 0.8.
        random_fraction: float in [0, 1], the share of chosen positions replaced by a random
            token; ``mask_fraction + random_fraction <= 1``, the rest are kept. Defaults to 0.1.
        first_maskable_id: int >= 1, the smallest id that may be chosen. Defaults to 4.

    Returns:
        ``(inputs, labels, weights)``, each the shape of ``ids``: ``inputs`` (dtype of ``ids``)
        the corrupted ids; ``labels`` (dtype of ``ids``) the original id at chosen positions and
        0 elsewhere; ``weights`` float32, 1.0 at chosen positions and 0.0 elsewhere.

    Raises:
        ValueError: an argument out of range (the message names it).
    """
    if not 0.0 < mask_probability < 1.0:
        raise ValueError(f"mask_probability must be in (0, 1), got {mask_probability}")
    for name, fraction in (("mask_fraction", mask_fraction), ("random_fraction", random_fraction)):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {fraction}")
    # A little slack: 0.7 + 0.3 is 1.0000000000000002 in floating point.
    if mask_fraction + random_fraction > 1.0 + 1e-9:
        raise ValueError(
            f"mask_fraction + random_fraction must be <= 1, got {mask_fraction} + {random_fraction}"
        )
    _check_first_maskable_id(first_maskable_id)
    if vocab_size <= first_maskable_id:
        raise ValueError(
            f"vocab_size must be > first_maskable_id ({first_maskable_id}), got {vocab_size}"
        )
    _check_mask_id(mask_id)

    ids = tf.convert_to_tensor(ids)
    seed = tf.convert_to_tensor(seed)
    shape = tf.shape(ids)
    # Three independent streams: which positions, which replacement, which random token.
    choice_seed, replacement_seed, token_seed = tf.unstack(tf.random.split(seed, 3))

    maskable = ids >= first_maskable_id
    chosen = maskable & (tf.random.stateless_uniform(shape, choice_seed) < mask_probability)
    # One uniform per position splits the chosen ones: [0, mask_fraction) mask,
    # [mask_fraction, mask_fraction + random_fraction) random token, the rest kept.
    replacement = tf.random.stateless_uniform(shape, replacement_seed)
    to_mask = chosen & (replacement < mask_fraction)
    to_random = chosen & ~to_mask & (replacement < mask_fraction + random_fraction)
    random_tokens = tf.random.stateless_uniform(
        shape, token_seed, minval=first_maskable_id, maxval=vocab_size, dtype=ids.dtype
    )

    inputs = tf.where(to_mask, tf.cast(mask_id, ids.dtype), tf.where(to_random, random_tokens, ids))
    labels = tf.where(chosen, ids, tf.zeros_like(ids))
    weights = tf.cast(chosen, tf.float32)
    return inputs, labels, weights


def _chosen_losses(labels, logits, weights):
    """Float32 per-position cross-entropies and argmax predictions, and the chosen positions."""
    # Half-precision logits (bfloat16/float16) are computed in float32.
    logits = tf.cast(logits, tf.float32)  # (batch, length, vocab)
    weights = tf.cast(weights, tf.float32)  # (batch, length)
    chosen = weights > 0
    # Unchosen labels may be anything (0, -100, ...): read them as 0, a valid class, so that
    # the op never fails on them; their loss is dropped below.
    labels = tf.where(chosen, tf.cast(labels, tf.int32), 0)  # (batch, length)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (batch, length)
    return labels, losses, predictions, weights, chosen


def masked_token_loss(labels, logits, weights, label_smoothing: float = 0.0):
    """Softmax cross-entropy summed over the chosen positions, and their number.

    Args:
        labels: int tensor (batch, length), the original ids (read only where ``weights > 0``).
        logits: float tensor (batch, length, vocab), float32, bfloat16 or float16; the loss is
            computed in float32.
        weights: float tensor (batch, length), 1.0 at chosen positions and 0.0 elsewhere (as
            returned by :func:`mask_tokens`); any other weight scales its position's loss.
        label_smoothing: float in [0, 1): the target puts ``1 - eps`` on the label and spreads
            ``eps`` uniformly over the vocabulary. Defaults to 0.

    Returns:
        ``(loss_sum, count)``, float32 scalars: ``sum(weights * cross_entropy)`` over the positions
        with ``weights > 0`` (the others are left out even if their loss is not finite) and
        ``sum(weights)``, the number of chosen positions. The mean loss is their ratio; a
        distributed run sums both over replicas before dividing.
    """
    _, losses, _, weights, chosen = _chosen_losses(labels, logits, weights)
    if label_smoothing:
        # (1 - eps) * nll + eps * (mean over the vocabulary of -log p)
        uniform = -tf.reduce_mean(tf.nn.log_softmax(tf.cast(logits, tf.float32)), axis=-1)
        losses = (1.0 - label_smoothing) * losses + label_smoothing * uniform
    loss_sum = tf.reduce_sum(tf.where(chosen, losses * weights, 0.0))
    return loss_sum, tf.reduce_sum(weights)


def masked_token_accuracy(labels, logits, weights):
    """The chosen positions whose argmax prediction is the label, and their number.

    Args:
        labels, logits, weights: as for :func:`masked_token_loss`.

    Returns:
        ``(correct_sum, count)``, float32 scalars: ``sum(weights * [argmax(logits) == label])``
        over the positions with ``weights > 0``, and ``sum(weights)``. Ties go to the smallest id.
    """
    labels, _, predictions, weights, chosen = _chosen_losses(labels, logits, weights)
    correct = tf.cast(tf.equal(predictions, labels), tf.float32)  # (batch, length)
    return tf.reduce_sum(tf.where(chosen, correct * weights, 0.0)), tf.reduce_sum(weights)


def _poisson_survival(poisson_lambda: float) -> list[float]:
    """``[P(L > k) for k = 0, 1, ...]`` for ``L ~ Poisson(poisson_lambda)``, until negligible."""
    survival = []
    cdf = 0.0
    # The tail is below 1e-15 well before lambda + 40 sqrt(lambda) + 40; the bound only guards
    # against a cdf that rounding keeps a hair below 1.
    for k in range(int(poisson_lambda + 40.0 * math.sqrt(poisson_lambda) + 40.0)):
        cdf += math.exp(-poisson_lambda + k * math.log(poisson_lambda) - math.lgamma(k + 1))
        tail = max(0.0, 1.0 - cdf)
        if tail < 1e-15 and k >= poisson_lambda:
            break
        survival.append(tail)
    return survival


def _check_infill_arguments(mask_ratio: float, poisson_lambda: float) -> None:
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    if not (poisson_lambda > 0.0 and math.isfinite(poisson_lambda)):
        raise ValueError(f"poisson_lambda must be a finite number > 0, got {poisson_lambda}")


def span_start_probability(mask_ratio: float, poisson_lambda: float) -> float:
    """The probability ``q`` that a maskable position starts a span (:func:`sample_spans`).

    A position ``d`` tokens after the start of its run of maskable tokens is covered unless none
    of the ``d + 1`` positions ``p - k`` (``k = 0..d``) before it starts a span longer than
    ``k``: probability ``prod_{k=0..d} (1 - q * P(L > k))`` with ``L ~ Poisson(poisson_lambda)``.
    ``q`` is the solution of ``prod_{k>=0} (1 - q * P(L > k)) = 1 - mask_ratio`` (by bisection),
    so that a position far enough from its run's start (a few ``poisson_lambda``) is covered
    with probability ``mask_ratio``; the first positions of a run are covered a little less
    often. It is 1.0 when even ``q = 1`` covers less than ``mask_ratio`` (a small lambda with a
    large ratio). A little below ``-ln(1 - mask_ratio) / poisson_lambda`` (0.114 against
    0.119 for the defaults).

    Args:
        mask_ratio: float in (0, 1).
        poisson_lambda: float > 0, the mean span length.

    Returns:
        float in (0, 1].

    Raises:
        ValueError: an argument out of range (the message names it).
    """
    _check_infill_arguments(mask_ratio, poisson_lambda)
    survival = _poisson_survival(poisson_lambda)

    def uncovered(q: float) -> float:
        return math.prod(1.0 - q * s for s in survival)

    target = 1.0 - mask_ratio
    if uncovered(1.0) >= target:
        return 1.0
    low, high = 0.0, 1.0  # uncovered(low) > target >= uncovered(high); it decreases with q
    for _ in range(64):  # 2^-64: past float precision
        middle = 0.5 * (low + high)
        if uncovered(middle) > target:
            low = middle
        else:
            high = middle
    return high


def sample_spans(
    ids,
    seed,
    *,
    mask_ratio: float = 0.3,
    poisson_lambda: float = 3.0,
    first_maskable_id: int = FIRST_MASKABLE_ID,
):
    """The random draws of :func:`infill_spans`: where spans start and their drawn lengths.

    Position ``p`` starts a span when ``ids[p] >= first_maskable_id`` and ``u[p] < q``, with
    ``u`` float32 uniform on [0, 1) (``tf.random.stateless_uniform``) and ``q`` =
    :func:`span_start_probability` (``mask_ratio``, ``poisson_lambda``); every position draws a
    length ``L[p] ~ Poisson(poisson_lambda)`` (``tf.random.stateless_poisson``), kept where a
    span starts. :func:`infill_spans` with the same arguments corrupts with exactly these draws.

    Args:
        ids: int tensor, any shape, 0 for padding.
        seed: shape-(2,) int32/int64 tensor.
        mask_ratio, poisson_lambda, first_maskable_id: as for :func:`infill_spans`.

    Returns:
        ``(starts, span_lengths)``, the shape of ``ids``: ``starts`` bool, ``span_lengths``
        int32, the drawn (unclipped) length at a start and 0 elsewhere.
    """
    start_probability = span_start_probability(mask_ratio, poisson_lambda)
    _check_first_maskable_id(first_maskable_id)
    ids = tf.convert_to_tensor(ids)
    seed = tf.convert_to_tensor(seed)
    shape = tf.shape(ids)
    start_seed, length_seed = tf.unstack(tf.random.split(seed, 2))
    starts = (ids >= first_maskable_id) & (
        tf.random.stateless_uniform(shape, start_seed) < start_probability
    )
    drawn = tf.random.stateless_poisson(shape, length_seed, lam=poisson_lambda, dtype=tf.int32)
    return starts, tf.where(starts, drawn, 0)


def infill_spans(
    ids,
    seed,
    *,
    mask_id: int,
    mask_ratio: float = 0.3,
    poisson_lambda: float = 3.0,
    first_maskable_id: int = FIRST_MASKABLE_ID,
):
    """BART text infilling: spans of ordinary tokens each replaced by one ``mask_id``.

    Exact definition, for each row of ``ids`` (positions ``p = 0 .. T-1`` of the padded row):

    1. ``p`` is *maskable* when ``ids[p] >= first_maskable_id`` (never padding, UNK, BOS, EOS).
    2. Spans start at the positions ``starts`` and draw the lengths ``L`` of
       :func:`sample_spans` (each maskable position independently, probability
       :func:`span_start_probability`; ``L ~ Poisson(poisson_lambda)``).
    3. A span starting at ``p`` covers ``p, p+1, ..., p+L[p]-1``, cut short before the first
       non-maskable position after ``p`` (it never crosses a special token or padding). A span
       with ``L[p] = 0`` covers nothing.
    4. ``covered[p]``: some span covers ``p``.
    5. The corrupted row is, for ``p = 0 .. T-1`` in order: ``mask_id`` if
       ``(covered[p] or starts[p]) and not covered[p-1]`` (``covered[-1]`` is False), then
       ``ids[p]`` if ``not covered[p] and ids[p] != 0``.

    So each maximal run of covered positions (overlapping and touching spans merged) becomes
    one ``mask_id``, and a zero-length span inserts one ``mask_id`` before ``p``, unless ``p``
    or ``p - 1`` is covered, where it merges into that run's mask. Two ``mask_id`` are never
    adjacent (unless the row held ``mask_id`` already). Padding is dropped wherever it is, and
    rows are re-padded with 0 at the end to the longest corrupted row. A position ``d`` tokens
    into its run of maskable tokens is covered with probability ``1 - prod_{k=0..d}(1 - q *
    P(L > k))``, which is ``mask_ratio`` once ``d`` is a few ``poisson_lambda``
    (:func:`span_start_probability`).

    The uncorrupted ``ids`` are the denoising target: the caller keeps them.

    Args:
        ids: int32/int64 tensor (batch, length), or (length,) for one row inside
            ``Dataset.map``; 0 for padding.
        seed: shape-(2,) int32/int64 tensor, the stateless seed of the draws.
        mask_id: int >= 1, the mask token's id.
        mask_ratio: float in (0, 1), the share of maskable tokens to cover. Defaults to 0.3.
        poisson_lambda: float > 0, the mean span length. Defaults to 3.0.
        first_maskable_id: int >= 1, the smallest id a span may cover. Defaults to 4.

    Returns:
        ``(corrupted, lengths)``: ``corrupted`` (batch, longest corrupted row), dtype of ``ids``,
        right-padded with 0; ``lengths`` int32 (batch,), each row's corrupted length. For a
        (length,) input: a (corrupted length,) row and a scalar length.

    Raises:
        ValueError: an argument out of range (the message names it), or ``ids`` not of rank
            1 or 2.
    """
    _check_infill_arguments(mask_ratio, poisson_lambda)
    _check_first_maskable_id(first_maskable_id)
    _check_mask_id(mask_id)
    ids = tf.convert_to_tensor(ids)
    if ids.shape.rank == 1:
        corrupted, lengths = infill_spans(
            ids[tf.newaxis],  # (1, length)
            seed,
            mask_id=mask_id,
            mask_ratio=mask_ratio,
            poisson_lambda=poisson_lambda,
            first_maskable_id=first_maskable_id,
        )
        return corrupted[0], lengths[0]
    if ids.shape.rank != 2:
        raise ValueError(f"ids must be of rank 1 or 2, got shape {ids.shape}")

    starts, span_lengths = sample_spans(
        ids,
        seed,
        mask_ratio=mask_ratio,
        poisson_lambda=poisson_lambda,
        first_maskable_id=first_maskable_id,
    )
    batch, length = tf.unstack(tf.shape(ids))
    positions = tf.range(length)  # (length,)
    maskable = ids >= first_maskable_id  # (batch, length)

    # Where a span starting at p must stop: the first non-maskable position at or after p
    # (`length` if none). Sorting each row's non-maskable positions (the others read as
    # `length`) lists them in order; the one after p is number k, k = the non-maskable
    # positions before p.
    blocked = tf.sort(tf.where(maskable, length, positions), axis=1)  # (batch, length)
    blocked = tf.pad(blocked, [[0, 0], [0, 1]], constant_values=length)  # (batch, length + 1)
    before = tf.cumsum(tf.cast(~maskable, tf.int32), axis=1, exclusive=True)  # (batch, length)
    stop = tf.gather(blocked, before, batch_dims=1)  # (batch, length)

    # Each span is [p, end) with end <= stop; covered positions by a difference array: +1 at
    # each span's first position, -1 at its end, then a running sum (> 0: some span covers it).
    end = tf.minimum(positions + span_lengths, stop)  # (batch, length)
    opens = tf.cast(starts & (end > positions), tf.int32)  # (batch, length)
    rows = tf.broadcast_to(tf.range(batch)[:, tf.newaxis], [batch, length])  # (batch, length)
    closes = tf.tensor_scatter_nd_add(
        tf.zeros([batch, length + 1], tf.int32),  # column `length`: spans ending at the row end
        tf.stack([rows, end], axis=-1),  # (batch, length, 2)
        opens,
    )  # (batch, length + 1)
    depth = tf.cumsum(tf.pad(opens, [[0, 0], [0, 1]]) - closes, axis=1)  # (batch, length + 1)
    covered = depth[:, :length] > 0  # (batch, length)

    covered_before = tf.pad(covered, [[0, 0], [1, 0]])[:, :length]  # (batch, length): covered[p-1]
    mask_before = (covered | starts) & ~covered_before
    keep = ~covered & (ids != 0)

    # Each position emits up to two ids, (mask_id, ids[p]), as its two flags say; interleaving
    # them and dropping the unflagged ones gives the corrupted rows in order.
    pieces = tf.stack([tf.fill(tf.shape(ids), tf.cast(mask_id, ids.dtype)), ids], axis=2)
    flags = tf.stack([mask_before, keep], axis=2)  # (batch, length, 2)
    pieces = tf.reshape(pieces, [batch, 2 * length])  # (batch, 2 * length)
    flags = tf.reshape(flags, [batch, 2 * length])  # (batch, 2 * length)
    corrupted = tf.ragged.boolean_mask(pieces, flags)  # (batch, None)
    lengths = tf.cast(corrupted.row_lengths(), tf.int32)  # (batch,)
    return corrupted.to_tensor(default_value=0), lengths  # (batch, max(lengths))
