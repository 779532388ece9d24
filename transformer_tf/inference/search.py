"""Greedy and beam search decoding for encoder-decoder models, compiled with ``tf.function``.

The model is written with ``keras.ops``; this module is the TensorFlow engine around it: the
decoding loops are ``tf.while_loop``s over fixed-shape state (the decoder cache is preallocated
for ``max_length`` positions), so one trace serves every batch size and source length.

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
  holds its tokens, then EOS (if it finished), then ``PAD_ID``. BOS is not included.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import tensorflow as tf

from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, PAD_ID

# Score of impossible hypotheses (beam slots not filled yet, masked tokens). Finite, so that
# sums and divisions of it never produce NaN; far below any real log-probability.
_NEG = -1e9

# Compiled decoders per model: {model: {key: tf.function}}. Weak keys so that a dropped model
# (and its traced graphs) can be garbage collected; the functions hold the model weakly.
_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_SOURCE_SPEC = tf.TensorSpec([None, None], tf.int32, name="source_ids")


def greedy_search(model, source_ids, max_length: int, *, use_cache: bool = True) -> tf.Tensor:
    """Greedy decoding: the most probable next token at every step.

    Args:
        model: a decoding model (see the module docstring), e.g. ``Seq2SeqTransformer``.
        source_ids: ``(batch, source_length)`` int source ids, right-padded with ``PAD_ID``.
        max_length: int, the most tokens to generate per row (EOS included).
        use_cache: bool, decode incrementally with the decoder cache (one position per step).
            False recomputes the whole prefix with ``model.decode`` at every step (the slow
            baseline; same tokens).

    Returns:
        ``(batch, length)`` int32, ``length <= max_length``: each row's tokens, its EOS if it
        produced one, then ``PAD_ID``. The loop stops as soon as every row has produced EOS.
    """
    fn = _compiled(
        model, max_length=max_length, beam_size=1, length_penalty=0.0, use_cache=use_cache,
        algorithm="greedy",
    )  # fmt: skip
    return fn(_as_source(source_ids))


def beam_search(
    model,
    source_ids,
    max_length: int,
    *,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    use_cache: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Batched beam search; returns the best hypothesis per source.

    Each step extends the ``beam_size`` alive hypotheses of every row, takes the
    ``2 * beam_size`` best candidates (so that candidates ending in EOS cannot starve the alive
    set), moves the EOS candidates ranked within the top ``beam_size`` to the finished set (the
    ``beam_size`` best finished hypotheses are kept) and keeps the ``beam_size`` best other
    candidates alive. Hypotheses are compared by their summed log-probability divided by the
    GNMT length penalty ``((5 + length) / 6) ** length_penalty`` (``length`` counts the
    generated tokens, EOS included). The loop stops when, in every row, no alive hypothesis
    can beat the worst finished one any more, or after ``max_length`` steps; hypotheses still
    alive then compete, truncated, with the finished ones (so a row that never produces EOS
    returns its best alive hypothesis).

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

    Returns:
        ``ids``: ``(batch, length)`` int32, ``length <= max_length``, formatted like
        :func:`greedy_search`; ``scores``: ``(batch,)`` float32, the length-penalized
        log-probability of each returned hypothesis.
    """
    fn = _compiled(
        model, max_length=max_length, beam_size=beam_size, length_penalty=length_penalty,
        use_cache=use_cache, algorithm="beam",
    )  # fmt: skip
    return fn(_as_source(source_ids))


def make_decoder(
    model,
    *,
    max_length: int,
    beam_size: int = 1,
    length_penalty: float = 0.6,
    use_cache: bool = True,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """A compiled decoder ``source_ids (batch, source_length) int32 -> ids (batch, length)``.

    ``beam_size=1`` gives :func:`greedy_search`, larger values :func:`beam_search` (ids only).
    The result is a ``tf.function`` with input signature ``(None, None) int32``: it is traced
    once, whatever the batch size and source length, and can be exported (attach it and the
    model to a ``tf.Module``). Repeated calls with the same arguments return the same function.

    Args:
        model: a decoding model, e.g. ``Seq2SeqTransformer``.
        max_length: int, the most tokens to generate per row (EOS included).
        beam_size: int >= 1.
        length_penalty: float, GNMT length-penalty exponent (beam search only).
        use_cache: bool, incremental decoding with the decoder cache.
    """
    greedy = beam_size == 1
    return _compiled(
        model,
        max_length=max_length,
        beam_size=beam_size,
        length_penalty=0.0 if greedy else length_penalty,
        use_cache=use_cache,
        algorithm="greedy" if greedy else "beam_ids",
    )


def _as_source(source_ids) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(source_ids), tf.int32)


def _compiled(model, *, max_length, beam_size, length_penalty, use_cache, algorithm):
    """The cached ``tf.function`` for one (model, decoding configuration)."""
    max_length, beam_size = int(max_length), int(beam_size)
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    model_positions = getattr(model, "max_length", None)
    if isinstance(model_positions, int) and max_length > model_positions:
        raise ValueError(
            f"max_length={max_length} exceeds the model's {model_positions} target positions"
        )
    key = (algorithm, max_length, beam_size, float(length_penalty), bool(use_cache))
    functions = _FUNCTIONS.setdefault(model, {})
    if key not in functions:
        # A weak reference: the function is stored under the model, so a strong one would keep
        # the model alive forever. It is only dereferenced while tracing.
        model_ref = weakref.ref(model)

        def decode(source_ids):
            decoding_model = model_ref()
            if algorithm == "greedy":
                return _greedy(decoding_model, source_ids, max_length, use_cache)
            ids, scores = _beam(
                decoding_model, source_ids, max_length, beam_size, length_penalty, use_cache
            )
            return (ids, scores) if algorithm == "beam" else ids

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
    """Drop the columns after the longest row: ``(batch, length)`` -> ``(batch, <= length)``.

    Rows are contiguous (PAD is never generated), so a row's length is its non-PAD count.
    """
    lengths = tf.math.count_nonzero(tf.not_equal(ids, PAD_ID), axis=1, dtype=tf.int32)
    return ids[:, : tf.reduce_max(lengths)]


def _greedy(model, source_ids, max_length, use_cache):
    """The greedy loop (traced inside a ``tf.function``). See :func:`greedy_search`."""
    batch = tf.shape(source_ids)[0]
    encoder_output, source_mask = model.encode(source_ids, training=False)
    # Column 0 holds BOS, column t + 1 the token generated at step t: (batch, max_length + 1).
    tokens = tf.concat(
        [tf.fill([batch, 1], BOS_ID), tf.zeros([batch, max_length], tf.int32)], axis=1
    )
    finished = tf.zeros([batch], tf.bool)
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

    def condition(step, tokens, finished, cache):
        return tf.logical_and(step < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(step, tokens, finished, cache):
        logits, cache = next_logits(step, tokens, cache)
        next_tokens = tf.argmax(_next_log_probs(logits), axis=-1, output_type=tf.int32)
        # Finished rows only append padding.
        next_tokens = tf.where(finished, PAD_ID, next_tokens)  # (batch,)
        tokens = _write_column(tokens, step + 1, next_tokens)
        finished = tf.logical_or(finished, tf.equal(next_tokens, EOS_ID))
        return step + 1, tokens, finished, cache

    _, tokens, _, _ = tf.while_loop(
        condition, body, (tf.constant(0), tokens, finished, cache), maximum_iterations=max_length
    )
    return _trim(tokens[:, 1:])  # drop BOS


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


def _beam(model, source_ids, max_length, beam_size, alpha, use_cache):
    """The beam search loop (traced inside a ``tf.function``). See :func:`beam_search`.

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

    step, alive_seq, alive_log_probs, fin_seq, fin_scores, fin_flags, _ = tf.while_loop(
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
        maximum_iterations=L,
    )

    # Hypotheses alive after max_length steps compete, truncated, with the finished ones. (After
    # an early stop they cannot win, and they are incomplete: leave them out.)
    alive_scores = alive_log_probs[:, 0] / _length_penalty(step, alpha)  # (B,)
    alive_scores = tf.where(step >= L, alive_scores, _NEG)
    best_finished = tf.where(fin_flags[:, 0], fin_scores[:, 0], _NEG)  # (B,)
    use_finished = tf.logical_and(fin_flags[:, 0], best_finished >= alive_scores)  # (B,)
    ids = tf.where(use_finished[:, None], fin_seq[:, 0], alive_seq[:, 0])  # (B, L + 1)
    scores = tf.where(use_finished, best_finished, alive_scores)
    return _trim(ids[:, 1:]), scores  # drop BOS
