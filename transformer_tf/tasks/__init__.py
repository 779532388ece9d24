"""Tasks: what a run learns. Each task owns its data, vocabulary, loss and metrics.

:class:`~transformer_tf.tasks.base.Task` is the interface the trainer and the evaluator use;
:func:`make_task` picks the implementation for ``config.task``.
"""

from __future__ import annotations

from transformer_tf.config import Config
from transformer_tf.run import RunDir
from transformer_tf.tasks.base import Task
from transformer_tf.tasks.classification import ClassificationTask
from transformer_tf.tasks.translation import TranslationTask

__all__ = ["ClassificationTask", "Task", "TranslationTask", "TASKS", "make_task"]

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "translation": TranslationTask,
}


def make_task(config: Config, run: RunDir) -> Task:
    """The task object for ``config.task``, reading and writing its vocabulary in ``run``."""
    return TASKS[config.task](config, run)
