"""The optimizer of a run: Adam or AdamW on the warmup schedule."""

from __future__ import annotations

import keras

from transformer_tf.config import TrainingConfig
from transformer_tf.training.schedules import WarmupSchedule

# Variables whose names contain one of these get no weight decay: biases, norms, position tables.
NO_WEIGHT_DECAY = ("bias", "gamma", "beta", "position")


def make_optimizer(
    training: TrainingConfig, total_steps: int | None, loss_scale: bool = False
) -> keras.optimizers.Optimizer:
    """Adam or AdamW on the warmup schedule, with dynamic loss scaling for ``mixed_float16``.

    Gradient clipping and accumulation are the update's (:mod:`.step`: one all-reduce per
    update, then the clip on the global gradient), so neither is set here. The schedule counts
    ``optimizer.iterations``: updates, whatever ``training.gradient_accumulation``.

    Args:
        training: TrainingConfig, the ``training:`` section.
        total_steps: int or None, the run's length (cosine decay needs it).
        loss_scale: bool, wrap it in a ``LossScaleOptimizer`` (the model computes in
            float16: ``training.mixed_precision`` resolved to ``mixed_float16``).
    """
    schedule = WarmupSchedule(
        training.learning_rate,
        warmup_steps=training.warmup_steps,
        decay=training.schedule,
        total_steps=total_steps,
    )
    kwargs = dict(
        learning_rate=schedule,
        beta_1=training.beta_1,
        beta_2=training.beta_2,
        epsilon=training.epsilon,
    )
    if training.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(weight_decay=training.weight_decay, **kwargs)
        # Decay matrices only: not biases, norms or position tables.
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    else:
        optimizer = keras.optimizers.Adam(**kwargs)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
