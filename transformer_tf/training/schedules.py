"""Learning-rate schedules (Keras ``LearningRateSchedule``s, serializable)."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="transformer_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to ``learning_rate``, then a decay.

    - ``decay="inverse_sqrt"``: ``lr * min(step / warmup, sqrt(warmup / step))``, the schedule of
      Vaswani et al. (2017) with ``learning_rate`` as its peak (reached at ``warmup_steps``).
    - ``decay="cosine"``: cosine from the peak to ``alpha * lr`` at ``total_steps``.
    - ``decay="constant"``: stays at the peak.

    Args:
        learning_rate: float, the peak rate.
        warmup_steps: int, steps of linear warmup (0: none).
        decay: str, ``"inverse_sqrt"``, ``"cosine"`` or ``"constant"``.
        total_steps: int, the length of the cosine decay (needed by ``"cosine"``).
        alpha: float, the final fraction of the peak for ``"cosine"``. Defaults to 0.

    The step is the optimizer's iteration count, so a resumed run continues at the right rate.
    """

    def __init__(
        self,
        learning_rate: float,
        warmup_steps: int = 0,
        decay: str = "inverse_sqrt",
        total_steps: int | None = None,
        alpha: float = 0.0,
    ):
        if decay not in ("inverse_sqrt", "cosine", "constant"):
            raise ValueError(f"unknown decay {decay!r}")
        if decay == "cosine" and not total_steps:
            raise ValueError("the cosine schedule needs total_steps (set training.steps or epochs)")
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.decay = decay
        self.total_steps = total_steps
        self.alpha = alpha

    def __call__(self, step):
        # Step 0 would give a zero rate during warmup: count steps from 1.
        step = ops.cast(step, "float32") + 1.0
        peak = ops.cast(self.learning_rate, "float32")
        warmup = float(max(self.warmup_steps, 1))
        warm = ops.minimum(step / warmup, 1.0) if self.warmup_steps else 1.0
        if self.decay == "inverse_sqrt":
            decayed = ops.minimum(1.0, ops.sqrt(warmup / step))
        elif self.decay == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
            decayed = self.alpha + (1.0 - self.alpha) * cosine
        else:
            decayed = 1.0
        return peak * warm * decayed

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "total_steps": self.total_steps,
            "alpha": self.alpha,
        }
