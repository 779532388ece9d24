"""An exponential moving average of the weights (``training.ema_decay``), as OpenNMT-tf's
``moving_average_decay``, fairseq's ``--ema-decay`` and Marian's ``--exponential-smoothing``.

After each applied update ``t`` (1, 2, ...; an update skipped for non-finite loss-scaled
gradients does not count), each average moves towards its variable::

    decay_t = min(decay, (1 + t) / (10 + t))
    average = decay_t * average + (1 - decay_t) * variable

with every average starting as its variable's initial value: the warm-up of TensorFlow's
``tf.train.ExponentialMovingAverage(decay, num_updates=t)`` that OpenNMT-tf uses, so that the
first updates, far from the random initialisation, are not drowned by it (0.18 for ``t = 1``,
0.5 at ``t = 8``, 0.9 at ``t = 80``, 0.99 at ``t = 890``; then ``decay``).

The averages and ``t`` are saved in the run's checkpoints under ``ema`` (beside the raw weights
in ``model_weights``), and :func:`restore_averages` puts them into a model's trainable variables
for evaluation, translation and export (the default when the run has ``training.ema_decay``;
``--raw-weights`` keeps the raw ones).
"""

from __future__ import annotations

import contextlib
import logging

import keras
import tensorflow as tf

__all__ = ["ExponentialMovingAverage", "checkpoint_has_averages", "restore_averages"]

log = logging.getLogger(__name__)

#: The checkpoint key of the averages (``ema/averages/<i>``) and of ``t`` (``ema/num_updates``).
CHECKPOINT_KEY = "ema"


def _distributed(variable):
    """The tf.Variable (a MirroredVariable under a MirroredStrategy) behind a Keras variable."""
    return variable.value if isinstance(variable, keras.Variable) else variable


class _Averages(tf.Module):
    """What a checkpoint holds under ``ema``: ``averages`` (a list) and ``num_updates``."""

    def __init__(self, averages, num_updates):
        super().__init__(name="ema")
        self.averages = averages
        self.num_updates = num_updates


class ExponentialMovingAverage:
    """The moving averages of ``variables`` (see the module's docstring for the formula).

    The averages are created in ``strategy``'s scope beside their variables: MirroredVariables
    under a MirroredStrategy (``ON_WRITE``, aggregation ``ONLY_FIRST_REPLICA``). Every replica
    holds the same weights after an update (one all-reduce, the same optimizer step), so
    :meth:`update`, run in the cross-replica context with ``strategy.extended.update``, keeps
    the averages equal on every replica too.

    Args:
        strategy: tf.distribute.Strategy that holds ``variables``; None: the current one.
        variables: the model's trainable variables (Keras or TensorFlow variables), in order.
        decay: float in (0, 1), ``training.ema_decay``.
    """

    def __init__(self, strategy, variables, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.strategy = strategy or tf.distribute.get_strategy()
        self.decay = float(decay)
        self._variables = [_distributed(v) for v in variables]
        with self.strategy.scope():
            averages = [
                tf.Variable(
                    tf.convert_to_tensor(variable),
                    trainable=False,
                    synchronization=tf.VariableSynchronization.ON_WRITE,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                    name="average",
                )
                for variable in self._variables
            ]
            num_updates = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_WRITE,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                name="num_updates",
            )
        # Only the averages are tracked (the model's variables are checkpointed on their own).
        self.state = _Averages(averages, num_updates)
        self.averages = self.state.averages
        self.num_updates = num_updates

    def decay_at(self, num_updates):
        """``min(decay, (1 + t) / (10 + t))`` for ``t = num_updates``, in float32."""
        t = tf.cast(num_updates, tf.float32)
        return tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + t) / (10.0 + t))

    def update(self):
        """One step of every average towards its variable's current value; ``t += 1`` first.

        Called in the cross-replica context (an ``after_apply`` hook of
        :class:`~transformer_tf.training.step.Update`), or eagerly outside any strategy.
        """
        self.num_updates.assign_add(1)
        decay = self.decay_at(self.num_updates.read_value())

        def move(average, variable, decay):
            decay = tf.cast(decay, average.dtype)
            return average.assign(decay * average + (1.0 - decay) * variable)

        for average, variable in zip(self.averages, self._variables, strict=True):
            self.strategy.extended.update(average, move, args=(variable, decay), group=False)

    def reset(self):
        """Every average set to its variable's current value, ``t`` to 0 (a run resumed from a
        checkpoint written without averages starts them there)."""
        for average, variable in zip(self.averages, self._variables, strict=True):
            average.assign(tf.convert_to_tensor(variable))
        self.num_updates.assign(0)

    @contextlib.contextmanager
    def averaged_weights(self):
        """Within the block the variables hold the averages; their raw values come back after
        it, exactly, whatever happens inside (validation during training)."""
        raw = [tf.identity(tf.convert_to_tensor(v)) for v in self._variables]
        for variable, average in zip(self._variables, self.averages, strict=True):
            variable.assign(tf.convert_to_tensor(average))
        try:
            yield
        finally:
            for variable, value in zip(self._variables, raw, strict=True):
                variable.assign(value)

    def trackables(self) -> dict:
        """``{"ema": the averages and t}``, for the training checkpoint."""
        return {CHECKPOINT_KEY: self.state}


def checkpoint_has_averages(path: str) -> bool:
    """Whether the checkpoint at prefix ``path`` holds moving averages (``ema/...``)."""
    names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    return any(name.startswith(f"{CHECKPOINT_KEY}/") for name in names)


def restore_averages(variables, path: str) -> bool:
    """Assign the moving averages saved in the checkpoint at ``path`` to ``variables`` (a
    model's trainable variables, in order); False, and nothing changed, when it holds none."""
    if not checkpoint_has_averages(path):
        return False
    variables = list(variables)
    ema = _Averages(
        [tf.Variable(tf.zeros(v.shape, v.dtype), name="average") for v in variables],
        tf.Variable(0, dtype=tf.int64, name="num_updates"),
    )
    status = tf.train.Checkpoint(**{CHECKPOINT_KEY: ema}).restore(path).expect_partial()
    status.assert_existing_objects_matched()
    for variable, average in zip(variables, ema.averages, strict=True):
        variable.assign(average)
    return True
