"""Tasks: what a run learns. Each task owns its data, vocabulary, loss and metrics, how its
models ensemble, what it serves, the scores of its outputs and the commands its runs support.

:class:`~transformer_tf.tasks.base.Task` is the interface the trainer, the evaluator, ensembles,
the exports and the CLI use (none of them branches on a task's name); :func:`make_task` picks
the implementation for ``config.task``. Its config section is the task's config class
(:mod:`transformer_tf.config.schema`). ``docs/extending.md`` says what a new task implements.
"""

from __future__ import annotations

from transformer_tf.config import Config
from transformer_tf.run import RunDir
from transformer_tf.tasks.base import Task
from transformer_tf.tasks.classification import ClassificationTask
from transformer_tf.tasks.denoising import DenoisingTask
from transformer_tf.tasks.masked_lm import MaskedLMTask
from transformer_tf.tasks.translation import TranslationTask

__all__ = [
    "ClassificationTask",
    "DenoisingTask",
    "MaskedLMTask",
    "Task",
    "TranslationTask",
    "TASKS",
    "make_task",
]

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "translation": TranslationTask,
    "masked_lm": MaskedLMTask,
    "denoising": DenoisingTask,
}


def make_task(config: Config, run: RunDir) -> Task:
    """The task object for ``config.task``, reading and writing its vocabulary in ``run``."""
    return TASKS[config.task](config, run)
