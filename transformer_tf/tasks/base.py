"""The task interface: what a run learns. Each task owns its data, vocabulary, loss and metrics.

A task turns the config's ``data`` section into tf.data pipelines of ``(inputs, labels)``
batches, loads or builds the vocabulary in the run directory, and says what the model needs
from the data (vocabulary sizes, the longest sequence). The trainer and the evaluator only call
the methods of :class:`Task`.
"""

from __future__ import annotations

import tensorflow as tf

from transformer_tf.config import Config
from transformer_tf.run import RunDir


class Task:
    """Interface between a config's task and the engine.

    Args:
        config: Config, the validated run config.
        run: RunDir, where the vocabulary lives.
    """

    #: The config's ``task`` value.
    name = ""
    #: What the loss is averaged over: ``"tokens"`` or ``"examples"``.
    count_unit = "examples"

    def __init__(self, config: Config, run: RunDir):
        self.config = config
        self.run = run

    def prepare(self, create: bool = False, write: bool = True) -> None:
        """Load the vocabulary from the run directory; build it from training data when it is
        missing and ``create`` (and save it when ``write``)."""
        raise NotImplementedError

    def vocabulary_args(self) -> dict:
        """The model's vocabulary-size arguments (after :meth:`prepare`)."""
        raise NotImplementedError

    #: The config keys that :meth:`positions_needed` follows from (named in errors).
    length_keys: tuple[str, ...] = ()

    def positions_needed(self) -> int:
        """The longest sequence the model must embed for this config's data (and decoding)."""
        raise NotImplementedError

    def has_split(self, split: str) -> bool:
        raise NotImplementedError

    def dataset(self, split: str, training: bool, epoch: int = 0) -> tf.data.Dataset:
        raise NotImplementedError

    def train_batches_per_epoch(self) -> int:
        return int(self.dataset("train", training=True).reduce(0, lambda n, _: n + 1))

    def loss(self, labels, logits, label_smoothing: float):
        """``(loss sum, count)`` of a batch."""
        raise NotImplementedError

    def metrics(self) -> dict:
        """Teacher-forced metrics: name -> function ``(labels, logits) -> (sum, count)``."""
        return {}
