"""Best-checkpoint selection and early stopping, from validation scores.

The state (best value so far, evaluations without improvement) lives in variables that the
training checkpoint saves, so a resumed run selects and stops exactly as an uninterrupted one.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from transformer_tf.config import EarlyStopping
from transformer_tf.errors import UserError


class CheckpointSelector:
    """Decides after each validation whether the checkpoint is the best and whether to stop.

    Args:
        early_stopping: EarlyStopping or None, the config's ``training.early_stopping``. None
            selects the lowest validation ``loss`` and never stops early.
    """

    def __init__(self, early_stopping: EarlyStopping | None):
        self.early_stopping = early_stopping
        self.metric = early_stopping.metric if early_stopping else "loss"
        self.mode = early_stopping.mode if early_stopping else "min"
        self.min_delta = early_stopping.min_delta if early_stopping else 0.0
        self.best_value = tf.Variable(np.nan, dtype=tf.float64, trainable=False, name="best_value")
        self.bad_evaluations = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_evals")

    def trackables(self) -> dict:
        """The variables a checkpoint must hold (names kept from the first checkpoint format)."""
        return {"best_value": self.best_value, "bad_evaluations": self.bad_evaluations}

    def update(self, scores: dict) -> tuple[bool, str | None]:
        """Record one validation: ``(is it the best so far, why to stop or None)``."""
        if self.metric not in scores:  # The config checks the name; this guards the task.
            available = ", ".join(k for k in scores if k != "step")
            raise UserError(
                f"training.early_stopping.metric `{self.metric}` is not a validation metric of "
                f"this task; available: {available}"
            )
        value = float(scores[self.metric])
        best = float(self.best_value.numpy())
        if self.mode == "min":
            improved = value < best - self.min_delta
        else:
            improved = value > best + self.min_delta
        if math.isnan(best) or improved:
            self.best_value.assign(value)
            self.bad_evaluations.assign(0)
            return True, None
        self.bad_evaluations.assign_add(1)
        stopping = self.early_stopping
        if stopping and int(self.bad_evaluations.numpy()) >= stopping.patience:
            return False, (
                f"early stopping: validation {self.metric} did not improve for "
                f"{stopping.patience} evaluations"
            )
        return False, None
