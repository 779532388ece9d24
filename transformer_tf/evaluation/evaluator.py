"""Evaluation of a model on a split: teacher-forced metrics, and decoding scores for translation.

:class:`Evaluator` serves both the validation inside training and ``transformer-tf evaluate``
(:func:`evaluate_run`), so the two report the same numbers for the same checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from transformer_tf.assembly import load_run
from transformer_tf.distribute import build_strategy, distribute_dataset
from transformer_tf.inference.ensemble import load_members
from transformer_tf.run import RunDir
from transformer_tf.tasks import Task


class Evaluator:
    """Teacher-forced evaluation of a model on a task's split, under a strategy.

    Returns the unsmoothed loss and the task's metrics, each a global sum divided by a global
    count (tokens or examples), so the numbers do not depend on the batch or replica count.

    Args:
        strategy: tf.distribute.Strategy whose scope holds the model's variables.
        model: keras.Model.
        task: Task, which supplies the split, the loss and the metrics.
    """

    def __init__(self, strategy, model, task: Task):
        self.strategy = strategy
        self.model = model
        self.task = task
        self._step = None
        self._datasets: dict[str, tf.distribute.DistributedDataset] = {}

    def _build_step(self, element_spec):
        model, task, strategy = self.model, self.task, self.strategy

        def replica_step(inputs, labels):
            logits = model(inputs, training=False)
            sums = {"loss": task.loss(labels, logits, 0.0)}
            for name, metric in task.metrics().items():
                sums[name] = metric(labels, logits)
            return sums

        def step(batch):
            inputs, labels = batch
            sums = strategy.run(replica_step, args=(inputs, labels))
            return tf.nest.map_structure(
                lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), sums
            )

        return tf.function(step, input_signature=[element_spec])

    def _dataset(self, split: str):
        """The split's distributed batches, built once: building a pipeline traces its
        functions (tens of milliseconds each validation), and evaluation data is read in the
        same order every time (no shuffling), so each ``run`` iterates the same dataset again."""
        if split not in self._datasets:
            batches = self.task.dataset(split, training=False)
            self._datasets[split] = distribute_dataset(self.strategy, batches)
        return self._datasets[split]

    def run(self, split: str) -> dict:
        """``{"loss": ..., <metric>: ...}`` over the whole split."""
        dataset = self._dataset(split)
        if self._step is None:
            self._step = self._build_step(dataset.element_spec)
        totals: dict[str, list[float]] = {}
        for batch in dataset:
            for name, (value, count) in self._step(batch).items():
                acc = totals.setdefault(name, [0.0, 0.0])
                acc[0] += float(value)
                acc[1] += float(count)
        scores = {name: value / max(count, 1.0) for name, (value, count) in totals.items()}
        return {**scores, **self.task.derived_scores(scores)}


def validation_scores(evaluator: Evaluator, split: str = "validation") -> dict:
    """What a validation during training reports: the teacher-forced metrics and, for
    translation with ``training.validation.decode``, the decoding scores."""
    scores = evaluator.run(split)
    scores.update(evaluator.task.output_scores(evaluator.model, split, validation=True))
    return scores


def evaluate_run(
    run_dir,
    *,
    split: str = "validation",
    checkpoint: str = "latest",
    average_last: int | None = None,
    overrides=(),
    beam_size: int | None = None,
    distributed: bool = False,
    ensemble: list[str] = (),
    raw_weights: bool = False,
) -> dict:
    """Score a checkpoint of a run on ``split`` (``transformer-tf evaluate``).

    Classification reports ``loss`` and ``accuracy``; translation reports ``loss``,
    ``token_accuracy`` (teacher forced, padding excluded), and from decoding ``exact_match``,
    ``bleu`` and ``chrf`` (see :func:`~transformer_tf.tasks.translation.decoding_scores`).

    Args:
        run_dir: a directory written by ``transformer-tf train`` (str, PathLike or RunDir).
        split: str, the split to score. Defaults to ``"validation"``.
        checkpoint: str, ``"latest"``, ``"best"`` or a step number.
        average_last: int or None, score the average of the last K checkpoints instead.
        overrides: ``key.path=value`` strings (data, decoding or distribute settings only).
        beam_size: int or None, overrides ``decoding.beam_size``.
        distributed: bool, evaluate under the config's strategy instead of one device.
        ensemble: more runs or checkpoints of the same task (see
            :func:`~transformer_tf.inference.ensemble.member_checkpoint`) whose probabilities are
            averaged with this run's: for translation at every step, teacher-forced and
            decoding alike; for classification the class probabilities.
        raw_weights: bool, score the raw weights of a run (and its ensemble members) that
            keeps moving averages (``training.ema_decay``) rather than the averages.

    The result says which weights were scored (``weights``: ``averaged`` or ``raw``) when the
    run keeps moving averages.
    """
    strategy = None
    if distributed:
        run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        strategy = build_strategy(run.read_config(overrides).distribute).strategy
    run = load_run(
        run_dir,
        checkpoint=checkpoint,
        average_last=average_last,
        overrides=overrides,
        strategy=strategy,
        raw_weights=raw_weights,
    )
    run.task.require_split(split)
    model = run.model
    if ensemble:
        members = load_members(run, list(ensemble), overrides, raw_weights)
        model = run.task.ensemble([run.model, *(m.model for m in members)])
    scores = Evaluator(run.strategy, model, run.task).run(split)
    scores.update(run.task.output_scores(model, split, beam_size=beam_size))
    result = {"split": split, "checkpoint": run.checkpoint, "step": run.step}
    if run.config.training.ema_decay is not None:
        result["weights"] = run.weights
    if ensemble:
        result["ensemble"] = [run.checkpoint, *(m.checkpoint for m in members)]
    return {**result, **scores}


def write_json(result: dict, path: Path) -> None:
    """Write an evaluation result as indented JSON (parent directories are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def format_table(result: dict) -> str:
    """A two-column table of the scores."""
    rows = [
        (k, f"{v:.4f}" if isinstance(v, float) else ", ".join(v) if isinstance(v, list) else str(v))
        for k, v in result.items()
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
