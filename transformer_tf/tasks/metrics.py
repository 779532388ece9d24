"""Evaluation metrics as (sum, count) pairs, added up over batches and replicas."""

from __future__ import annotations

import tensorflow as tf

from transformer_tf.data.special_tokens import PAD_ID


def token_accuracy(labels, logits):
    """Correct argmax predictions over non-padding tokens: ``(correct, tokens)``."""
    weights = tf.cast(tf.not_equal(labels, PAD_ID), tf.float32)
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    correct = tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32) * weights
    return tf.reduce_sum(correct), tf.reduce_sum(weights)


def accuracy(labels, logits):
    """Correct argmax predictions over examples: ``(correct, examples)``."""
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    correct = tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32)
    return tf.reduce_sum(correct), tf.cast(tf.size(labels), tf.float32)
