"""Training checkpoints: model, optimizer, training position and RNG state, written atomically.

Layout (see :class:`~transformer_tf.run.RunDir`)::

    checkpoints/ckpt-<step>.*       the last ``keep_checkpoints`` (tf.train.CheckpointManager)
    checkpoints/best/best-<step>.*  the best on validation

TensorFlow writes the data files first and then atomically replaces the small ``checkpoint``
state file, so a run killed mid-save still has a readable latest checkpoint. A save that fails
(a full disk, a read-only directory) raises :class:`~transformer_tf.errors.RunWriteError` naming
the checkpoint and removes what it left, and the state file still names the last complete one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from transformer_tf.run import RunDir, make_checkpoint, remove_partial_checkpoint, writing_to


class TrainingState:
    """Where the run is: everything a resumed run needs besides the model and optimizer."""

    def __init__(self):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")

    def trackables(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}


def make_training_checkpoint(model, optimizer, *trackable_groups: dict) -> tf.train.Checkpoint:
    """The model's weights, the optimizer, each ``{name: variable}`` group and the RNG state."""
    objects: dict = {"optimizer": optimizer}
    for group in trackable_groups:
        objects.update(group)
    # Keras keeps dropout RNG states as non-weight variables: saving them lets a resumed run draw
    # the same dropout masks as an uninterrupted one.
    weight_ids = {id(w) for w in model.weights}
    objects["rng"] = [v for v in model.variables if id(v) not in weight_ids]
    return make_checkpoint(model, **objects)


class CheckpointWriter:
    """The last-K and best checkpoint managers; non-chief workers write to a temporary
    directory that is removed after each save (multi-worker saving needs every worker).

    Args:
        checkpoint: tf.train.Checkpoint, what to save.
        run: RunDir, whose ``checkpoints/`` receives the chief's checkpoints.
        keep: int, how many ``ckpt-<step>`` to keep.
        is_chief: bool, whether this process writes the run directory. Defaults to True.
    """

    def __init__(self, checkpoint, run: RunDir, keep: int, is_chief: bool = True):
        self.is_chief = is_chief
        base = run.checkpoint_dir
        if not is_chief:
            base = Path(tempfile.mkdtemp(prefix="transformer_tf_worker_ckpt_"))
        self.base = base
        self.latest = tf.train.CheckpointManager(checkpoint, str(base), max_to_keep=keep)
        self.best = tf.train.CheckpointManager(
            checkpoint, str(base / RunDir.BEST_DIR), max_to_keep=1, checkpoint_name="best"
        )

    def save(self, step: int, best: bool = False) -> str:
        manager = self.best if best else self.latest
        prefix = f"{manager.directory}/{'best' if best else 'ckpt'}-{step}"
        try:
            with writing_to(f"checkpoint {Path(prefix).name}", manager.directory):
                path = manager.save(checkpoint_number=step)
        except BaseException:
            remove_partial_checkpoint(prefix)
            raise
        if not self.is_chief:
            shutil.rmtree(self.base, ignore_errors=True)
        return path

    def close(self):
        if not self.is_chief:
            shutil.rmtree(self.base, ignore_errors=True)
