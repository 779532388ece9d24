"""The task interface: what a run learns. Each task owns its data, vocabulary, loss and metrics.

A task turns the config's ``data`` section into tf.data pipelines of ``(inputs, labels)``
batches, loads or builds the vocabulary in the run directory, and says what the model needs
from the data (vocabulary sizes, the longest sequence). The trainer and the evaluator only call
the methods of :class:`Task`.
"""

from __future__ import annotations

import tensorflow as tf

from transformer_tf.config import Config
from transformer_tf.errors import UserError
from transformer_tf.run import RunDir


def per_replica_batch_size(global_batch_size: int, num_replicas: int) -> int:
    """The batch size of one replica: ``global_batch_size // num_replicas``, at least 1.

    A global batch is the union of one batch per replica, so it holds ``global_batch_size``
    examples (or tokens) when ``num_replicas`` divides it, else slightly fewer.
    """
    return max(1, global_batch_size // max(1, num_replicas))


class Task:
    """Interface between a config's task and the engine.

    Args:
        config: Config, the validated run config.
        run: RunDir, where the vocabulary lives.
    """

    #: The config's ``task`` value.
    name = ""
    #: The other tasks whose runs a run of this task can start from (``train --init-from``):
    #: it takes the weights both models have (a classifier takes a masked LM's embedding and
    #: encoder) and maps the vocabulary by token; its own weights (the head) start fresh.
    starts_from: frozenset[str] = frozenset()
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

    def tokenizers(self) -> dict:
        """The task's tokenizers by side (after :meth:`prepare`): translation's ``source`` and
        ``target``, classification's ``review``. Ensembles compare them member by member."""
        raise NotImplementedError

    def ensemble(self, models: list):
        """One model that averages the probabilities of ``models`` (runs of this task with the
        same vocabularies), usable wherever one of them is (``evaluate --ensemble``)."""
        raise NotImplementedError

    def serving(self, model, *, beam_size: int | None = None, n_best: int | None = None):
        """What ``transformer-tf export`` saves: a
        :class:`~transformer_tf.inference.serving.Serving` whose module's ``serve(text)`` does
        the task's whole inference in graph. ``beam_size`` and ``n_best`` are the export's
        flags (tasks that do not decode ignore them with a warning)."""
        raise NotImplementedError

    def output_scores(
        self, model, split: str, *, validation: bool = False, beam_size: int | None = None
    ) -> dict:
        """Scores of the model's own outputs on ``split`` beyond the teacher-forced
        :meth:`metrics` (translation decodes and reports BLEU, chrF and exact match);
        ``validation``: as set for validations during training. Nothing (``{}``) by default."""
        return {}

    #: The commands beyond ``train``, ``evaluate`` and ``export`` that the task's runs support:
    #: ``translate``, ``score`` and ``export --format ctranslate2`` for a task whose model
    #: generates text with the search.
    commands: frozenset[str] = frozenset()

    #: The commands every run of the task supports.
    base_commands: tuple[str, ...] = ("train", "evaluate", "export")

    def require_command(self, command: str, run_name: str) -> None:
        """Raise a UserError unless the task's runs support ``command``."""
        if command not in self.commands:
            own = ", ".join([*self.base_commands, *sorted(self.commands)])
            raise UserError(
                f"{run_name} is a {self.name} run; {command} is not a command for {self.name} "
                f"runs (they support: {own}). {command} needs a run of a task that generates "
                "text, such as translation"
            )

    def vocabularies(self) -> dict[str, list[str]]:
        """The tokens by id of each vocabulary the model indexes (after :meth:`prepare`),
        keyed as the model's ``vocabulary_weights`` name them (``"source"``, ``"target"``)."""
        raise NotImplementedError

    def initialize_model(self, model) -> None:
        """Set the weights of a new model that come from the training data (after
        :meth:`prepare`), before its first update; a resumed run then restores them with the
        rest from its checkpoint. Nothing by default."""

    #: The config keys that :meth:`positions_needed` follows from (named in errors).
    length_keys: tuple[str, ...] = ()

    def positions_needed(self) -> int:
        """The longest sequence the model must embed for this config's data (and decoding)."""
        raise NotImplementedError

    #: Whether non-chief workers wait for the vocabulary the chief writes (rather than build
    #: their own); see :func:`transformer_tf.assembly.assemble`.
    vocabulary_from_chief = False
    #: Whether :meth:`dataset` takes an ``input_context`` (each worker reads only its part).
    shards_input = False

    def vocabulary_ready(self) -> bool:
        """Whether the run directory holds a complete vocabulary (:meth:`prepare` can load it
        without building one)."""
        return False

    def has_split(self, split: str) -> bool:
        raise NotImplementedError

    def require_split(self, split: str) -> None:
        """Raise a UserError saying how to give the run data unless it has ``split``."""
        if not self.has_split(split):
            raise UserError(
                f"split `{split}` is not available for this run; point it at data with "
                f"--set (for example --set data.splits.{split}.source=FILE for parallel text)"
            )

    def dataset(
        self,
        split: str,
        training: bool,
        epoch: int = 0,
        input_context: tf.distribute.InputContext | None = None,
    ) -> tf.data.Dataset:
        """Batches ``(inputs, labels)`` of ``split``: shuffled (epoch ``epoch``) for training.

        Args:
            split: str, a split name.
            training: bool, training order and filtering (else evaluation: every example).
            epoch: int, mixed into the shuffling seeds. Defaults to 0.
            input_context: tf.distribute.InputContext | None, one input pipeline of several:
                read only its part, in per-replica batches. Tasks that cannot shard ignore it
                only if they are never distributed by function. Defaults to None (global
                batches of the whole split).
        """
        raise NotImplementedError

    def train_batches_per_epoch(self) -> int:
        return int(self.dataset("train", training=True).reduce(0, lambda n, _: n + 1))

    def log_fields(self) -> dict:
        """Numbers of the input pipeline for the training log (name -> float), such as each
        corpus's share of the examples drawn from a weighted mixture. Nothing by default."""
        return {}

    def probe_batch(self, tokens: int):
        """``(inputs, labels)``, the worst-case training batch of a token budget of ``tokens``
        (one replica's): every example as long as the data allows, as many as the budget gives
        a bucket of that length, built with TensorFlow ops (called inside a replica function).
        What ``training.batch_size: auto`` tries on the devices
        (:class:`~transformer_tf.training.batch_size.MemoryProbe`)."""
        raise NotImplementedError

    def loss(self, labels, logits, label_smoothing: float):
        """``(loss sum, count)`` of a batch."""
        raise NotImplementedError

    def metrics(self) -> dict:
        """Teacher-forced metrics: name -> function ``(labels, logits) -> (sum, count)``."""
        return {}

    def derived_scores(self, scores: dict) -> dict:
        """Scores computed from the averaged loss and :meth:`metrics` of an evaluation (a
        masked LM's perplexity, exp of its loss), added to them. Nothing (``{}``) by default."""
        return {}
