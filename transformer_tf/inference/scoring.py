"""Score given translations under a model (``transformer-tf score``).

The score of a pair is the sum of the natural-log probabilities the model gives the target
tokens and the final EOS, teacher-forced: no length penalty, no label smoothing. It is the
quantity beam search ranks by when ``decoding.length_penalty`` is 0, so the score of the beam's
own best hypothesis is the beam's score. PAD is never a valid target token; the probabilities
are the model's softmax over the whole vocabulary (as in search, PAD is not renormalized away).

Pairs are scored in length-sorted batches by one ``tf.function`` per model (traced once for any
batch size and length), through the decoding interface of
:mod:`transformer_tf.inference.search`: ``encode`` and ``decode``.
"""

from __future__ import annotations

import dataclasses
import math
import weakref

import numpy as np
import tensorflow as tf

from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, PAD_ID
from transformer_tf.errors import UserError
from transformer_tf.inference.translate import encode_sources

_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_IDS_SPEC = tf.TensorSpec([None, None], tf.int32)
_LENGTHS_SPEC = tf.TensorSpec([None], tf.int32)


@dataclasses.dataclass
class Scores:
    """Scores of pairs and their totals.

    Attributes:
        scores: list[float], per pair, the summed log-probability of its target tokens and EOS.
        tokens: list[int], per pair, the tokens scored (target tokens + 1 for EOS).
    """

    scores: list[float]
    tokens: list[int]

    @property
    def total_tokens(self) -> int:
        """int, all tokens scored."""
        return sum(self.tokens)

    @property
    def mean_nll(self) -> float:
        """float, the mean negative log-likelihood per token (nats)."""
        return -sum(self.scores) / max(self.total_tokens, 1)

    @property
    def perplexity(self) -> float:
        """float, ``exp(mean_nll)``."""
        return math.exp(self.mean_nll)


def _compiled(model):
    """The cached scoring ``tf.function`` of ``model``: ``(source_ids (batch, S), target_ids
    (batch, T), target_lengths (batch,)) -> (batch,) float32`` summed log-probabilities."""
    if model not in _FUNCTIONS:
        model_ref = weakref.ref(model)  # as in search: the function is stored under the model

        def score(source_ids, target_ids, target_lengths):
            scoring_model = model_ref()
            batch = tf.shape(target_ids)[0]
            # Input BOS t_1 .. t_T, output t_1 .. t_T with EOS written after each row's tokens.
            target_in = tf.concat([tf.fill([batch, 1], BOS_ID), target_ids], axis=1)
            target_out = tf.concat([target_ids, tf.fill([batch, 1], PAD_ID)], axis=1)
            positions = tf.range(tf.shape(target_out)[1])[None, :]  # (1, T + 1)
            at_end = tf.equal(positions, target_lengths[:, None])
            target_out = tf.where(at_end, EOS_ID, target_out)
            encoder_output, source_mask = scoring_model.encode(source_ids, training=False)
            logits = scoring_model.decode(target_in, encoder_output, source_mask, training=False)
            log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
            token_log_probs = tf.gather(log_probs, target_out, batch_dims=2)  # (batch, T + 1)
            scored = positions <= target_lengths[:, None]
            return tf.reduce_sum(tf.where(scored, token_log_probs, 0.0), axis=1)

        _FUNCTIONS[model] = tf.function(
            score, input_signature=[_IDS_SPEC, _IDS_SPEC, _LENGTHS_SPEC]
        )
    return _FUNCTIONS[model]


def score_ids(
    model, source_ids: list[list[int]], target_ids: list[list[int]], *, batch_size: int = 64
) -> Scores:
    """Score target ids given source ids.

    Args:
        model: a decoding model (``encode``/``decode``; see
            :mod:`transformer_tf.inference.search`).
        source_ids: list of source id lists (without EOS).
        target_ids: list of target id lists (without BOS and EOS), as many as ``source_ids``.
        batch_size: int >= 1, pairs per batch. Defaults to 64.

    Returns:
        :class:`Scores`, in input order.
    """
    if len(source_ids) != len(target_ids):
        raise ValueError(f"{len(source_ids)} sources but {len(target_ids)} targets")
    function = _compiled(model)
    scores = [0.0] * len(source_ids)
    # Sorted by target then source length: little padding, so little wasted work.
    order = sorted(range(len(source_ids)), key=lambda i: (len(target_ids[i]), len(source_ids[i])))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        sources = _padded([source_ids[i] for i in chunk])
        targets = _padded([target_ids[i] for i in chunk])
        lengths = np.array([len(target_ids[i]) for i in chunk], "int32")
        values = function(tf.constant(sources), tf.constant(targets), tf.constant(lengths))
        for i, value in zip(chunk, values.numpy(), strict=True):
            scores[i] = float(value)
    return Scores(scores, [len(t) + 1 for t in target_ids])


def _padded(rows: list[list[int]]) -> np.ndarray:
    """``(len(rows), max(1, longest))`` int32, right-padded with ``PAD_ID``."""
    array = np.full((len(rows), max(1, *map(len, rows))), PAD_ID, "int32")
    for i, row in enumerate(rows):
        array[i, : len(row)] = row
    return array


def score_texts(
    model,
    source_tokenizer,
    target_tokenizer,
    sources: list[str],
    targets: list[str],
    *,
    max_input_length: int,
    batch_size: int = 64,
    truncate: bool = True,
) -> Scores:
    """Score detokenized target sentences given source sentences.

    Sources are tokenized and cut as for translation
    (:func:`~transformer_tf.inference.translate.encode_sources`); targets are never cut.

    Args:
        model, batch_size: as :func:`score_ids`.
        source_tokenizer, target_tokenizer: the run's tokenizers.
        sources, targets: list[str] of the same length.
        max_input_length: int, ``data.max_length``.
        truncate: bool, cut over-long sources with a warning (default) or refuse them.

    Raises:
        UserError: the lists differ in length, or a target needs more positions than the model
            has (``model.max_length``, BOS included).
    """
    if len(sources) != len(targets):
        raise UserError(f"{len(sources)} sources but {len(targets)} targets: they must pair up")
    source_ids, _ = encode_sources(source_tokenizer, sources, max_input_length, truncate=truncate)
    target_ids = target_tokenizer.encode_batch(targets)
    positions = getattr(model, "max_length", None)
    if isinstance(positions, int):
        for line, ids in enumerate(target_ids, start=1):
            if len(ids) + 1 > positions:
                raise UserError(
                    f"target line {line} has {len(ids)} tokens; this model scores at most "
                    f"{positions - 1} (its {positions} target positions, BOS included)"
                )
    return score_ids(model, source_ids, target_ids, batch_size=batch_size)
