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

:class:`Update` holds the parts, one method each (as OpenNMT-tf's ``Trainer``):
``forward_backward``, then a :class:`GradientAccumulator` when ``gradient_accumulation > 1``,
then ``reduce`` (the all-reduce), ``unscale``, ``clip`` and ``apply``; ``loop`` runs them.
"""

from __future__ import annotations

import re

import keras
import tensorflow as tf

from transformer_tf.config import TrainingConfig
from transformer_tf.tasks import Task
from transformer_tf.training.optimizer import NO_WEIGHT_DECAY

_NO_DECAY = re.compile("|".join(NO_WEIGHT_DECAY))


def _sum_variable(shape, dtype, name):
    """A per-replica running sum: ON_READ (each replica its own), never checkpointed."""
    return tf.Variable(
        tf.zeros(shape, dtype),
        trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM,
        name=name,
    )


class GradientAccumulator:
    """Each replica's running sums of the gradients, loss sum and count of one update's
    micro-batches. Not synchronised (each replica its own) and never checkpointed: they are zero
    between updates. ``add``, ``read`` and ``reset`` run in the replica context.

    Args:
        strategy: tf.distribute.Strategy, whose scope the sums are created in.
        variables: the trainable variables, one sum of each one's shape and dtype.
    """

    def __init__(self, strategy, variables):
        with strategy.scope():
            self.grads = [_sum_variable(v.shape, v.dtype, "gradient_sum") for v in variables]
            self.totals = _sum_variable([2], tf.float32, "loss_and_count_sum")

    def add(self, loss_sum, count, grads):
        """Add one micro-batch's (loss sum, count, gradients), as ``forward_backward`` gives."""
        for total, grad in zip(self.grads, grads, strict=True):
            total.assign_add(grad)
        self.totals.assign_add(tf.stack([loss_sum, count]))

    def read(self):
        """This replica's (loss sum, count, gradients) so far."""
        totals = self.totals.read_value()
        return totals[0], totals[1], [s.read_value() for s in self.grads]

    def reset(self):
        for total in [*self.grads, self.totals]:
            total.assign(tf.zeros_like(total))


class Update:
    """One update of the model's trainable variables, in parts, and the loop that runs them.

    In the replica context: ``forward_backward`` (one micro-batch), the ``accumulator`` (when
    ``training.gradient_accumulation > 1``), ``reduce`` (the one all-reduce), ``unscale`` and
    ``clip``; then ``apply`` in the cross-replica context (a ``merge_call``).

    ``after_apply``: a list of callables of no arguments, empty by default, called in that order
    in the cross-replica context after each update that is applied (after ``iterations += 1``;
    not after an update skipped for non-finite loss-scaled gradients). They are traced into the
    loop when it is first called, so append them before that; each must do its work with
    TensorFlow ops (e.g. an exponential moving average of the weights: ``strategy.extended.update``
    of each average with its variable).

    Args:
        strategy: tf.distribute.Strategy that holds the variables.
        model: keras.Model, called as ``model(inputs, training=True)``.
        optimizer: keras.optimizers.Adam/AdamW, or a LossScaleOptimizer around one, built on
            ``model.trainable_variables``.
        task: Task, for the loss (a sum and the count it is over).
        training: TrainingConfig (gradient_accumulation, label smoothing, clip_norm, XLA).
    """

    def __init__(self, strategy, model, optimizer, task: Task, training: TrainingConfig):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.task = task
        self.training = training
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.inner = optimizer.inner_optimizer if self.loss_scaled else optimizer
        self.variables = list(model.trainable_variables)
        self.after_apply: list = []
        # Per variable, (multiplier of its update, frozen for the first freeze_steps updates);
        # None: the optimizer's updates as they are. Set before the loop is first called.
        self.update_scales: list[tuple[float, bool]] | None = None
        self.accumulator = (
            GradientAccumulator(strategy, self.variables)
            if training.gradient_accumulation > 1
            else None
        )
        if training.jit_compile:
            self.forward_backward = tf.function(self.forward_backward, jit_compile=True)
        self.loop = tf.function(self._loop)

    # Replica context.

    def forward_backward(self, inputs, labels):
        """(loss sum, count, dense gradients of the loss sum) of one micro-batch; the gradients
        are of the scaled loss sum under a LossScaleOptimizer. No collectives in here, so XLA
        can compile it (``training.jit_compile``)."""
        with tf.GradientTape() as tape:
            logits = self.model(inputs, training=True)
            loss_sum, count = self.task.loss(labels, logits, self.training.label_smoothing)
            scaled = self.optimizer.scale_loss(loss_sum) if self.loss_scaled else loss_sum
        grads = tape.gradient(scaled, self.variables)
        # Dense gradients: an embedding's IndexedSlices from several replicas concatenate in
        # the all-reduce, and the optimizer's sparse path then treats rows seen by both
        # replicas differently from one replica's slices.
        # The variable's static shape (a kernel's gradient can lose it): the all-reduce packs
        # tensors of known size.
        grads = [
            tf.zeros_like(v) if g is None else tf.reshape(tf.convert_to_tensor(g), v.shape)
            for g, v in zip(grads, self.variables, strict=True)
        ]
        return tf.cast(loss_sum, tf.float32), tf.cast(count, tf.float32), grads

    def reduce(self, loss_sum, count, grads):
        """The one all-reduce (sum) of the update: (global loss sum, global count, gradients)."""
        context = tf.distribute.get_replica_context()
        totals, *grads = context.all_reduce(
            tf.distribute.ReduceOp.SUM, [tf.stack([loss_sum, count]), *grads]
        )
        return totals[0], totals[1], grads

    def unscale(self, grads, global_count):
        """The gradient of the mean: the summed gradients over the global count (every example
        or target token of every replica and micro-batch, whatever the split), and over the
        loss scale under a LossScaleOptimizer."""
        divisor = tf.maximum(global_count, 1.0)
        if self.loss_scaled:
            divisor = divisor * self.optimizer.dynamic_scale
        return [g / tf.cast(divisor, g.dtype) for g in grads]

    def clip(self, grads):
        """Clipped to the global norm ``training.clip_norm``; unchanged when it is unset."""
        if self.training.clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, self.training.clip_norm)
        return grads

    def update(self, loss_sum, count, grads):
        """Reduce, unscale, clip and apply one update from this replica's sums; returns the
        global (loss sum, count)."""
        global_loss, global_count, grads = self.reduce(loss_sum, count, grads)
        grads = self.unscale(grads, global_count)
        finite = self.optimizer.check_finite(grads) if self.loss_scaled else tf.constant(True)
        grads = self.clip(grads)
        tf.distribute.get_replica_context().merge_call(
            lambda _, grads, finite: self.apply(grads, finite), args=(grads, finite)
        )
        return global_loss, global_count

    def accumulate(self, inputs, labels):
        """Add one micro-batch to the accumulator."""
        self.accumulator.add(*self.forward_backward(inputs, labels))

    def update_accumulated(self):
        """The update of the accumulated micro-batches; the accumulator is then zero again."""
        result = self.update(*self.accumulator.read())
        self.accumulator.reset()
        return result

    def update_one(self, inputs, labels):
        """The update of one batch (no accumulation)."""
        return self.update(*self.forward_backward(inputs, labels))

    # Cross-replica context.

    def apply(self, grads, finite):
        """Apply the reduced, unscaled and clipped ``grads`` (per replica or plain).

        Without loss scaling ``finite`` is ignored. Under a LossScaleOptimizer an update whose
        gradients are not ``finite`` is skipped and the scale halved; a finite one is applied and
        the scale doubles after ``dynamic_growth_steps`` of them in a row (Keras' rule).
        """
        if not self.loss_scaled:
            self._apply_gradients(grads)
            return
        # Every replica saw the same all-reduced gradients, so the same `finite`.
        finite = self.strategy.experimental_local_results(finite)[0]
        optimizer = self.optimizer

        def finite_update():
            self._apply_gradients(grads)
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

    def _apply_gradients(self, grads):
        """The optimizer's update, no second all-reduce: weight decay and ``update_step`` per
        variable, ``iterations += 1``, then the ``after_apply`` hooks."""
        inner = self.inner
        learning_rate = inner.learning_rate
        decay = inner.weight_decay

        def update(variable, grad, scale):
            before = None if scale is None else tf.identity(variable)
            # Keras' weight decay: matched on the per-device variable's name, before the step.
            if decay and _NO_DECAY.search(variable.name) is None:
                rate = tf.cast(learning_rate, variable.dtype) * tf.cast(decay, variable.dtype)
                variable.assign_sub(variable * rate)
            inner.update_step(grad, variable, learning_rate)
            if scale is not None:
                # The update (decay and step) times `scale`: the variable's learning rate is
                # `scale` times the schedule's, whatever the optimizer (Adam's step does not
                # scale with its gradient, so the gradient cannot carry it).
                variable.assign(before + tf.cast(scale, variable.dtype) * (variable - before))

        scales = self.update_scales or [(1.0, False)] * len(self.variables)
        frozen = inner.iterations < self.training.freeze_pretrained_steps
        for grad, variable, (scale, freezes) in zip(grads, self.variables, scales, strict=True):
            if freezes:
                scale = tf.where(frozen, 0.0, scale)
            elif scale == 1.0:
                scale = None
            self.strategy.extended.update(variable.value, update, args=(grad, scale), group=False)
        inner.iterations.assign_add(1)
        for hook in self.after_apply:
            hook()

    # The loop.

    def _first(self, value):
        return self.strategy.experimental_local_results(value)[0]

    def one_update(self, iterator):
        """(loss sum, count, micro-batches read, end of input) of one update: up to
        ``training.gradient_accumulation`` micro-batches from the distributed ``iterator``."""
        strategy, accumulation = self.strategy, self.training.gradient_accumulation
        if accumulation == 1:
            optional = iterator.get_next_as_optional()
            if optional.has_value():
                inputs, labels = optional.get_value()
                loss_sum, count = strategy.run(self.update_one, args=(inputs, labels))
                return (
                    self._first(loss_sum),
                    self._first(count),
                    tf.constant(1, tf.int64),
                    tf.constant(False),
                )
            return tf.constant(0.0), tf.constant(0.0), tf.constant(0, tf.int64), tf.constant(True)
        read = tf.constant(0, tf.int64)
        end = tf.constant(False)
        while read < accumulation and not end:
            optional = iterator.get_next_as_optional()
            if optional.has_value():
                inputs, labels = optional.get_value()
                strategy.run(self.accumulate, args=(inputs, labels))
                read += 1
            else:
                end = tf.constant(True)
        if read > 0:
            loss_sum, count = strategy.run(self.update_accumulated)
            return self._first(loss_sum), self._first(count), read, end
        return tf.constant(0.0), tf.constant(0.0), read, end

    def _loop(self, iterator, max_steps):
        """Up to ``max_steps`` updates (``self.loop`` is this as a ``tf.function``).

        One update reads ``training.gradient_accumulation`` micro-batches from the distributed
        ``iterator`` (fewer when the epoch ends inside it), sums their loss-sum gradients and
        counts on each replica, then all-reduces them once and applies the mean over the global
        count (examples or target tokens): N accumulated micro-batches give the update of one
        batch of their union, on one replica or many.

        Stops early at the end of the input (``end_of_input``) or after an update whose loss is
        not finite (``diverged_at``), and returns, without any host sync inside it, a dict of
        scalars: ``steps`` (int32, updates run), ``batches`` (int64, micro-batches read),
        ``loss_sum`` and ``count`` (float32, over the updates run), ``diverged_at`` (int32, the
        index within the loop of the first non-finite update, or -1) and ``end_of_input``
        (bool).
        """
        steps = tf.constant(0, tf.int32)
        batches = tf.constant(0, tf.int64)
        loss_total = tf.constant(0.0)
        count_total = tf.constant(0.0)
        diverged_at = tf.constant(-1, tf.int32)
        end = tf.constant(False)
        while steps < max_steps and not end and diverged_at < 0:
            loss_sum, count, read, end = self.one_update(iterator)
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
