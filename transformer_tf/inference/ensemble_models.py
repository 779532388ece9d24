"""Ensembles: several trained models scoring as one (fairseq's ``--path a:b``).

Translation (:class:`Ensemble`): at every step each model scores the next token with its own
decoder cache, and the ensemble's log-probability is the log of the models' mean probability.
The ensemble offers the interface that greedy and beam search use (``encode``, ``init_cache``,
``cache_reorder_flags``, ``decode_step``, ``decode``) and the call that teacher-forced
evaluation uses, so it decodes, scores and evaluates like one model. Classification
(:class:`ClassifierEnsemble`): the members' class probabilities are averaged.

Each task picks its combination (``Task.ensemble``); loading and checking the members of a run's
ensemble is :mod:`transformer_tf.inference.ensemble`'s.
"""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = ["ClassifierEnsemble", "Ensemble"]


def _log_mean_exp(log_probs: list) -> tf.Tensor:
    """``log(mean_i(exp(x_i)))`` over a list of equally shaped tensors, computed stably."""
    stacked = tf.stack(log_probs, axis=0)  # (models, ...)
    return tf.reduce_logsumexp(stacked, axis=0) - math.log(len(log_probs))


class Ensemble:
    """Average the next-token probabilities of ``models`` at every decoding step.

    Args:
        models: list of encoder-decoder models with the same source and target vocabularies
            (see :func:`check_same_vocabularies`); each keeps its own cache.

    The outputs that a model returns as logits are the ensemble's log-probabilities here
    ``(..., target_vocab)`` float32: a softmax over them gives back the mean probabilities, so
    searches and losses written for logits work unchanged.
    """

    def __init__(self, models: list):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = list(models)
        positions = [getattr(m, "max_length", None) for m in self.models]
        self.max_length = min((p for p in positions if isinstance(p, int)), default=None)

    def encode(self, source, training=None):
        """Each model's final encoder output, and the (shared) source padding mask."""
        outputs = []
        for model in self.models:
            encoder_output, source_mask = model.encode(source, training=training)
            outputs.append(encoder_output)
        return outputs, source_mask

    def decode(self, target, encoder_outputs, source_mask, training=None):
        """Teacher-forced log-probabilities ``(batch, target_length, vocab)``."""
        return _log_mean_exp(
            [
                tf.nn.log_softmax(model.decode(target, out, source_mask, training=training))
                for model, out in zip(self.models, encoder_outputs, strict=True)
            ]
        )

    def __call__(self, inputs, training=False):
        encoder_outputs, source_mask = self.encode(inputs["source"], training=training)
        return self.decode(inputs["target"], encoder_outputs, source_mask, training=training)

    def init_cache(self, encoder_outputs, max_length):
        return [
            model.init_cache(out, max_length)
            for model, out in zip(self.models, encoder_outputs, strict=True)
        ]

    def cache_reorder_flags(self, cache):
        return [
            model.cache_reorder_flags(c)
            if hasattr(model, "cache_reorder_flags")
            else tf.nest.map_structure(lambda _: True, c)
            for model, c in zip(self.models, cache, strict=True)
        ]

    def cross_attention(self, source, target):
        """The first member's cross-attention weights (``translate --alignment`` with an
        ensemble aligns with the first model: averaging attention across models that learned
        different heads would mean nothing). See ``Seq2SeqTransformer.cross_attention``."""
        return self.models[0].cross_attention(source, target)

    def decode_step(self, token_ids, cache, index, source_mask):
        """One step of every model: the ensemble's log-probabilities and the new caches."""
        log_probs, new_cache = [], []
        for model, model_cache in zip(self.models, cache, strict=True):
            logits, updated = model.decode_step(token_ids, model_cache, index, source_mask)
            log_probs.append(tf.nn.log_softmax(tf.cast(logits, tf.float32)))
            new_cache.append(updated)
        return _log_mean_exp(log_probs), new_cache


class ClassifierEnsemble:
    """Average the class probabilities of ``models`` (classifiers with the same vocabulary).

    Args:
        models: list of classifiers, each ``model(token_ids)`` -> logits ``(batch, classes)``.

    Call: ``(batch, length)`` int ids -> float32 ``(batch, num_classes)`` log mean
    probabilities; a softmax over them gives back the mean probabilities, so losses and
    metrics written for logits work unchanged.
    """

    def __init__(self, models: list):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = list(models)

    def __call__(self, token_ids, training=False):
        return _log_mean_exp(
            [tf.nn.log_softmax(model(token_ids, training=training)) for model in self.models]
        )
