"""Greedy and beam search decoding for encoder-decoder models, compiled with ``tf.function``.

The model is written with ``keras.ops``; this module is the TensorFlow engine around it: the
decoding loops are ``tf.while_loop``s over fixed-shape state (the decoder cache is preallocated
for ``max_length`` positions), so one trace serves every batch size and source length.

Every search's settings are a :class:`~transformer_tf.inference.options.DecodingOptions`,
validated when it is made: :func:`make_decoder` takes one, and :func:`greedy_search`,
:func:`sample_search` and :func:`beam_search` make one of their arguments (a bad beam size,
length or sampling setting raises its
:class:`~transformer_tf.errors.DecodingOptionsError`, a ValueError).

A decoding model provides (see :class:`~transformer_tf.models.seq2seq.Seq2SeqTransformer`):

- ``encode(source_ids, training=False) -> (encoder_output, source_mask)``;
- ``init_cache(encoder_output, max_length) -> cache``, a nested structure of tensors whose first
  axis is the batch;
- ``decode_step(token_ids (batch, 1), cache, index, source_mask) -> (logits (batch, vocab),
  cache)``, the logits of position ``index + 1`` at the cost of one position;
- ``decode(target_ids, encoder_output, source_mask, training=False) -> logits (batch,
  target_length, vocab)``, teacher-forced and causal (the uncached baseline).

Conventions shared by both searches:

- Decoding starts from ``BOS_ID`` at position 0; ``max_length`` counts the *generated* tokens
  (EOS included), so the decoder sees at most positions ``0 .. max_length - 1``.
- ``PAD_ID`` is never generated (its log-probability is masked out, not renormalized), so the
  scores are the model's own log-probabilities of the chosen tokens.
- Outputs are ``(batch, length)`` int32 with ``length <= max_length`` the longest row: a row
  holds its tokens, then EOS (if it finished), then ``PAD_ID``. BOS is not included. n-best
  outputs are ``(batch, N, length)``, formatted the same way per hypothesis.
- Scores: beam search scores a hypothesis by its summed log-probability divided by the GNMT
  length penalty ``((5 + length) / 6) ** length_penalty`` (``length`` counts the generated
  tokens, EOS included); greedy search and sampling score it by its summed log-probability
  (the model's, before any temperature or top-k/top-p filtering).

Sampling (``beam_size=1`` with ``sampling_topk != 1`` or ``sampling_topp < 1``) draws each token
from the model's distribution divided by ``sampling_temperature`` and restricted to the ``topk``
most probable tokens (0: all) and to the nucleus of cumulative probability ``topp``. It uses
stateless random ops seeded by ``(seed, step)``, so the same seed gives the same tokens on every
call, inside a ``tf.function`` as outside.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import tensorflow as tf

from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, PAD_ID
from transformer_tf.inference.options import DecodingOptions

# Score of impossible hypotheses (beam slots not filled yet, masked tokens). Finite, so that
# sums and divisions of it never produce NaN; far below any real log-probability.
_NEG = -1e9

# Compiled decoders per model: {model: {key: tf.function}}. Weak keys so that a dropped model
# (and its traced graphs) can be garbage collected; the functions hold the model weakly.
_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_SOURCE_SPEC = tf.TensorSpec([None, None], tf.int32, name="source_ids")


def greedy_search(
    model, source_ids, max_length: int, *, use_cache: bool = True, with_scores: bool = False
):
    """Greedy decoding: the most probable next token at every step.

    Args:
        model: a decoding model (see the module docstring), e.g. ``Seq2SeqTransformer``.
        source_ids: ``(batch, source_length)`` int source ids, right-padded with ``PAD_ID``.
        max_length: int, the most tokens to generate per row (EOS included).
        use_cache: bool, decode incrementally with the decoder cache (one position per step).
            False recomputes the whole prefix with ``model.decode`` at every step (the slow
            baseline; same tokens).
        with_scores: bool, also return each row's summed log-probability. Defaults to False.

    Returns:
        ``(batch, length)`` int32, ``length <= max_length``: each row's tokens, its EOS if it
        produced one, then ``PAD_ID``. The loop stops as soon as every row has produced EOS.
        With ``with_scores``, the pair ``(ids, scores (batch,) float32)``.
    """
    options = DecodingOptions(beam_size=1, max_output_length=max_length)
    fn = _compiled(model, options, algorithm="greedy", use_cache=use_cache)
    ids, scores = fn(_as_source(source_ids))
    return (ids[:, 0], scores[:, 0]) if with_scores else ids[:, 0]


def sample_search(
    model,
    source_ids,
    max_length: int,
    *,
    topk: int = 0,
    topp: float = 1.0,
    temperature: float = 1.0,
    seed: int = 0,
    use_cache: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random sampling: each token drawn from the model's (filtered, tempered) distribution.

    With ``topk=1`` (and ``topp=1``) this is greedy search. See the module docstring.

    Args:
        model: a decoding model (see the module docstring).
        source_ids: ``(batch, source_length)`` int source ids, right-padded with ``PAD_ID``.
        max_length: int, the most tokens to generate per row (EOS included).
        topk: int >= 0, sample among the ``topk`` most probable tokens (ties at the k-th
            probability are all kept); 0 samples from the whole vocabulary. Defaults to 0.
        topp: float in (0, 1], sample from the smallest set of most probable tokens whose
            probability (after the temperature) reaches ``topp``. Defaults to 1.0 (no limit).
        temperature: float > 0, logits are divided by it: below 1 sharpens the distribution,
            above 1 flattens it. Defaults to 1.0.
        seed: int, the random seed; the same seed gives the same output. Defaults to 0.
        use_cache: bool, incremental decoding with the decoder cache.

    Returns:
        ``ids`` ``(batch, length)`` int32 formatted like :func:`greedy_search`, and ``scores``
        ``(batch,)`` float32, each row's summed log-probability under the model (no temperature,
        no filtering).
    """
    options = DecodingOptions(
        beam_size=1, max_output_length=max_length, sampling_topk=topk, sampling_topp=topp,
        sampling_temperature=temperature, seed=seed,
    )  # fmt: skip
    fn = _compiled(model, options, algorithm="greedy", use_cache=use_cache)
    ids, scores = fn(_as_source(source_ids))
    return ids[:, 0], scores[:, 0]


def beam_search(
    model,
    source_ids,
    max_length: int,
    *,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    use_cache: bool = True,
    num_hypotheses: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Batched beam search; returns the best hypothesis per source (or the ``num_hypotheses``
    best).

    Each step extends the ``beam_size`` alive hypotheses of every row, takes the
    ``2 * beam_size`` best candidates (so that candidates ending in EOS cannot starve the alive
    set), moves the EOS candidates ranked within the top ``beam_size`` to the finished set (the
    ``beam_size`` best finished hypotheses are kept) and keeps the ``beam_size`` best other
    candidates alive. Hypotheses are compared by their summed log-probability divided by the
    GNMT length penalty ``((5 + length) / 6) ** length_penalty`` (``length`` counts the
    generated tokens, EOS included). The loop stops when, in every row, no alive hypothesis
    can beat the worst finished one any more, or after ``max_length`` steps; hypotheses still
    alive then compete, truncated, with the finished ones (so a row that never produces EOS
    returns its best alive hypothesis). The n-best list is the ``num_hypotheses`` best of the
    finished hypotheses and (after ``max_length`` steps) the alive ones, best first.

    With ``beam_size=1`` and ``length_penalty=0`` this is exactly greedy search.

    Args:
        model: a decoding model (see the module docstring), e.g. ``Seq2SeqTransformer``.
        source_ids: ``(batch, source_length)`` int source ids, right-padded with ``PAD_ID``.
        max_length: int, the most tokens to generate per row (EOS included).
        beam_size: int >= 1, hypotheses kept alive per row.
        length_penalty: float, the exponent ``alpha``; 0 ranks by raw summed log-probability,
            larger values favour longer outputs.
        use_cache: bool, decode incrementally with the decoder cache, reordered by beam at each
            step. False recomputes every prefix with ``model.decode`` (same results).
        num_hypotheses: int in ``1 .. beam_size`` or None: return the n-best lists. None (the
            default) returns the best hypothesis only, without the hypothesis axis.

    Returns:
        ``ids``: ``(batch, length)`` int32, ``length <= max_length``, formatted like
        :func:`greedy_search`; ``scores``: ``(batch,)`` float32, the length-penalized
        log-probability of each returned hypothesis. With ``num_hypotheses=N``: ``ids``
        ``(batch, N, length)`` and ``scores`` ``(batch, N)``, best first.
    """
    options = DecodingOptions(
        beam_size=beam_size, n_best=num_hypotheses or 1, length_penalty=length_penalty,
        max_output_length=max_length,
    )  # fmt: skip
    fn = _compiled(model, options, algorithm="beam", use_cache=use_cache)
    ids, scores = fn(_as_source(source_ids))
    if num_hypotheses is None:
        return ids[:, 0], scores[:, 0]
    return ids, scores


def make_decoder(
    model, options: DecodingOptions, *, with_scores: bool = False, use_cache: bool = True
) -> Callable[[tf.Tensor], tf.Tensor | tuple[tf.Tensor, tf.Tensor]]:
    """A compiled decoder ``source_ids (batch, source_length) int32 -> ids (batch, length)``.

    ``options.beam_size`` 1 gives :func:`greedy_search` (or :func:`sample_search` when
    ``options.sampling``), larger values :func:`beam_search`. The result is a ``tf.function``
    with input signature ``(None, None) int32``: it is traced once, whatever the batch size and
    source length, and can be exported (attach it and the model to a ``tf.Module``). Repeated
    calls with equal options return the same function.

    Args:
        model: a decoding model, e.g. ``Seq2SeqTransformer``.
        options: :class:`~transformer_tf.inference.options.DecodingOptions`, validated; the
            search reads ``beam_size``, ``n_best``, ``length_penalty`` (beam search only),
            ``max_output_length`` and the sampling settings.
        with_scores: bool. False (the default): the decoder returns the best ids ``(batch,
            length)`` only. True: it returns ``(ids (batch, N, length), scores (batch, N))``
            with ``N = options.n_best``, best first (see the module docstring for scores).
        use_cache: bool, incremental decoding with the decoder cache.

    Raises:
        ValueError: ``options.max_output_length`` exceeds the model's target positions.
    """
    return _compiled(
        model,
        options,
        algorithm="greedy" if options.beam_size == 1 else "beam",
        use_cache=use_cache,
        ids_only=not with_scores,
    )


def _as_source(source_ids) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(source_ids), tf.int32)


def _compiled(model, options: DecodingOptions, *, algorithm, use_cache, ids_only=False):
    """The cached ``tf.function`` for one (model, decoding configuration).

    ``algorithm`` is ``"greedy"`` (beam size 1; sampling when ``options.sampling``) or
    ``"beam"``. The function returns ``(ids (batch, N, length), scores (batch, N))`` with ``N =
    options.n_best``, or ``ids (batch, length)`` (the best hypothesis) when ``ids_only``.
    """
    max_length, beam_size = options.max_output_length, options.beam_size
    num_hypotheses = options.n_best
    model_positions = getattr(model, "max_length", None)
    if isinstance(model_positions, int) and max_length > model_positions:
        raise ValueError(
            f"max_length={max_length} exceeds the model's {model_positions} target positions"
        )
    greedy = algorithm == "greedy"
    length_penalty = 0.0 if greedy else options.length_penalty
    sampling = (
        (options.sampling_topk, options.sampling_topp, options.sampling_temperature, options.seed)
        if greedy and options.sampling
        else None
    )
    key = (
        algorithm, max_length, beam_size, length_penalty, bool(use_cache), num_hypotheses,
        sampling, bool(ids_only),
    )  # fmt: skip
    functions = _FUNCTIONS.setdefault(model, {})
    if key not in functions:
        # A weak reference: the function is stored under the model, so a strong one would keep
        # the model alive forever. It is only dereferenced while tracing.
        model_ref = weakref.ref(model)

        def decode(source_ids):
            decoding_model = model_ref()
            if algorithm == "greedy":
                ids, scores = _greedy(decoding_model, source_ids, max_length, use_cache, sampling)
            else:
                ids, scores = _beam(
                    decoding_model, source_ids, max_length, beam_size, length_penalty,
                    use_cache, num_hypotheses,
                )  # fmt: skip
            return ids[:, 0] if ids_only else (ids, scores)

        functions[key] = tf.function(decode, input_signature=[_SOURCE_SPEC])
    return functions[key]


def _next_log_probs(logits):
    """float32 logits ``(batch, vocab)`` -> log-probabilities with PAD masked to ``_NEG``."""
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    is_pad = tf.equal(tf.range(tf.shape(log_probs)[-1]), PAD_ID)  # (vocab,)
    return tf.where(is_pad[None, :], tf.constant(_NEG, tf.float32), log_probs)


def _write_column(buffer, column, values):
    """``buffer[..., column] = values`` for a ``(..., length)`` buffer and ``(...)`` values."""
    at_column = tf.equal(tf.range(tf.shape(buffer)[-1]), column)  # (length,)
    return tf.where(at_column, values[..., None], buffer)


def _keep_shapes(new_cache, old_cache):
    """Give the updated cache the static shapes of the loop's cache (``tf.while_loop`` needs
    them unchanged; a decoder step may lose them, e.g. when it concatenates slices)."""
    return tf.nest.map_structure(
        lambda new, old: tf.ensure_shape(new, old.shape), new_cache, old_cache
    )


def _trim(ids):
    """Drop the columns after the longest row: ``(..., length)`` -> ``(..., <= length)``.

    Rows are contiguous (PAD is never generated), so a row's length is its non-PAD count.
    """
    lengths = tf.math.count_nonzero(tf.not_equal(ids, PAD_ID), axis=-1, dtype=tf.int32)
    return ids[..., : tf.reduce_max(lengths)]


def _filtered_logits(log_probs, topk, topp, temperature):
    """Sampling logits ``(batch, vocab)``: tempered, then outside the top-k and the top-p nucleus
    set to ``_NEG`` (masked tokens such as PAD stay masked)."""
    logits = log_probs / temperature
    vocab = tf.shape(logits)[-1]
    if topk > 0:
        kth = tf.math.top_k(logits, k=tf.minimum(topk, vocab)).values[:, -1:]  # (batch, 1)
        logits = tf.where(logits >= kth, logits, _NEG)
    if topp < 1.0:
        ordered = tf.sort(logits, axis=-1, direction="DESCENDING")
        # Probability mass before each token in order; a token is in the nucleus while the mass
        # before it is below topp (the most probable token always is).
        before = tf.math.cumsum(tf.nn.softmax(ordered, axis=-1), axis=-1, exclusive=True)
        in_nucleus = before < topp
        smallest = tf.reduce_min(tf.where(in_nucleus, ordered, -_NEG), axis=-1, keepdims=True)
        logits = tf.where(logits >= smallest, logits, _NEG)
    return logits


#: Cached beam search runs in segments that double in length from this many steps; see
#: :func:`_decoding_loop`.
_FIRST_SEGMENT_STEPS = 16


def segment_ends(max_length: int) -> list[int]:
    """The last step (exclusive) of each decoding segment: ``[16, 32, 64, ..., max_length]``.

    Doubling segments keep each step's cache at most twice the positions it needs while the
    traced graph holds only ``log2(max_length / 16) + 1`` copies of the loop (each copy costs
    tracing time at the first call).
    """
    ends, end = [], _FIRST_SEGMENT_STEPS
    while end < max_length:
        ends.append(end)
        end *= 2
    return [*ends, max_length]


def cache_position_axes(model, encoder_output, max_length: int):
    """Which axis of each cache entry has one slot per target position, found by building the
    cache eagerly for ``max_length - 1`` and ``max_length`` positions on a one-token dummy
    encoder output and comparing the shapes (so any model's cache works, whatever its layout).

    Args:
        model: a decoding model.
        encoder_output: its encoder output (a nested structure of tensors, batch first); only
            the static shapes and dtypes are used.
        max_length: int >= 2, the cache's number of positions.

    Returns:
        The cache's structure with, per entry, the int axis whose size follows the number of
        positions or None (an entry of fixed size, such as the cross-attention keys), or None
        when it cannot be told (an entry with more than one such axis).
    """

    def dummy(t):
        return tf.zeros([1 if d is None else d for d in t.shape], t.dtype)

    with tf.init_scope():  # eager even while a tf.function traces
        dummies = tf.nest.map_structure(dummy, encoder_output)
        shorter = model.init_cache(dummies, max_length - 1)
        longer = model.init_cache(dummies, max_length)

    ambiguous = []

    def axis(a, b):
        differ = [i for i, (x, y) in enumerate(zip(a.shape, b.shape, strict=True)) if x != y]
        if differ and (len(differ) > 1 or b.shape[differ[0]] != max_length):
            ambiguous.append(differ)
        return differ[0] if differ else None

    axes = tf.nest.map_structure(axis, shorter, longer)
    return None if ambiguous else axes


def _positions(t, axis, start, end):
    """``t[..., start:end, ...]`` along ``axis``."""
    return t[(slice(None),) * axis + (slice(start, end),)]


def _decoding_loop(model, condition, body, loop_vars, max_length, encoder_output):
    """``tf.while_loop(condition, body, loop_vars)`` for at most ``max_length`` steps, where
    ``loop_vars`` is ``(step, ..., cache)``.

    With a cache (``encoder_output`` not None), the loop runs in segments of steps
    (:func:`segment_ends`), and during the segment that ends at step ``E`` the cache holds only
    its first ``E`` positions: later positions are still empty (attention masks them), so the
    results are the same, while each step's attention, cache write and beam reordering cost
    ``O(E)`` instead of ``O(max_length)``. Between segments the cache grows by the initial
    (empty) slots of the next positions. Each segment is its own ``tf.while_loop`` (the shapes
    in a loop are fixed); once ``condition`` is False the later segments run no step.
    """
    ends = segment_ends(max_length)
    axes = None
    if encoder_output is not None and len(ends) > 1:
        axes = cache_position_axes(model, encoder_output, max_length)
    if axes is None or not any(a is not None for a in tf.nest.flatten(axes)):
        return tf.while_loop(condition, body, loop_vars, maximum_iterations=max_length)

    empty = loop_vars[-1]  # the initial cache, every position empty
    start = 0
    cache = tf.nest.map_structure(
        lambda t, a: t if a is None else _positions(t, a, 0, ends[0]), empty, axes
    )
    for end in ends:
        if start:
            cache = tf.nest.map_structure(
                lambda t, e, a, start=start, end=end: (
                    t if a is None else tf.concat([t, _positions(e, a, start, end)], axis=a)
                ),
                cache,
                empty,
                axes,
            )

        def in_segment(*state, end=end):
            return tf.logical_and(state[0] < end, condition(*state))

        loop_vars = tf.while_loop(
            in_segment, body, (*loop_vars[:-1], cache), maximum_iterations=end - start
        )
        cache = loop_vars[-1]
        start = end
    return loop_vars


def _greedy(model, source_ids, max_length, use_cache, sampling=None):
    """The greedy (or sampling) loop, traced inside a ``tf.function``; see
    :func:`greedy_search` and :func:`sample_search`. Returns ``(ids (batch, 1, length), scores
    (batch, 1))``."""
    batch = tf.shape(source_ids)[0]
    encoder_output, source_mask = model.encode(source_ids, training=False)
    # Column 0 holds BOS, column t + 1 the token generated at step t: (batch, max_length + 1).
    tokens = tf.concat(
        [tf.fill([batch, 1], BOS_ID), tf.zeros([batch, max_length], tf.int32)], axis=1
    )
    finished = tf.zeros([batch], tf.bool)
    scores = tf.zeros([batch], tf.float32)
    # The uncached loop carries an empty cache so both share one loop.
    cache = model.init_cache(encoder_output, max_length) if use_cache else ()

    def next_logits(step, tokens, cache):
        if use_cache:
            current = tokens[:, step : step + 1]  # (batch, 1): the token at position `step`
            logits, new_cache = model.decode_step(current, cache, step, source_mask)
            return logits, _keep_shapes(new_cache, cache)
        # The whole fixed-size buffer (batch, max_length); causal attention keeps position
        # `step` from seeing the zeros after it.
        logits = model.decode(tokens[:, :max_length], encoder_output, source_mask, training=False)
        return logits[:, step, :], cache  # (batch, vocab)

    def condition(step, tokens, finished, scores, cache):
        return tf.logical_and(step < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(step, tokens, finished, scores, cache):
        logits, cache = next_logits(step, tokens, cache)
        log_probs = _next_log_probs(logits)  # (batch, vocab)
        if sampling is None:
            next_tokens = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        else:
            topk, topp, temperature, seed = sampling
            filtered = _filtered_logits(log_probs, topk, topp, temperature)
            # A seed per step: reproducible, and each step draws fresh numbers.
            step_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
            next_tokens = tf.random.stateless_categorical(
                filtered, 1, seed=step_seed, dtype=tf.int32
            )[:, 0]
        token_log_probs = tf.gather(log_probs, next_tokens, batch_dims=1)  # (batch,)
        scores += tf.where(finished, 0.0, token_log_probs)
        # Finished rows only append padding.
        next_tokens = tf.where(finished, PAD_ID, next_tokens)  # (batch,)
        tokens = _write_column(tokens, step + 1, next_tokens)
        finished = tf.logical_or(finished, tf.equal(next_tokens, EOS_ID))
        return step + 1, tokens, finished, scores, cache

    # One loop over the whole cache: a greedy step attends over `batch` rows only, so growing
    # the cache in segments (as beam search does, with `batch * beam` rows to reorder) saves
    # less than the extra loops cost to trace and run.
    _, tokens, _, scores, _ = _decoding_loop(
        model,
        condition,
        body,
        (tf.constant(0), tokens, finished, scores, cache),
        max_length,
        None,
    )
    return _trim(tokens[:, None, 1:]), scores[:, None]  # drop BOS


def _length_penalty(length, alpha):
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (float32 scalar)."""
    return tf.pow((5.0 + tf.cast(length, tf.float32)) / 6.0, alpha)


def cache_reorder_flags(model, cache):
    """Which cache entries belong to one hypothesis: ``model.cache_reorder_flags(cache)``, or
    every entry when the model does not say (reordering an entry that needs none is only
    wasted work; not reordering one that does would be wrong)."""
    if hasattr(model, "cache_reorder_flags"):
        return model.cache_reorder_flags(cache)
    return tf.nest.map_structure(lambda _: True, cache)


def _reorder_cache(cache, indices, flags):
    """Gather the batch rows ``indices`` of every cache tensor whose flag is True."""
    return tf.nest.map_structure(
        lambda flag, t: tf.gather(t, indices, axis=0) if flag else t, flags, cache
    )


def _beam(model, source_ids, max_length, beam_size, alpha, use_cache, num_hypotheses=1):
    """The beam search loop (traced inside a ``tf.function``). See :func:`beam_search`.
    Returns ``(ids (batch, num_hypotheses, length), scores (batch, num_hypotheses))``.

    Shapes: B = batch, K = beam_size, V = vocabulary, L = max_length. Flattened beams are rows
    ``b * K + k`` of ``(B * K, ...)`` tensors.
    """
    K, L = beam_size, max_length
    alpha = float(alpha)
    batch = tf.shape(source_ids)[0]
    encoder_output, source_mask = model.encode(source_ids, training=False)

    # Tile everything per beam once: (B, ...) -> (B * K, ...), beam k of source b at b * K + k.
    source_mask = tf.repeat(source_mask, K, axis=0)  # (B * K, S)
    if use_cache:
        # Cross-attention keys/values are computed on B rows, then tiled.
        cache = model.init_cache(encoder_output, L)
        cache = tf.nest.map_structure(lambda t: tf.repeat(t, K, axis=0), cache)
        reorder_flags = cache_reorder_flags(model, cache)
    else:
        encoder_output = tf.repeat(encoder_output, K, axis=0)  # (B * K, S, d_model)
        cache = ()

    # Alive hypotheses: BOS then generated tokens, (B, K, L + 1). Only beam 0 starts alive
    # (log-prob 0), so that the first step does not expand K copies of BOS.
    alive_seq = tf.concat(
        [tf.fill([batch, K, 1], BOS_ID), tf.zeros([batch, K, L], tf.int32)], axis=2
    )
    alive_log_probs = tf.tile(
        tf.constant([[0.0] + [_NEG] * (K - 1)], tf.float32), [batch, 1]
    )  # (B, K)
    # Finished hypotheses, best first: sequences (B, K, L + 1), length-penalized scores (B, K)
    # and whether a slot holds a real hypothesis (B, K).
    finished_seq = tf.zeros([batch, K, L + 1], tf.int32)
    finished_scores = tf.fill([batch, K], _NEG)
    finished_flags = tf.zeros([batch, K], tf.bool)
    batch_offsets = tf.range(batch)[:, None] * K  # (B, 1): first flat row of each source
    rank = tf.range(2 * K)[None, :]  # (1, 2K): candidate ranks

    def next_logits(step, alive_seq, cache):
        if use_cache:
            current = tf.reshape(alive_seq[:, :, step], [-1, 1])  # (B * K, 1)
            logits, new_cache = model.decode_step(current, cache, step, source_mask)
            return logits, _keep_shapes(new_cache, cache)
        prefix = tf.reshape(alive_seq[:, :, :L], [-1, L])  # (B * K, L), fixed size
        logits = model.decode(prefix, encoder_output, source_mask, training=False)
        return logits[:, step, :], cache  # (B * K, V)

    def condition(step, alive_seq, alive_log_probs, fin_seq, fin_scores, fin_flags, cache):
        # Log-probs only decrease, so an alive hypothesis' final score is at most its current
        # log-prob over the largest penalty of any length it can still reach (step + 1 .. L;
        # the largest is at L when alpha >= 0). Alive hypotheses are sorted, best first.
        largest_penalty = tf.maximum(_length_penalty(L, alpha), _length_penalty(step + 1, alpha))
        best_possible = alive_log_probs[:, 0] / largest_penalty  # (B,)
        worst_finished = tf.reduce_min(tf.where(fin_flags, fin_scores, _NEG), axis=1)  # (B,)
        done = tf.reduce_all(best_possible <= worst_finished)
        return tf.logical_and(step < L, tf.logical_not(done))

    def body(step, alive_seq, alive_log_probs, fin_seq, fin_scores, fin_flags, cache):
        logits, cache = next_logits(step, alive_seq, cache)
        log_probs = _next_log_probs(logits)  # (B * K, V)
        vocab = tf.shape(log_probs)[-1]
        log_probs = tf.reshape(log_probs, [batch, K, vocab])  # (B, K, V)
        candidates = alive_log_probs[:, :, None] + log_probs  # (B, K, V)
        candidates = tf.reshape(candidates, [batch, K * vocab])  # (B, K * V)

        # The 2K best extensions, best first: (B, 2K) each.
        top_log_probs, top_indices = tf.math.top_k(candidates, k=2 * K)
        top_beams = top_indices // vocab  # parent beam in 0..K-1
        top_tokens = top_indices % vocab
        top_seq = tf.gather(alive_seq, top_beams, batch_dims=1)  # (B, 2K, L + 1)
        top_seq = _write_column(top_seq, step + 1, top_tokens)
        top_eos = tf.equal(top_tokens, EOS_ID)

        # Finished: EOS candidates within the top K (as in a plain K-beam step), merged with the
        # finished set; the K best are kept. The old ones come first so that they win ties.
        new_finished = top_eos & (rank < K) & (top_log_probs > _NEG / 2)  # (B, 2K)
        new_scores = top_log_probs / _length_penalty(step + 1, alpha)
        new_scores = tf.where(new_finished, new_scores, _NEG)
        fin_scores, keep = tf.math.top_k(tf.concat([fin_scores, new_scores], axis=1), k=K)
        fin_seq = tf.gather(tf.concat([fin_seq, top_seq], axis=1), keep, batch_dims=1)
        fin_flags = tf.gather(tf.concat([fin_flags, new_finished], axis=1), keep, batch_dims=1)

        # Alive: the K best candidates that did not end in EOS (at most K of the 2K did).
        alive_log_probs, keep = tf.math.top_k(tf.where(top_eos, _NEG, top_log_probs), k=K)
        alive_seq = tf.gather(top_seq, keep, batch_dims=1)  # (B, K, L + 1)
        if use_cache:
            parents = tf.gather(top_beams, keep, batch_dims=1)  # (B, K)
            rows = tf.reshape(batch_offsets + parents, [-1])  # (B * K,) flat parent rows
            cache = _reorder_cache(cache, rows, reorder_flags)
        return step + 1, alive_seq, alive_log_probs, fin_seq, fin_scores, fin_flags, cache

    step, alive_seq, alive_log_probs, fin_seq, fin_scores, fin_flags, _ = _decoding_loop(
        model,
        condition,
        body,
        (
            tf.constant(0),
            alive_seq,
            alive_log_probs,
            finished_seq,
            finished_scores,
            finished_flags,
            cache,
        ),
        L,
        encoder_output if use_cache else None,
    )

    # Hypotheses alive after max_length steps compete, truncated, with the finished ones. (After
    # an early stop they cannot win, and they are incomplete: leave them out.) The finished ones
    # come first so that they win ties (top_k keeps the lower index first).
    alive_scores = alive_log_probs / _length_penalty(step, alpha)  # (B, K)
    alive_scores = tf.where(step >= L, alive_scores, _NEG)
    finished_scores = tf.where(fin_flags, fin_scores, _NEG)  # (B, K)
    scores, best = tf.math.top_k(
        tf.concat([finished_scores, alive_scores], axis=1), k=num_hypotheses
    )  # (B, N)
    ids = tf.gather(tf.concat([fin_seq, alive_seq], axis=1), best, batch_dims=1)  # (B, N, L + 1)
    return _trim(ids[:, :, 1:]), scores  # drop BOS
