"""One training engine for every placement: CPU, GPUs, several hosts, TPU.

The loop is ``strategy.run`` inside a ``tf.function`` (not ``Model.fit``, which fails under
MultiWorkerMirroredStrategy in Keras 3). Losses are sums divided by the global count of
examples or target tokens, so a run gives the same updates on one replica or on many.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from transformer_tf.config import Config, model_affecting_differences, save_config
from transformer_tf.errors import UserError
from transformer_tf.models import build_model
from transformer_tf.training.checkpoints import (
    CheckpointWriter,
    TrainingState,
    make_checkpoint,
)
from transformer_tf.training.schedules import WarmupSchedule
from transformer_tf.training.strategy import Placement, build_strategy

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class WorkerLostError(RuntimeError):
    """Another worker of a multi-worker run stopped; this one stops too (no hanging)."""


# What collective operations raise when a peer worker dies or stops answering.
_PEER_FAILURES = (
    tf.errors.UnavailableError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.DeadlineExceededError,
    tf.errors.InternalError,
)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    stop_reason: str
    train_loss: float | None = None
    validation: list[dict] = field(default_factory=list)
    weights_checksum: float | None = None  # sum of |w| over all weights: compares workers


def apply_precision_policy(mixed_precision: str) -> None:
    keras.config.set_dtype_policy("float32" if mixed_precision == "none" else mixed_precision)


def make_optimizer(training, total_steps: int | None):
    """Adam or AdamW on the warmup schedule, with loss scaling under ``mixed_float16``.

    Gradient clipping is done by the engine after the cross-replica reduction (Keras clips per
    replica, before it), so it is not set here.
    """
    schedule = WarmupSchedule(
        training.learning_rate,
        warmup_steps=training.warmup_steps,
        decay=training.schedule,
        total_steps=total_steps,
    )
    kwargs = dict(
        learning_rate=schedule,
        beta_1=training.beta_1,
        beta_2=training.beta_2,
        epsilon=training.epsilon,
        gradient_accumulation_steps=(
            training.gradient_accumulation if training.gradient_accumulation > 1 else None
        ),
    )
    if training.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(weight_decay=training.weight_decay, **kwargs)
        # Decay matrices only: not biases, norms or position tables.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "position"])
    else:
        optimizer = keras.optimizers.Adam(**kwargs)
    if training.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def check_run_dir(config: Config, run_dir: Path) -> bool:
    """Refuse a run directory made for another model; True if it holds a run to resume."""
    saved = run_dir / CONFIG_FILE
    if not saved.exists():
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UserError(
                f"run directory {run_dir} is not empty and has no {CONFIG_FILE}: it is not a "
                "transformer_tf run; choose another --run-dir"
            )
        return False
    import yaml

    from transformer_tf.config import load_config

    # Compare plugins before loading the saved config, which would import its plugins: a
    # plugin module of the same name from another path is a different model, not a clash.
    saved_plugins = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("plugins") or []
    if list(saved_plugins) != list(config.plugins):
        raise UserError(
            f"run directory {run_dir} was trained with plugins {saved_plugins}, this config "
            f"imports {list(config.plugins)}; resuming would mix two models. Use a new "
            "--run-dir, or the same plugin files."
        )
    old = load_config(saved)
    differences = model_affecting_differences(old, config)
    if differences:
        listed = ", ".join(differences)
        raise UserError(
            f"run directory {run_dir} holds a run with a different model or vocabulary "
            f"({listed} differ from {saved}); resuming it would mix two models. Use a new "
            "--run-dir, or restore those values."
        )
    return True


def distribute_dataset(strategy, dataset):
    """Split each global batch across the replicas of ``strategy``."""
    options = tf.data.Options()
    # Batches are already global: every worker reads all files and takes its share of each
    # batch, which keeps workers in lock step whatever the number of files.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


class Evaluator:
    """Teacher-forced evaluation of a model on a task's split, under a strategy.

    Returns the unsmoothed loss and the task's metrics, each a global sum divided by a global
    count (tokens or examples), so the numbers do not depend on the batch or replica count.
    """

    def __init__(self, strategy, model, task):
        self.strategy = strategy
        self.model = model
        self.task = task
        self._step = None

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

    def run(self, split: str) -> dict:
        dataset = distribute_dataset(self.strategy, self.task.dataset(split, training=False))
        if self._step is None:
            self._step = self._build_step(dataset.element_spec)
        totals: dict[str, list[float]] = {}
        for batch in dataset:
            for name, (value, count) in self._step(batch).items():
                acc = totals.setdefault(name, [0.0, 0.0])
                acc[0] += float(value)
                acc[1] += float(count)
        return {name: value / max(count, 1.0) for name, (value, count) in totals.items()}


class Trainer:
    """Trains ``config`` in ``run_dir``; resumes from the latest checkpoint there.

    Args:
        config: the validated :class:`~transformer_tf.config.Config`.
        run_dir: where the resolved config, vocabularies, checkpoints and logs live.
        placement: the strategy; built from ``config.distribute`` when None.
        task: the task object; built from ``config.task`` when None.
        show_progress: draw a progress bar (chief only).
    """

    def __init__(
        self, config: Config, run_dir: Path, *, placement=None, task=None, show_progress=True
    ):
        from transformer_tf.training.tasks import make_task

        self.config = config
        self.run_dir = Path(run_dir)
        # The strategy first: multi-worker collectives must be set up before other TF work.
        self.placement: Placement = placement or build_strategy(config.distribute)
        self.strategy = self.placement.strategy
        self.is_chief = self.placement.is_chief
        # Only the chief judges (and writes) the run directory; other workers would race it.
        if self.is_chief:
            check_run_dir(config, self.run_dir)
        self.show_progress = show_progress and self.is_chief
        training = config.training
        keras.utils.set_random_seed(training.seed)
        apply_precision_policy(training.mixed_precision)

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.task = task or make_task(config, self.run_dir)
        self.task.prepare(create=True, write=self.is_chief)

        total_steps = training.steps
        if training.epochs is not None:
            epoch_steps = training.epochs * self.task.train_batches_per_epoch()
            total_steps = min(total_steps or epoch_steps, epoch_steps)
        self.total_steps = total_steps

        with self.strategy.scope():
            self.model = build_model(config.model.name, **self.task.model_kwargs())
            self.model.build()
            self.optimizer = make_optimizer(training, total_steps)
            self.optimizer.build(self.model.trainable_variables)
            self.state = TrainingState()
        # Written once the model builds: a config whose layers do not fit leaves no record.
        if self.is_chief:
            save_config(config, self.run_dir / CONFIG_FILE)
        self.checkpoint = make_checkpoint(self.model, self.optimizer, self.state)
        self.writer = CheckpointWriter(
            self.checkpoint, self.run_dir, training.keep_checkpoints, self.is_chief
        )
        latest = tf.train.latest_checkpoint(str(self.run_dir / "checkpoints"))
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            log.info("resumed from %s at step %d", latest, int(self.state.step.numpy()))
        self._train_step = None
        self.evaluator = Evaluator(self.strategy, self.model, self.task)
        self.summary_writer = (
            tf.summary.create_file_writer(str(self.run_dir / "logs" / "train"))
            if self.is_chief
            else tf.summary.create_noop_writer()
        )
        self.validation_writer = (
            tf.summary.create_file_writer(str(self.run_dir / "logs" / "validation"))
            if self.is_chief
            else tf.summary.create_noop_writer()
        )

    # -- the compiled steps -------------------------------------------------------------------

    def _build_train_step(self, element_spec):
        model, optimizer, task = self.model, self.optimizer, self.task
        training = self.config.training
        num_replicas = self.strategy.num_replicas_in_sync
        loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        def forward_backward(inputs, labels):
            # No collectives in here, so XLA can compile it (training.jit_compile).
            with tf.GradientTape() as tape:
                logits = model(inputs, training=True)
                loss_sum, count = task.loss(labels, logits, training.label_smoothing)
                scaled = optimizer.scale_loss(loss_sum) if loss_scaled else loss_sum
            variables = model.trainable_variables
            grads = tape.gradient(scaled, variables)
            # Dense gradients: an embedding's IndexedSlices from several replicas concatenate in
            # the all-reduce, and the optimizer's sparse path then treats rows seen by both
            # replicas differently from one replica's slices.
            grads = [
                tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                for g, v in zip(grads, variables, strict=True)
            ]
            return loss_sum, count, grads

        if training.jit_compile:
            forward_backward = tf.function(forward_backward, jit_compile=True)

        def replica_step(inputs, labels):
            context = tf.distribute.get_replica_context()
            loss_sum, count, grads = forward_backward(inputs, labels)
            # The gradient of the loss sum, over the global count: the mean over every example
            # (or target token) of every replica, whatever the split.
            global_count = tf.maximum(context.all_reduce(tf.distribute.ReduceOp.SUM, count), 1.0)
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            grads = [g / global_count for g in grads]
            if training.clip_norm:
                # Clipping sees the global norm (Keras would clip each replica's part).
                scale = optimizer.dynamic_scale if loss_scaled else 1.0
                grads, _ = tf.clip_by_global_norm(grads, training.clip_norm * scale)
            if num_replicas > 1:
                # Every replica holds the full gradient; the optimizer's own SUM all-reduce
                # would multiply it by the replica count.
                grads = [g / num_replicas for g in grads]
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss_sum, count

        def step(batch):
            inputs, labels = batch
            loss_sum, count = self.strategy.run(replica_step, args=(inputs, labels))
            loss_sum = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss_sum, axis=None)
            count = self.strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None)
            return loss_sum, count

        return tf.function(step, input_signature=[element_spec])

    # -- evaluation --------------------------------------------------------------------------

    def evaluate_split(self, split: str) -> dict:
        """Unsmoothed loss and the task's metrics on ``split`` (teacher forcing)."""
        return self.evaluator.run(split)

    # -- the loop ----------------------------------------------------------------------------

    def train(self) -> TrainResult:
        training = self.config.training
        state = self.state
        step = int(state.step.numpy())
        epoch = int(state.epoch.numpy())
        selection_metric, selection_mode = self._selection()
        result = TrainResult(self.run_dir, step, epoch, "completed")
        if self.total_steps is not None and step >= self.total_steps:
            result.stop_reason = "already complete"
            return result

        progress = tqdm(
            total=self.total_steps,
            initial=step,
            disable=not self.show_progress,
            unit="step",
            dynamic_ncols=True,
        )
        window_loss, window_count, window_start = 0.0, 0.0, time.perf_counter()
        stop = None
        last_saved = step
        try:
            while stop is None:
                skip = int(state.batch_in_epoch.numpy())
                dataset = self.task.dataset("train", training=True, epoch=epoch).skip(skip)
                distributed = distribute_dataset(self.strategy, dataset)
                if self._train_step is None:
                    self._train_step = self._build_train_step(distributed.element_spec)
                for batch in distributed:
                    loss_sum, count = self._train_step(batch)
                    loss_sum, count = float(loss_sum), float(count)
                    step += 1
                    state.step.assign(step)
                    state.batch_in_epoch.assign_add(1)
                    loss = loss_sum / max(count, 1.0)
                    if not math.isfinite(loss):
                        raise TrainingDivergedError(self._diverged_message(step, loss, last_saved))
                    window_loss += loss_sum
                    window_count += count
                    progress.update(1)
                    if step % training.log_every == 0 or step == self.total_steps:
                        result.train_loss = self._log_train(
                            step,
                            progress,
                            window_loss,
                            window_count,
                            time.perf_counter() - window_start,
                        )
                        window_loss, window_count, window_start = 0.0, 0.0, time.perf_counter()
                    if step % training.checkpoint_every == 0:
                        self.writer.save(step)
                        last_saved = step
                    if training.eval_every and step % training.eval_every == 0:
                        stop = self._validate(step, result, selection_metric, selection_mode)
                        if stop:
                            break
                    if self.total_steps is not None and step >= self.total_steps:
                        stop = "completed"
                        break
                else:
                    epoch += 1
                    state.epoch.assign(epoch)
                    state.batch_in_epoch.assign(0)
                    if not training.eval_every:
                        stop = self._validate(step, result, selection_metric, selection_mode)
                    if stop is None and training.epochs is not None and epoch >= training.epochs:
                        stop = "completed"
            # The step budget usually ends mid-loop (with `epochs`, on the last batch of the
            # last epoch): validate the final weights too, so `best` can be the last step.
            if stop == "completed" and (
                not result.validation or result.validation[-1]["step"] != step
            ):
                self._validate(step, result, selection_metric, selection_mode)
            if last_saved != step:
                self.writer.save(step)
        except _PEER_FAILURES as error:
            if self.placement.kind != "multi_worker":
                raise
            first_line = str(error).strip().splitlines()[0]
            raise WorkerLostError(
                f"another worker stopped during step {step + 1} ({first_line}). Restart every "
                f"worker with the same command to resume from the last checkpoint (step "
                f"{last_saved})."
            ) from error
        finally:
            progress.close()
            self.summary_writer.flush()
        if self.is_chief:
            self.model.save(self.run_dir / "model.keras")
        self.writer.close()
        result.step, result.epoch, result.stop_reason = step, epoch, stop
        result.weights_checksum = float(
            sum(np.abs(np.asarray(w.numpy(), "float64")).sum() for w in self.model.weights)
        )
        log.info("final weights checksum: %.12e", result.weights_checksum)
        return result

    def _selection(self) -> tuple[str, str]:
        stopping = self.config.training.early_stopping
        if stopping is not None:
            return stopping.metric, stopping.mode
        return "loss", "min"

    def _log_train(self, step, progress, loss_sum, count, seconds) -> float:
        loss = loss_sum / max(count, 1.0)
        learning_rate = float(self.optimizer.learning_rate)
        rate = count / max(seconds, 1e-9)
        unit = self.task.count_unit  # "tokens" or "examples"
        progress.set_postfix(
            loss=f"{loss:.4f}", lr=f"{learning_rate:.2e}", **{f"{unit}/s": f"{rate:.0f}"}
        )
        with self.summary_writer.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar(f"{unit}_per_second", rate)
        if self.is_chief:
            with open(self.run_dir / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(
                    json.dumps(
                        {
                            "step": step,
                            "loss": loss,
                            "learning_rate": learning_rate,
                            f"{unit}_per_second": rate,
                        }
                    )
                    + "\n"
                )
        return loss

    def _validate(self, step, result, metric, mode) -> str | None:
        if not self.task.has_split("validation"):
            return None
        scores = self.evaluate_split("validation")
        scores.update(self.task.extra_validation_metrics(self.model))
        scores["step"] = step
        result.validation.append(scores)
        with self.validation_writer.as_default(step=step):
            for name, value in scores.items():
                if name != "step":
                    tf.summary.scalar(name, value)
        if self.is_chief:
            with open(self.run_dir / "validation_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(scores) + "\n")
        if self.show_progress:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in scores.items() if k != "step")
            tqdm.write(f"validation at step {step}: {shown}")
        if metric not in scores:
            raise UserError(
                f"training.early_stopping.metric `{metric}` is not a validation metric of this "
                f"task; available: {', '.join(k for k in scores if k != 'step')}"
            )
        value = scores[metric]
        best = float(self.state.best_value.numpy())
        stopping = self.config.training.early_stopping
        min_delta = stopping.min_delta if stopping else 0.0
        improved = math.isnan(best) or (
            value < best - min_delta if mode == "min" else value > best + min_delta
        )
        if improved:
            self.state.best_value.assign(value)
            self.state.bad_evaluations.assign(0)
            self.writer.save(step, best=True)
            return None
        self.state.bad_evaluations.assign_add(1)
        if stopping and int(self.state.bad_evaluations.numpy()) >= stopping.patience:
            return f"early stopping: validation {metric} did not improve for {stopping.patience} evaluations"
        return None

    def _diverged_message(self, step, loss, last_saved) -> str:
        kept = (
            f"the last good checkpoint (step {last_saved}) is kept"
            if last_saved
            else "no checkpoint was written yet"
        )
        return (
            f"training loss became {loss} at step {step}; stopping. {kept}. Lower "
            "training.learning_rate, raise training.warmup_steps, or set training.clip_norm."
        )


def train(config: Config, run_dir: Path, **kwargs) -> TrainResult:
    """Train (or resume) ``config`` in ``run_dir``; see :class:`Trainer`."""
    return Trainer(config, Path(run_dir), **kwargs).train()
