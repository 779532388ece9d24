"""Reload a run directory and score any of its checkpoints (``transformer-tf evaluate``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from transformer_tf.config import Config, load_config, model_affecting_differences
from transformer_tf.errors import UserError
from transformer_tf.models import build_model
from transformer_tf.training.checkpoints import average_checkpoints, find_checkpoint, restore_model
from transformer_tf.training.engine import CONFIG_FILE, Evaluator, apply_precision_policy
from transformer_tf.training.strategy import build_strategy
from transformer_tf.training.tasks import Task, make_task


@dataclass
class LoadedRun:
    config: Config
    task: Task
    model: object
    strategy: tf.distribute.Strategy
    checkpoint: str  # what was loaded: a checkpoint path, or "average of steps ..."
    step: int | None


def load_run(
    run_dir: Path,
    *,
    checkpoint: str = "latest",
    average_last: int | None = None,
    overrides=(),
    distributed: bool = False,
) -> LoadedRun:
    """The config, task (with its vocabulary) and model of a run directory, from a checkpoint.

    Args:
        run_dir: a directory written by ``transformer-tf train``.
        checkpoint: ``"latest"``, ``"best"`` or a step number.
        average_last: average the weights of the last K checkpoints instead.
        overrides: ``key.path=value`` strings; they may repoint data, decoding or distribute
            settings, never change the model.
        distributed: build the model under the config's strategy instead of one device.
    """
    run_dir = Path(run_dir)
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        raise UserError(f"{run_dir} is not a run directory: it has no {CONFIG_FILE}")
    config = load_config(saved, overrides)
    if overrides:
        changed = model_affecting_differences(load_config(saved), config)
        if changed:
            raise UserError(
                f"--set cannot change the model of a trained run ({', '.join(changed)}); "
                "only data, decoding and distribute settings may be overridden"
            )
    apply_precision_policy(config.training.mixed_precision)
    strategy = (
        build_strategy(config.distribute).strategy if distributed else tf.distribute.get_strategy()
    )
    task = make_task(config, run_dir)
    task.prepare(create=False)
    with strategy.scope():
        model = build_model(config.model.name, **task.model_kwargs())
        model.build()
    if average_last:
        steps = average_checkpoints(model, run_dir, average_last)
        loaded, step = f"average of steps {', '.join(map(str, steps))}", steps[-1]
    else:
        loaded = find_checkpoint(run_dir, checkpoint)
        restore_model(model, loaded)
        step = int(loaded.rsplit("-", 1)[-1])
    return LoadedRun(config, task, model, strategy, loaded, step)


def evaluate_run(
    run_dir: Path,
    *,
    split: str = "validation",
    checkpoint: str = "latest",
    average_last: int | None = None,
    overrides=(),
    beam_size: int | None = None,
    distributed: bool = False,
) -> dict:
    """Score a checkpoint of a run on ``split``.

    Classification reports ``loss`` and ``accuracy``; translation reports ``loss``,
    ``token_accuracy`` (teacher forced, padding excluded), and from decoding ``exact_match``,
    ``bleu`` and ``chrf`` (sacreBLEU, detokenized).
    """
    run = load_run(
        run_dir,
        checkpoint=checkpoint,
        average_last=average_last,
        overrides=overrides,
        distributed=distributed,
    )
    if not run.task.has_split(split):
        raise UserError(
            f"split `{split}` is not available for this run; point it at data with "
            f"--set (for example --set data.splits.{split}.source=FILE for parallel text)"
        )
    scores = Evaluator(run.strategy, run.model, run.task).run(split)
    options = {}
    if beam_size is not None:
        options["beam_size"] = beam_size
    scores.update(run.task.evaluate_extra(run.model, split, **options))
    return {"split": split, "checkpoint": run.checkpoint, "step": run.step, **scores}


def write_json(result: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def format_table(result: dict) -> str:
    """A two-column table of the scores."""
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in result.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
