"""What the pretraining tasks share: documents from plain text, split by hash, and no serving.

:class:`~transformer_tf.tasks.masked_lm.MaskedLMTask` and
:class:`~transformer_tf.tasks.denoising.DenoisingTask` read ``data.source: text``
(:mod:`transformer_tf.data.text`); their runs exist to be fine-tuned by another task, which
serves and ensembles.
"""

from __future__ import annotations

from functools import cached_property

import tensorflow as tf

from transformer_tf.data import text
from transformer_tf.errors import UserError
from transformer_tf.tasks.base import Task


class PretrainingTask(Task):
    """A task that learns from plain text: the ``train`` and ``validation`` documents, and the
    training texts a vocabulary is learned from."""

    count_unit = "tokens"
    length_keys = ("data.max_length",)
    #: The task that fine-tunes its runs (named in messages).
    fine_tuned_by = ""
    #: Nothing to export: the fine-tuned run serves.
    base_commands = ("train", "evaluate")

    @cached_property
    def _documents(self) -> tf.data.Dataset:
        return text.text_documents(self.config.data.paths)

    def documents(self, split: str) -> tf.data.Dataset:
        """The documents of ``split`` (``train`` or ``validation``), scalar tf.string."""
        data = self.config.data
        return self._documents.filter(
            lambda doc: text.in_split(doc, split, data.validation_fraction, data.split_seed)
        )

    def training_texts(self, limit: int | None) -> list[str]:
        """The first ``limit`` (None: all) training documents, for a vocabulary.

        Raises:
            UserError: there are none.
        """
        documents = self.documents("train")
        if limit is not None:
            documents = documents.take(limit)
        texts = [doc.decode("utf-8", errors="replace") for doc in documents.as_numpy_iterator()]
        if not texts:
            raise UserError(
                f"data.paths: no training documents in {', '.join(self.config.data.paths)} "
                "(every document fell into validation, or the files are empty)"
            )
        return texts

    def has_split(self, split: str) -> bool:
        return split in ("train", "validation")

    def require_split(self, split: str) -> None:
        if not self.has_split(split):
            raise UserError(f"split `{split}` is not available; splits: train, validation")

    def dataset(self, split: str, training: bool, epoch: int = 0) -> tf.data.Dataset:
        self.require_split(split)
        return self.batches(self.documents(split), training, epoch)

    def batches(self, documents: tf.data.Dataset, training: bool, epoch: int) -> tf.data.Dataset:
        """The ``(inputs, labels)`` batches of ``documents`` (see :meth:`Task.dataset`)."""
        raise NotImplementedError

    def data_options(self, *keys: str) -> dict:
        """``data.<key>`` for each of ``keys``, by name: the arguments of the
        :mod:`~transformer_tf.data.text` functions share the config's names."""
        return {key: getattr(self.config.data, key) for key in keys}

    def ensemble(self, models: list):
        raise UserError(
            f"{self.name} runs do not ensemble; fine-tune {self.fine_tuned_by} runs from them "
            "(--init-from) and ensemble those"
        )

    def serving(self, model, *, beam_size: int | None = None, n_best: int | None = None):
        raise UserError(
            f"a {self.name} run has nothing to serve: it is pretraining. Train a "
            f"{self.fine_tuned_by} config with --init-from RUN and export that run"
        )
