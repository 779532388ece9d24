"""The update step: forward, backward, gradient reduction across replicas, clipping, apply."""

from __future__ import annotations

import keras
import tensorflow as tf

from transformer_tf.config import TrainingConfig
from transformer_tf.tasks import Task


def build_train_step(
    strategy, model, optimizer, task: Task, training: TrainingConfig, element_spec
):
    """A ``tf.function`` taking one distributed batch; returns the global ``(loss sum, count)``.

    Losses are sums divided by the global count of examples or target tokens, so a run gives
    the same updates on one replica or on many.

    Args:
        strategy: tf.distribute.Strategy that holds the variables.
        model: keras.Model, called as ``model(inputs, training=True)``.
        optimizer: keras.optimizers.Optimizer (maybe a LossScaleOptimizer).
        task: Task, for the loss.
        training: TrainingConfig (label smoothing, clipping, XLA).
        element_spec: the distributed dataset's element spec (one trace for every batch).
    """
    num_replicas = strategy.num_replicas_in_sync
    loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def forward_backward(inputs, labels):
        # No collectives in here, so XLA can compile it (training.jit_compile).
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            loss_sum, count = task.loss(labels, logits, training.label_smoothing)
            scaled = optimizer.scale_loss(loss_sum) if loss_scaled else loss_sum
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        # Dense gradients: an embedding's IndexedSlices from several replicas concatenate in
        # the all-reduce, and the optimizer's sparse path then treats rows seen by both
        # replicas differently from one replica's slices.
        grads = [
            tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads, variables, strict=True)
        ]
        return loss_sum, count, grads

    if training.jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(inputs, labels):
        context = tf.distribute.get_replica_context()
        loss_sum, count, grads = forward_backward(inputs, labels)
        # The gradient of the loss sum, over the global count: the mean over every example
        # (or target token) of every replica, whatever the split.
        global_count = tf.maximum(context.all_reduce(tf.distribute.ReduceOp.SUM, count), 1.0)
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grads = [g / global_count for g in grads]
        if training.clip_norm:
            # Clipping sees the global norm (Keras would clip each replica's part).
            scale = optimizer.dynamic_scale if loss_scaled else 1.0
            grads, _ = tf.clip_by_global_norm(grads, training.clip_norm * scale)
        if num_replicas > 1:
            # Every replica holds the full gradient; the optimizer's own SUM all-reduce
            # would multiply it by the replica count.
            grads = [g / num_replicas for g in grads]
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss_sum, count

    def step(batch):
        inputs, labels = batch
        loss_sum, count = strategy.run(replica_step, args=(inputs, labels))
        loss_sum = strategy.reduce(tf.distribute.ReduceOp.SUM, loss_sum, axis=None)
        count = strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None)
        return loss_sum, count

    return tf.function(step, input_signature=[element_spec])
