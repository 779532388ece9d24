"""Losses as (sum, count) pairs, so that the engine normalises by the *global* count.

Dividing a per-replica mean by the number of replicas is only right when every replica sees the
same number of tokens; summing and dividing by the all-reduced count is right always.
"""

from __future__ import annotations

import tensorflow as tf

from transformer_tf.data.special_tokens import PAD_ID


def token_cross_entropy(labels, logits, label_smoothing: float = 0.0):
    """Cross-entropy summed over non-padding target tokens.

    Args:
        labels: int ``(batch, length)``, 0 = padding (ignored).
        logits: float ``(batch, length, vocab)``.
        label_smoothing: float in [0, 1): the target puts ``1 - eps`` on the label and spreads
            ``eps`` uniformly over the vocabulary.

    Returns: ``(loss_sum, token_count)`` float32 scalars.
    """
    logits = tf.cast(logits, tf.float32)
    weights = tf.cast(tf.not_equal(labels, PAD_ID), tf.float32)
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    nll = -tf.gather(log_probs, tf.cast(labels, tf.int32), axis=-1, batch_dims=2)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * nll - label_smoothing * tf.reduce_mean(log_probs, -1)
    else:
        loss = nll
    return tf.reduce_sum(loss * weights), tf.reduce_sum(weights)


def class_cross_entropy(labels, logits, label_smoothing: float = 0.0):
    """Cross-entropy summed over the examples of a batch.

    Args:
        labels: int ``(batch,)`` class ids.
        logits: float ``(batch, num_classes)``.

    Returns: ``(loss_sum, example_count)`` float32 scalars.
    """
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    targets = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
    loss = tf.nn.softmax_cross_entropy_with_logits(
        targets * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, tf.float32),
        logits,
    )
    return tf.reduce_sum(loss), tf.cast(tf.size(labels), tf.float32)
