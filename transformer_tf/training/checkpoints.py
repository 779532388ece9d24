"""Checkpoints: model, optimizer, training position and RNG state, written atomically.

Layout under a run directory::

    checkpoints/ckpt-<step>.*       the last ``keep_checkpoints`` (tf.train.CheckpointManager)
    checkpoints/best/best-<step>.*  the best on validation

TensorFlow writes the data files first and then atomically replaces the small ``checkpoint``
state file, so a run killed mid-save still has a readable latest checkpoint.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from transformer_tf.errors import UserError


class TrainingState:
    """Everything a resumed run needs besides the model and optimizer."""

    def __init__(self):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.best_value = tf.Variable(np.nan, dtype=tf.float64, trainable=False, name="best_value")
        self.bad_evaluations = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_evals")

    def trackables(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_value": self.best_value,
            "bad_evaluations": self.bad_evaluations,
        }


def make_checkpoint(
    model, optimizer=None, state: TrainingState | None = None
) -> tf.train.Checkpoint:
    """A checkpoint of the model (and optimizer, state and dropout RNG state when given).

    The model is saved as the ordered list of its weights, not as an object graph: Keras 3
    keeps lists of layers (a stack's blocks) in its own tracker, which TensorFlow's checkpoint
    graph does not traverse, so ``Checkpoint(model=model)`` silently misses those weights. The
    order of ``model.weights`` is fixed by the architecture, which the run's config pins.
    """
    objects = {"model_weights": list(model.weights)}
    if optimizer is not None:
        objects["optimizer"] = optimizer
    if state is not None:
        objects.update(state.trackables())
        # Keras keeps dropout RNG states as non-weight variables: saving them lets a resumed
        # run draw the same dropout masks as an uninterrupted one.
        weight_ids = {id(w) for w in model.weights}
        objects["rng"] = [v for v in model.variables if id(v) not in weight_ids]
    return tf.train.Checkpoint(**objects)


class CheckpointWriter:
    """The last-K and best checkpoint managers; non-chief workers write to a temporary
    directory that is removed after each save (multi-worker saving needs every worker)."""

    def __init__(self, checkpoint, run_dir: Path, keep: int, is_chief: bool = True):
        self.is_chief = is_chief
        base = run_dir / "checkpoints"
        if not is_chief:
            base = Path(tempfile.mkdtemp(prefix="transformer_tf_worker_ckpt_"))
        self.base = base
        self.latest = tf.train.CheckpointManager(checkpoint, str(base), max_to_keep=keep)
        self.best = tf.train.CheckpointManager(
            checkpoint, str(base / "best"), max_to_keep=1, checkpoint_name="best"
        )

    def save(self, step: int, best: bool = False) -> str:
        manager = self.best if best else self.latest
        path = manager.save(checkpoint_number=step)
        if not self.is_chief:
            shutil.rmtree(self.base, ignore_errors=True)
        return path

    def close(self):
        if not self.is_chief:
            shutil.rmtree(self.base, ignore_errors=True)


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the kept ``ckpt-<step>`` checkpoints, oldest first."""
    state = tf.train.get_checkpoint_state(str(run_dir / "checkpoints"))
    if state is None:
        return []
    return [_step_of(p) for p in state.all_model_checkpoint_paths]


def find_checkpoint(run_dir: Path, which: str = "latest") -> str:
    """Path prefix of the ``latest``, ``best`` or ``<step>`` checkpoint of a run directory."""
    directory = run_dir / "checkpoints"
    if which == "latest":
        path = tf.train.latest_checkpoint(str(directory))
    elif which == "best":
        path = tf.train.latest_checkpoint(str(directory / "best"))
    elif re.fullmatch(r"\d+", which):
        path = str(directory / f"ckpt-{which}")
        if not tf.io.gfile.exists(path + ".index"):
            kept = ", ".join(map(str, checkpoint_steps(run_dir))) or "none"
            raise UserError(f"no checkpoint at step {which} in {directory} (kept steps: {kept})")
    else:
        raise UserError(f"--checkpoint must be latest, best or a step number, got `{which}`")
    if not path:
        raise UserError(f"no {which} checkpoint in {directory}: train first (transformer-tf train)")
    return path


def restore_model(model, path: str) -> None:
    """Load only the model weights from a training checkpoint."""
    status = make_checkpoint(model).restore(path).expect_partial()
    status.assert_existing_objects_matched()


def average_checkpoints(model, run_dir: Path, last: int) -> list[int]:
    """Set the model's weights to the mean of the last ``last`` checkpoints; returns their steps.

    Averaging the final checkpoints of a run is a cheap ensemble that usually adds BLEU.
    """
    steps = checkpoint_steps(run_dir)
    if last < 1:
        raise UserError("--average-last must be at least 1")
    if len(steps) < last:
        raise UserError(
            f"--average-last {last} needs {last} checkpoints, but {run_dir / 'checkpoints'} keeps "
            f"{len(steps)} (steps {', '.join(map(str, steps)) or 'none'}); raise "
            "training.keep_checkpoints for future runs"
        )
    chosen = steps[-last:]
    total = [np.zeros(w.shape, "float64") for w in model.weights]
    for step in chosen:
        restore_model(model, str(run_dir / "checkpoints" / f"ckpt-{step}"))
        for acc, weight in zip(total, model.weights, strict=True):
            acc += np.asarray(weight.numpy(), "float64")
    for acc, weight in zip(total, model.weights, strict=True):
        weight.assign((acc / len(chosen)).astype(weight.dtype))
    return chosen


def _step_of(path: str) -> int:
    return int(path.rsplit("-", 1)[-1])
