"""The update and the loop that runs it: micro-batch gradients summed on each replica, one
all-reduce per update, the mean over the global count, one global-norm clip, then the
optimizer's per-variable update, and up to ``steps_per_loop`` updates per ``tf.function`` call.

Why not ``optimizer.apply`` in the replica context: Keras 3 all-reduces the gradients there
itself (after its own clipping, so the clip would see one replica's part), and in the
cross-replica context it cannot run under a MirroredStrategy (its weight decay and update go
through ``merge_call`` on a replica context that is not there). So the update is done here in
the cross-replica context (a ``merge_call``) with the optimizer's public pieces:
``update_step`` for each variable inside ``strategy.extended.update`` (what Keras does after its
all-reduce), weight decay as Keras computes it, then ``iterations += 1``. Loss scaling
(``LossScaleOptimizer``) is unscaled before clipping; an update with non-finite gradients is
skipped and the scale halved, and the scale doubles after ``dynamic_growth_steps`` finite ones,
as Keras does.
"""

from __future__ import annotations

import re

import keras
import tensorflow as tf

from transformer_tf.config import TrainingConfig
from transformer_tf.tasks import Task
from transformer_tf.training.optimizer import NO_WEIGHT_DECAY

_NO_DECAY = re.compile("|".join(NO_WEIGHT_DECAY))


def build_train_loop(strategy, model, optimizer, task: Task, training: TrainingConfig):
    """A ``tf.function`` ``loop(iterator, max_steps)`` running up to ``max_steps`` updates.

    One update reads ``training.gradient_accumulation`` micro-batches from the distributed
    ``iterator`` (fewer when the epoch ends inside it), sums their loss-sum gradients and counts
    on each replica, then all-reduces them once and applies the mean over the global count
    (examples or target tokens): N accumulated micro-batches give the update of one batch of
    their union, on one replica or many.

    The loop stops early at the end of the input (``end_of_input``) or after an update whose loss
    is not finite (``diverged_at``), and returns, without any host sync inside it, a dict of
    scalars: ``steps`` (int32, updates run), ``batches`` (int64, micro-batches read),
    ``loss_sum`` and ``count`` (float32, over the updates run), ``diverged_at`` (int32, the index
    within the loop of the first non-finite update, or -1) and ``end_of_input`` (bool).

    Args:
        strategy: tf.distribute.Strategy that holds the variables.
        model: keras.Model, called as ``model(inputs, training=True)``.
        optimizer: keras.optimizers.Adam/AdamW, or a LossScaleOptimizer around one, built on
            ``model.trainable_variables``.
        task: Task, for the loss (a sum and the count it is over).
        training: TrainingConfig (gradient_accumulation, label smoothing, clip_norm, XLA).
    """
    accumulation = training.gradient_accumulation
    loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    inner = optimizer.inner_optimizer if loss_scaled else optimizer
    variables = list(model.trainable_variables)

    def forward_backward(inputs, labels):
        # No collectives in here, so XLA can compile it (training.jit_compile).
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            loss_sum, count = task.loss(labels, logits, training.label_smoothing)
            scaled = optimizer.scale_loss(loss_sum) if loss_scaled else loss_sum
        grads = tape.gradient(scaled, variables)
        # Dense gradients: an embedding's IndexedSlices from several replicas concatenate in
        # the all-reduce, and the optimizer's sparse path then treats rows seen by both
        # replicas differently from one replica's slices.
        # The variable's static shape (a kernel's gradient can lose it): the all-reduce packs
        # tensors of known size.
        grads = [
            tf.zeros_like(v) if g is None else tf.reshape(tf.convert_to_tensor(g), v.shape)
            for g, v in zip(grads, variables, strict=True)
        ]
        return tf.cast(loss_sum, tf.float32), tf.cast(count, tf.float32), grads

    if training.jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def apply_update(strategy, grads):
        """The optimizer's update in the cross-replica context: no second all-reduce."""
        learning_rate = inner.learning_rate
        decay = inner.weight_decay

        def update(variable, grad):
            # Keras' weight decay: matched on the per-device variable's name, before the step.
            if decay and _NO_DECAY.search(variable.name) is None:
                rate = tf.cast(learning_rate, variable.dtype) * tf.cast(decay, variable.dtype)
                variable.assign_sub(variable * rate)
            inner.update_step(grad, variable, learning_rate)

        for grad, variable in zip(grads, variables, strict=True):
            strategy.extended.update(variable.value, update, args=(grad,), group=False)
        inner.iterations.assign_add(1)

    def merged_apply(strategy, grads, finite):
        if not loss_scaled:
            apply_update(strategy, grads)
            return
        # Every replica saw the same all-reduced gradients, so the same `finite`.
        finite = strategy.experimental_local_results(finite)[0]

        def finite_update():
            apply_update(strategy, grads)
            grow = tf.equal(optimizer.step_counter, optimizer.dynamic_growth_steps - 1)
            counter = optimizer.step_counter
            optimizer.step_counter.assign(tf.where(grow, tf.zeros_like(counter), counter + 1))
            optimizer.dynamic_scale.assign(
                tf.where(grow, optimizer.dynamic_scale * 2.0, optimizer.dynamic_scale)
            )

        def skip_update():
            optimizer.step_counter.assign(0)
            optimizer.dynamic_scale.assign(optimizer.dynamic_scale * 0.5)

        tf.cond(finite, finite_update, skip_update)

    def reduce_and_apply(loss_sum, count, grads):
        """Replica context: the one all-reduce of the update (gradients, loss sum and count)."""
        context = tf.distribute.get_replica_context()
        totals, *grads = context.all_reduce(
            tf.distribute.ReduceOp.SUM, [tf.stack([loss_sum, count]), *grads]
        )
        global_loss, global_count = totals[0], totals[1]
        # The gradient of the loss sum over the global count: the mean over every example (or
        # target token) of every replica and micro-batch, whatever the split.
        divisor = tf.maximum(global_count, 1.0)
        if loss_scaled:
            divisor = divisor * optimizer.dynamic_scale
        grads = [g / tf.cast(divisor, g.dtype) for g in grads]
        finite = optimizer.check_finite(grads) if loss_scaled else tf.constant(True)
        if training.clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, training.clip_norm)
        context.merge_call(merged_apply, args=(grads, finite))
        return global_loss, global_count

    if accumulation > 1:
        # Each replica's running sums over the micro-batches of one update; never checkpointed
        # (they are zero between updates), and not synchronised (each replica its own).
        with strategy.scope():
            sums = [
                tf.Variable(
                    tf.zeros(v.shape, v.dtype),
                    trainable=False,
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.SUM,
                    name="gradient_sum",
                )
                for v in variables
            ]
            totals = tf.Variable(
                tf.zeros([2]),
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
                name="loss_and_count_sum",
            )

    def micro_step(inputs, labels):
        loss_sum, count, grads = forward_backward(inputs, labels)
        for total, grad in zip(sums, grads, strict=True):
            total.assign_add(grad)
        totals.assign_add(tf.stack([loss_sum, count]))

    def accumulated_update():
        values = totals.read_value()
        result = reduce_and_apply(values[0], values[1], [s.read_value() for s in sums])
        for total in [*sums, totals]:
            total.assign(tf.zeros_like(total))
        return result

    def single_update(inputs, labels):
        return reduce_and_apply(*forward_backward(inputs, labels))

    def first(value):
        return strategy.experimental_local_results(value)[0]

    def one_update(iterator):
        """(loss sum, count, micro-batches read, end of input) of one update."""
        if accumulation == 1:
            optional = iterator.get_next_as_optional()
            if optional.has_value():
                inputs, labels = optional.get_value()
                loss_sum, count = strategy.run(single_update, args=(inputs, labels))
                return first(loss_sum), first(count), tf.constant(1, tf.int64), tf.constant(False)
            return tf.constant(0.0), tf.constant(0.0), tf.constant(0, tf.int64), tf.constant(True)
        read = tf.constant(0, tf.int64)
        end = tf.constant(False)
        while read < accumulation and not end:
            optional = iterator.get_next_as_optional()
            if optional.has_value():
                inputs, labels = optional.get_value()
                strategy.run(micro_step, args=(inputs, labels))
                read += 1
            else:
                end = tf.constant(True)
        if read > 0:
            loss_sum, count = strategy.run(accumulated_update)
            return first(loss_sum), first(count), read, end
        return tf.constant(0.0), tf.constant(0.0), read, end

    def loop(iterator, max_steps):
        steps = tf.constant(0, tf.int32)
        batches = tf.constant(0, tf.int64)
        loss_total = tf.constant(0.0)
        count_total = tf.constant(0.0)
        diverged_at = tf.constant(-1, tf.int32)
        end = tf.constant(False)
        while steps < max_steps and not end and diverged_at < 0:
            loss_sum, count, read, end = one_update(iterator)
            if read > 0:
                if not tf.math.is_finite(loss_sum / tf.maximum(count, 1.0)):
                    diverged_at = steps
                loss_total += loss_sum
                count_total += count
                batches += read
                steps += 1
        return {
            "steps": steps,
            "batches": batches,
            "loss_sum": loss_total,
            "count": count_total,
            "diverged_at": diverged_at,
            "end_of_input": end,
        }

    return tf.function(loop)
