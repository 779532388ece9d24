"""The optimizer of a run: Adam or AdamW on the warmup schedule."""

from __future__ import annotations

import re

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


_ENCODER_LAYER = re.compile(r"^encoder/layer_(\d+)/")


def update_scales(
    paths: list[str], training: TrainingConfig, fresh: set[str] | None
) -> list[tuple[float, bool]] | None:
    """How each trainable variable's update is scaled: ``(multiplier, frozen)`` per path,
    or None when every update is the optimizer's own.

    The multiplier is ``training.pretrained_learning_rate_scale`` for a weight that came from
    another run (not in ``fresh``), times the layer-wise decay
    (``training.layer_learning_rate_decay``: ``decay ** (L - i)`` for encoder layer ``i`` of
    ``L``, ``decay ** (L + 1)`` for the embedding, 1 elsewhere). ``frozen``: a weight from
    another run, held for the first ``training.freeze_pretrained_steps`` updates.

    Args:
        paths: the trainable variables' paths in the model (``weight_path``), in order.
        training: TrainingConfig.
        fresh: the paths of the weights that did not come from another run; None: the run did
            not start from one (every weight is its own).
    """
    layers = [int(m.group(1)) for m in map(_ENCODER_LAYER.match, paths) if m]
    num_layers = max(layers) + 1 if layers else 0
    decay = training.layer_learning_rate_decay
    scales = []
    for path in paths:
        pretrained = fresh is not None and path not in fresh
        scale = training.pretrained_learning_rate_scale if pretrained else 1.0
        layer = _ENCODER_LAYER.match(path)
        if layer:
            scale *= decay ** (num_layers - int(layer.group(1)))
        elif path.startswith("embedding/"):
            scale *= decay ** (num_layers + 1)
        scales.append((scale, pretrained and training.freeze_pretrained_steps > 0))
    if all(scale == 1.0 and not frozen for scale, frozen in scales):
        return None
    return scales
