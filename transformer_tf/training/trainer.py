"""The training loop: steps, logs, checkpoints and validation at their intervals.

:func:`build_trainer` assembles a run (strategy, run directory, task, model, optimizer,
checkpoint) and :class:`Trainer` only trains it; validation goes through the same
:class:`~transformer_tf.evaluation.evaluator.Evaluator` as ``transformer-tf evaluate``, and the
best checkpoint and early stopping are decided by a
:class:`~transformer_tf.evaluation.selection.CheckpointSelector`.

The loop is ``strategy.run`` inside a ``tf.function`` (not ``Model.fit``, which fails under
MultiWorkerMirroredStrategy in Keras 3), on CPU, GPUs, several hosts or a TPU alike. Each call
runs up to ``training.steps_per_loop`` updates on the device (:mod:`.step`) and stops at the next
log, checkpoint or validation step, so the host syncs once per call, and those happen exactly
where they would with one update per call.

The trainer holds the run directory's lock (:meth:`~transformer_tf.run.RunDir.lock`) from
:func:`build_trainer` until :meth:`Trainer.train` returns, and turns SIGTERM or SIGINT into a
checkpoint at the end of the current call (at most ``steps_per_loop`` updates) and a
:class:`TrainingPreempted` error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf
from tqdm.auto import tqdm

from transformer_tf import init_from as init
from transformer_tf.assembly import Assembly, assemble
from transformer_tf.config import Config
from transformer_tf.distribute import Placement, build_strategy, distribute_training_data
from transformer_tf.errors import (
    RunWriteError,
    TrainingDivergedError,
    TrainingPreempted,
    UserError,
    WorkerLostError,
)
from transformer_tf.evaluation.evaluator import Evaluator, validation_scores
from transformer_tf.evaluation.selection import CheckpointSelector
from transformer_tf.importing import read_imported
from transformer_tf.models import weight_path
from transformer_tf.precision import Hardware, PrecisionChoice, detect_hardware, resolve_precision
from transformer_tf.run import RunDir, RunLock, writing_to
from transformer_tf.training.batch_size import BatchChoice, resolve_batch, resolved_config
from transformer_tf.training.checkpoints import (
    CheckpointWriter,
    TrainingState,
    make_training_checkpoint,
)
from transformer_tf.training.ema import ExponentialMovingAverage, checkpoint_has_averages
from transformer_tf.training.optimizer import make_optimizer, update_scales
from transformer_tf.training.step import Update

log = logging.getLogger(__name__)


#: Signals that stop training at the next step boundary with a checkpoint.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
    """How a training run ended."""

    run_dir: Path
    step: int
    epoch: int
    stop_reason: str
    train_loss: float | None = None
    validation: list[dict] = field(default_factory=list)


class TrainingLogs:
    """Progress bar, TensorBoard scalars and the JSON-lines logs of a run (chief only).

    Args:
        run: RunDir, where ``logs/``, ``train_log.jsonl`` and ``validation_log.jsonl`` go.
        is_chief: bool, whether this process writes them.
        show_progress: bool, draw the progress bar and print validations.
        unit: str, what the loss counts (``"tokens"`` or ``"examples"``) for the throughput.
    """

    def __init__(self, run: RunDir, *, is_chief: bool, show_progress: bool, unit: str):
        self.run = run
        self.is_chief = is_chief
        self.show_progress = show_progress and is_chief
        self.unit = unit
        self.progress = None

        def writer(name):
            if is_chief:
                return tf.summary.create_file_writer(str(run.log_dir(name)))
            return tf.summary.create_noop_writer()

        self.train_writer = writer("train")
        self.validation_writer = writer("validation")

    def open_progress(self, total: int | None, initial: int) -> None:
        self.progress = tqdm(
            total=total,
            initial=initial,
            disable=not self.show_progress,
            unit="step",
            dynamic_ncols=True,
        )

    def advance(self, steps: int = 1) -> None:
        self.progress.update(steps)

    def train(
        self,
        step: int,
        loss: float,
        learning_rate: float,
        count: float,
        seconds: float,
        extra: dict | None = None,
    ) -> None:
        """One logging window: its mean loss, and ``count`` tokens or examples in ``seconds``;
        ``extra``: the task's own numbers (``Task.log_fields``)."""
        extra = extra or {}
        rate = count / max(seconds, 1e-9)
        self.progress.set_postfix(
            loss=f"{loss:.4f}", lr=f"{learning_rate:.2e}", **{f"{self.unit}/s": f"{rate:.0f}"}
        )
        with self.train_writer.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar(f"{self.unit}_per_second", rate)
            for name, value in extra.items():
                tf.summary.scalar(name, value)
        if self.is_chief:
            record = {
                "step": step,
                "loss": loss,
                "learning_rate": learning_rate,
                f"{self.unit}_per_second": rate,
                **extra,
            }
            self.run.append_record(self.run.train_log, record)

    def validation(self, step: int, scores: dict) -> None:
        with self.validation_writer.as_default(step=step):
            for name, value in scores.items():
                if name != "step":
                    tf.summary.scalar(name, value)
        if self.is_chief:
            self.run.append_record(self.run.validation_log, scores)
        if self.show_progress:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in scores.items() if k != "step")
            tqdm.write(f"validation at step {step}: {shown}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        with writing_to("TensorBoard logs", self.run.path / RunDir.LOG_DIR):
            self.train_writer.flush()
            self.validation_writer.flush()


class Trainer:
    """Trains an assembled run; resumes from its latest checkpoint (:meth:`restore_latest`).

    Args:
        assembly: Assembly, the config, run directory, task and model (built under the
            placement's strategy).
        placement: Placement, the strategy and this process's role.
        optimizer: keras optimizer, built on the model's trainable variables.
        total_steps: int or None, where the run ends (None: at ``training.epochs``).
        show_progress: bool, draw a progress bar (chief only). Defaults to True.
        lock: RunLock or None, the run directory's lock, taken again by :meth:`train` if it
            was released, and released when it returns (None on non-chief workers).
        precision: PrecisionChoice or None, the precision the model was built in, and why
            (see :func:`training_precision`); kept for reports.
        batch: BatchChoice or None, the batch size and accumulation the run trains with, and
            why (:mod:`.batch_size`; ``assembly.config`` holds them as numbers); kept for
            reports.
        initialized_from: dict or None, the ``init_from.json`` record of a run that started
            from another run's weights (``--init-from``); kept for reports.
    """

    def __init__(
        self,
        assembly: Assembly,
        placement: Placement,
        optimizer,
        *,
        total_steps: int | None,
        show_progress: bool = True,
        lock: RunLock | None = None,
        precision: PrecisionChoice | None = None,
        batch: BatchChoice | None = None,
        initialized_from: dict | None = None,
    ):
        self.config: Config = assembly.config
        self.precision = precision
        self.batch = batch
        self.initialized_from = initialized_from
        self.run = assembly.run
        self.task = assembly.task
        self.model = assembly.model
        self.placement = placement
        self.strategy = placement.strategy
        self.is_chief = placement.is_chief
        self.optimizer = optimizer
        self.total_steps = total_steps
        training = self.config.training
        with self.strategy.scope():
            self.state = TrainingState()
            self.selector = CheckpointSelector(training.early_stopping)
        # training.ema_decay: the averages start at the weights the run starts from (random,
        # or --init-from's); a resumed run restores them (restore_latest).
        self.ema = (
            ExponentialMovingAverage(
                self.strategy, self.model.trainable_variables, training.ema_decay
            )
            if training.ema_decay is not None
            else None
        )
        self.checkpoint = self._make_checkpoint(with_ema=self.ema is not None)
        self.writer = CheckpointWriter(
            self.checkpoint, self.run, training.keep_checkpoints, self.is_chief
        )
        self.evaluator = Evaluator(self.strategy, self.model, self.task)
        self.logs = TrainingLogs(
            self.run,
            is_chief=self.is_chief,
            show_progress=show_progress,
            unit=self.task.count_unit,
        )
        self._compiled_loop = None
        self.lock = lock
        self._stop_signal: int | None = None
        self._signal_elsewhere = False  # multi-worker: another worker was signalled
        self._agree = None  # multi-worker: the compiled "was any worker signalled?" reduction

    def _make_checkpoint(self, with_ema: bool) -> tf.train.Checkpoint:
        """The training checkpoint: model, optimizer, state, selector, and the moving averages
        under ``ema`` when ``with_ema``."""
        return make_training_checkpoint(
            self.model,
            self.optimizer,
            self.state.trackables(),
            self.selector.trackables(),
            self.ema.trackables() if with_ema else {},
        )

    def restore_latest(self) -> str | None:
        """Restore the newest intact checkpoint of the run, if there is one; returns its path.

        A damaged newer checkpoint (truncated or corrupted) is named in a warning and skipped;
        if every checkpoint is damaged a DamagedCheckpointError (exit 2) says so.
        """
        latest = self.run.latest_intact_checkpoint()
        if latest:
            # A checkpoint written without moving averages (ema_decay set on a resumed run)
            # restores all but them; the averages then start at the restored weights.
            has_averages = checkpoint_has_averages(latest)
            checkpoint = self.checkpoint
            if self.ema is not None and not has_averages:
                checkpoint = self._make_checkpoint(with_ema=False)
            status = checkpoint.restore(latest)
            status.assert_existing_objects_matched()
            if has_averages and self.ema is None:
                status.expect_partial()  # averages saved, no longer wanted (ema_decay unset)
            if self.ema is not None and not has_averages:
                self.ema.reset()
                log.warning("%s holds no moving averages: they start at its weights", latest)
            log.info("resumed from %s at step %d", latest, int(self.state.step.numpy()))
        return latest

    def make_train_loop(self):
        """The compiled ``loop(iterator, max_steps)`` of updates (see :mod:`.step`), which
        also moves the averages (``training.ema_decay``) after each applied update."""
        update = Update(self.strategy, self.model, self.optimizer, self.task, self.config.training)
        update.update_scales = self._update_scales(update.variables)
        if self.ema is not None:
            update.after_apply.append(self.ema.update)
        return update.loop

    def _update_scales(self, variables):
        """The update scales of ``variables`` (:func:`~.optimizer.update_scales`): the weights
        taken from another run are those the ``init_from.json`` record does not list as new."""
        training = self.config.training
        record = self.initialized_from
        fresh = None if record is None else set(record.get("fresh", ()))
        if record is None and (
            training.pretrained_learning_rate_scale != 1.0 or training.freeze_pretrained_steps
        ):
            log.warning(
                "training.pretrained_learning_rate_scale and training.freeze_pretrained_steps "
                "have no effect: this run did not start from another run's weights (--init-from)"
            )
        return update_scales([weight_path(v) for v in variables], training, fresh)

    def averaged_weights(self):
        """A context in which the model holds its moving averages (``training.ema_decay``),
        and its raw weights again after; a no-op without them."""
        if self.ema is None:
            return contextlib.nullcontext()
        return self.ema.averaged_weights()

    def _loop_length(self, step: int) -> int:
        """Updates in the next call: ``steps_per_loop``, cut at the next log, checkpoint or
        validation step and at the end of the run."""
        training = self.config.training
        length = training.steps_per_loop
        for every in (training.log_every, training.checkpoint_every, training.eval_every):
            if every:
                length = min(length, every - step % every)
        if self.total_steps is not None:
            length = min(length, self.total_steps - step)
        return length

    def evaluate_split(self, split: str) -> dict:
        """Unsmoothed loss and the task's metrics on ``split`` (teacher forcing)."""
        return self.evaluator.run(split)

    def train(self) -> TrainResult:
        """Run until the step or epoch budget, early stopping, divergence or a stop signal.

        Holds the run directory's lock throughout. SIGTERM or SIGINT (in the main thread of a
        single-process run) finish the current step, write its checkpoint and raise
        :class:`TrainingPreempted`; a second signal acts at once. A failed write raises
        :class:`~transformer_tf.errors.RunWriteError` saying which checkpoint is intact.
        """
        if self.lock is not None:
            self.lock.acquire()
        previous = self._catch_stop_signals()
        try:
            return self._train_loop()
        except RunWriteError as error:
            error.hint = self._intact_checkpoint_hint()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self.lock is not None:
                self.lock.release()

    def _catch_stop_signals(self) -> dict:
        """Install the stop-signal handlers; returns the ones they replace.

        Under multi-worker every worker installs them, and the workers agree at each loop
        boundary whether any of them was signalled (:meth:`_stop_requested`), so that all save
        the same step, collectively, and stop together. Not outside the main thread, where
        Python cannot install handlers.
        """
        if threading.current_thread() is not threading.main_thread():
            return {}
        self._stop_signal = None
        # getsignal gives None for a handler installed outside Python: restored as the default.
        previous = {
            signum: signal.getsignal(signum) or signal.SIG_DFL for signum in PREEMPTION_SIGNALS
        }

        def on_signal(signum, frame):
            self._stop_signal = signum
            # A second signal acts at once (the usual handler again).
            signal.signal(signum, previous[signum])
            os.write(
                2,
                f"\nreceived {signal.Signals(signum).name}: stopping after this step with a "
                "checkpoint (send it again to stop at once)\n".encode(),
            )

        for signum in PREEMPTION_SIGNALS:
            signal.signal(signum, on_signal)
        return previous

    def _intact_checkpoint_hint(self) -> str:
        try:
            latest = self.run.latest_intact_checkpoint()
        except Exception:  # A hint must not hide the write error it explains.
            latest = None
        if latest is None:
            return "No checkpoint was written yet"
        return (
            f"The last complete checkpoint, step {latest.rsplit('-', 1)[-1]} ({latest}), is intact"
        )

    def _stop_requested(self) -> bool:
        """Whether this process, or under multi-worker any worker, was sent a stop signal.

        Every worker calls this at the same loop boundaries (their loops run the same number
        of steps per call), so the one scalar all-reduce here pairs up across workers.
        """
        if self.placement.kind != "multi_worker":
            return self._stop_signal is not None
        if self._agree is None:
            strategy = self.strategy

            def any_worker(flag):
                def replica_fn(value):
                    context = tf.distribute.get_replica_context()
                    # identity: a tensor made on this replica's device (the collective needs one)
                    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(value))

                summed = strategy.run(replica_fn, args=(flag,))
                return strategy.experimental_local_results(summed)[0]

            self._agree = tf.function(any_worker)
        # float32: the collective implementations all reduce floats.
        flag = tf.constant(0.0 if self._stop_signal is None else 1.0, tf.float32)
        signalled = float(self._agree(flag).numpy()) > 0
        if signalled and self._stop_signal is None:
            # Another worker's signal, which one is not sent: schedulers preempt with SIGTERM.
            self._stop_signal = signal.SIGTERM
            self._signal_elsewhere = True
        return signalled

    def _preempt(self, step: int) -> None:
        """Checkpoint ``step`` (again if it was just saved: validation may have changed the
        best-checkpoint state) and raise TrainingPreempted."""
        path = self.writer.save(step)
        raise TrainingPreempted(
            step, self._stop_signal, path if self.is_chief else None, self._signal_elsewhere
        )

    def _train_loop(self) -> TrainResult:
        training = self.config.training
        state = self.state
        step = int(state.step.numpy())
        epoch = int(state.epoch.numpy())
        result = TrainResult(self.run.path, step, epoch, "completed")
        if self.total_steps is not None and step >= self.total_steps:
            result.stop_reason = "already complete"
            if self.is_chief and not self.run.model_file.exists():  # its write had failed
                with self.averaged_weights():
                    self.run.save_model(self.model)
            return result

        self.logs.open_progress(self.total_steps, step)
        window_loss, window_count, window_start = 0.0, 0.0, time.perf_counter()
        stop = None
        last_saved = step
        # The next epoch's iterator is built, and its pipeline warmed up, while this epoch
        # trains (see _epoch_iterator): otherwise every epoch starts with a stall.
        ahead = _EpochsAhead(self._epoch_iterator, background=self.placement.kind != "multi_worker")
        try:
            while stop is None:
                skip = int(state.batch_in_epoch.numpy())
                # The iterator lives only in this list, so that `ahead.release` can drop it
                # off the main thread (see _EpochsAhead).
                current = [ahead.take(epoch, skip)]
                if training.epochs is None or epoch + 1 < training.epochs:
                    ahead.start(epoch + 1)
                if self._compiled_loop is None:
                    self._compiled_loop = self.make_train_loop()
                end_of_epoch = False
                while not end_of_epoch:
                    out = self._compiled_loop(
                        current[0], tf.constant(self._loop_length(step), tf.int32)
                    )
                    out = {name: value.numpy() for name, value in out.items()}  # one host sync
                    ran, end_of_epoch = int(out["steps"]), bool(out["end_of_input"])
                    step += ran
                    state.step.assign(step)
                    state.batch_in_epoch.assign_add(int(out["batches"]))
                    loss_sum, count = float(out["loss_sum"]), float(out["count"])
                    if out["diverged_at"] >= 0:
                        loss = loss_sum / max(count, 1.0)
                        raise TrainingDivergedError(_diverged_message(step, loss, last_saved))
                    if ran == 0:
                        continue
                    window_loss += loss_sum
                    window_count += count
                    self.logs.advance(ran)
                    if step % training.log_every == 0 or step == self.total_steps:
                        result.train_loss = window_loss / max(window_count, 1.0)
                        self.logs.train(
                            step,
                            result.train_loss,
                            float(self.optimizer.learning_rate),
                            window_count,
                            time.perf_counter() - window_start,
                            self.task.log_fields(),
                        )
                        window_loss, window_count, window_start = 0.0, 0.0, time.perf_counter()
                    if step % training.checkpoint_every == 0:
                        self.writer.save(step)
                        last_saved = step
                    if training.eval_every and step % training.eval_every == 0:
                        stop = self._validate(step, result)
                        if stop:
                            break
                    if self.total_steps is not None and step >= self.total_steps:
                        stop = "completed"
                        break
                    if self._stop_requested():
                        self._preempt(step)
                ahead.release(current)
                if stop is None:  # the epoch's batches ran out
                    epoch += 1
                    state.epoch.assign(epoch)
                    state.batch_in_epoch.assign(0)
                    if not training.eval_every:
                        stop = self._validate(step, result)
                    if stop is None and training.epochs is not None and epoch >= training.epochs:
                        stop = "completed"
            # The step budget usually ends mid-loop (with `epochs`, on the last batch of the
            # last epoch): validate the final weights too, so `best` can be the last step.
            if stop == "completed" and (
                not result.validation or result.validation[-1]["step"] != step
            ):
                self._validate(step, result)
            if last_saved != step:
                self.writer.save(step)
        except _PEER_FAILURES as error:
            if self.placement.kind != "multi_worker":
                raise
            first_line = str(error).strip().splitlines()[0]
            raise WorkerLostError(
                f"another worker stopped after step {step} ({first_line}). Restart every "
                f"worker with the same command to resume from the last checkpoint (step "
                f"{last_saved})."
            ) from error
        finally:
            ahead.close()
            self.logs.close()
        if self.is_chief:
            with self.averaged_weights():
                self.run.save_model(self.model)
        self.writer.close()
        result.step, result.epoch, result.stop_reason = step, epoch, stop
        return result

    def _epoch_iterator(self, epoch: int, skip: int):
        """The iterator of epoch ``epoch``'s batches after the first ``skip``.

        On one CPU (a plain tf.data iterator) its pipeline starts filling when the iterator is
        created (tf.data's ``experimental_warm_start``), not at the first batch: built one
        epoch ahead, the next epoch's shuffle and prefetch buffers are full when its first
        batch is asked for; a distributed iterator still fills at its first batch. Under
        multi-worker each worker builds only its part (:func:`distribute_training_data`).
        """
        options = tf.data.Options()
        options.experimental_warm_start = True

        def make_dataset(**kwargs):
            return self.task.dataset("train", True, epoch, **kwargs).with_options(options)

        data = distribute_training_data(
            self.placement, make_dataset, skip, shards=self.task.shards_input
        )
        return iter(data)

    def _validate(self, step: int, result: TrainResult) -> str | None:
        """Validate, log, keep the best checkpoint; the reason to stop early, or None."""
        if not self.task.has_split("validation"):
            return None
        with self.averaged_weights():  # the raw weights again before the checkpoint below
            scores = {**validation_scores(self.evaluator, "validation"), "step": step}
        result.validation.append(scores)
        self.logs.validation(step, scores)
        is_best, stop = self.selector.update(scores)
        if is_best:
            self.writer.save(step, best=True)
        return stop


class _EpochsAhead:
    """Builds the next epoch's iterator in a background thread while the current one trains,
    and releases finished iterators in another.

    ``take(epoch, skip)`` returns the iterator built ahead for ``epoch`` when there is one and
    ``skip`` is 0 (a new epoch), else builds it now; ``start(epoch)`` begins building the one
    for ``epoch``. The iterators are the same as built in place (same dataset, seeds and
    order), so resume stays exact. With ``background=False`` (multi-worker: no dataset work
    beside the collectives) everything is built in place.

    ``release(holder)`` empties ``holder``, a list holding the caller's only reference to a
    finished iterator, in a background thread. Destroying a tf.data iterator joins its
    threads, tf.data's autotuning thread among them, which wakes up at intervals that grow to
    a minute: measured on Multi30k, freeing an exhausted iterator blocked for 5 to 52 s at
    random epoch boundaries (the 42 s "epoch stall"). TensorFlow releases the GIL while it
    waits, so training goes on meanwhile.

    Args:
        build: callable ``(epoch, skip) -> iterator``.
        background: bool, build ahead in a thread.
    """

    def __init__(self, build, background: bool):
        self.build = build
        self.background = background
        self.executor = ThreadPoolExecutor(max_workers=1) if background else None
        self.releaser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="release")
        self.pending: tuple[int, Future] | None = None

    def start(self, epoch: int) -> None:
        if self.executor is not None:
            self.pending = (epoch, self.executor.submit(self.build, epoch, 0))

    def take(self, epoch: int, skip: int):
        pending, self.pending = self.pending, None
        if pending is not None and pending[0] == epoch and skip == 0:
            return pending[1].result()
        return self.build(epoch, skip)

    def release(self, holder: list) -> None:
        # The list, not the iterator, is passed: the releasing thread drops the last reference.
        self.releaser.submit(holder.clear)

    def close(self) -> None:
        """Drop the iterator built ahead and wait for the releases (at the end of a run, an
        iterator in mid-epoch frees at once)."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
        if self.pending is not None:
            future, self.pending = self.pending[1], None
            if not future.cancelled() and future.exception() is None:
                holder = [future.result()]
                del future  # it holds the iterator too
                self.release(holder)
        self.releaser.shutdown(wait=True)


def _diverged_message(step: int, loss: float, last_saved: int) -> str:
    kept = (
        f"the last good checkpoint (step {last_saved}) is kept"
        if last_saved
        else "no checkpoint was written yet"
    )
    return (
        f"training loss became {loss} at step {step}; stopping. {kept}. Lower "
        "training.learning_rate, raise training.warmup_steps, or set training.clip_norm."
    )


def training_precision(
    config: Config, run: RunDir, placement_kind: str, hardware: Hardware | None = None
) -> PrecisionChoice:
    """The precision to train ``config`` in, on ``hardware`` (None: this machine's, for a
    placement of ``placement_kind``).

    ``auto`` resolves on the hardware at hand each time training starts, so a run moved to a
    faster machine uses it; but a resumed run keeps float16 (or its absence) from the run's
    start, because only ``mixed_float16`` checkpoints hold a loss scale.
    """
    hardware = hardware or detect_hardware(placement_kind)
    choice = resolve_precision(config.training.mixed_precision, hardware)
    recorded = run.read_precision() if run.is_run() else None
    if choice.requested == "auto" and recorded is not None:
        scaled = recorded["policy"] == "mixed_float16"
        if scaled != (choice.policy == "mixed_float16"):
            held = "hold" if scaled else "have no"
            choice = PrecisionChoice(
                "auto",
                recorded["policy"],
                f"kept from the run's start ({recorded.get('reason', 'recorded')}): its "
                f"checkpoints {held} a float16 loss scale; this hardware alone would get "
                f"{choice.policy}",
                choice.hardware,
            )
    return choice


def build_trainer(
    config: Config,
    run_dir: str | os.PathLike | RunDir,
    *,
    placement: Placement | None = None,
    show_progress: bool = True,
    init_from: str | os.PathLike | None = None,
    update_vocab: bool = False,
) -> Trainer:
    """Assemble ``config`` in ``run_dir`` for training, restored from its latest checkpoint.

    Args:
        config: Config, the validated config.
        run_dir: where the resolved config, vocabularies, checkpoints and logs live.
        placement: Placement or None, the strategy; built from ``config.distribute`` when None.
        show_progress: bool, draw a progress bar (chief only). Defaults to True.
        init_from: a run directory or checkpoint whose weights a new run starts from (see
            :mod:`transformer_tf.init_from`); a run that already has checkpoints resumes from
            them instead. None: random weights. A refusal (exit 2) leaves no new run directory.
        update_vocab: bool, with ``init_from``: learn the new run's vocabulary as its config
            says and map the weights by token, rather than adopt the source's vocabulary.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    imported = read_imported(run.path) if run.is_run() else None
    if imported is not None:
        raise UserError(
            f"{run} was imported from {imported['toolkit']} ({imported['origin']}) and has no "
            f"training state; start a run from its weights: transformer-tf train CONFIG "
            f"--init-from {run}"
        )
    if update_vocab and init_from is None:
        raise UserError("--update-vocab goes with --init-from: it maps a source run's weights")
    # Checked before anything is written: a missing or damaged source leaves nothing behind.
    source = init.resolve_source(init_from) if init_from is not None else None
    if source is not None and source.run.path.resolve() == run.path.resolve():
        raise UserError(
            f"--init-from {source.given} is this run itself; to continue it, rerun without "
            "--init-from"
        )
    if source is not None:
        config = init.inherit_model(config, source.run.read_config())
    elif run.is_run() and run.read_init_from() is not None:
        # A resumed run that started from another run's weights: its model keys came from
        # there, and its saved config has them.
        config = init.inherit_model(config, run.read_config())
    fresh = not run.path.exists() or not any(run.path.iterdir())
    # The strategy first: multi-worker collectives must be set up before other TF work.
    placement = placement or build_strategy(config.distribute)
    # Only the chief locks, judges and writes the run directory; other workers would race it.
    # The lock comes before the judgement: of two trainers started on an empty directory, the
    # second is refused for the lock, not for the files the first has begun to write.
    lock = run.lock() if placement.is_chief else None
    if lock is not None:
        lock.acquire()
    try:
        return _build_locked(
            config, run, placement, lock, show_progress, source, update_vocab=update_vocab
        )
    except BaseException as error:
        if lock is not None:
            lock.release()
        if source is not None and fresh and placement.is_chief and isinstance(error, UserError):
            # A refused --init-from (weights that do not fit) leaves no run directory behind.
            _remove_new_run(run)
        raise


def _remove_new_run(run: RunDir) -> None:
    """Remove what this command wrote into a run directory that was empty or absent."""
    if run.path.is_dir():
        for entry in run.path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            run.path.rmdir()


def _initial_weights(run: RunDir, config: Config, source: init.InitSource | None):
    """``(loaded source, partial)``: the source to start from, or None when the run resumes
    (or has no source), and whether it gives only part of the weights (another task's run,
    :func:`~transformer_tf.init_from.check_same_kind`).

    A run with checkpoints resumes: ``--init-from`` applied at its start. It must name the run
    it started from; a run trained from random weights is never re-initialised, and a run that
    started from a source and has no checkpoint yet must name that source again.
    """
    recorded = run.read_init_from() if run.is_run() else None
    has_checkpoints = bool(run.checkpoint_steps()) if run.is_run() else False
    if source is None:
        if recorded is not None and not has_checkpoints:
            raise UserError(
                f"{run} started from the weights of {recorded['source']} and has no checkpoint "
                f"yet; rerun with --init-from {recorded['source']}"
            )
        return None, False
    if has_checkpoints:
        if recorded is None:
            raise UserError(
                f"--init-from: {run} already holds a run trained from random weights; start "
                "the new run in another --run-dir"
            )
        if Path(recorded["source"]) != source.run.path.resolve():
            raise UserError(
                f"--init-from {source.given}: {run} started from {recorded['source']}; rerun "
                "with that source to resume it, or use another --run-dir"
            )
        log.info("resuming %s; its weights came from %s at the start", run, recorded["source"])
        return None, False
    loaded = init.load_source(source)
    return loaded, init.check_same_kind(config, loaded)


def _build_locked(
    config, run, placement, lock, show_progress, source=None, update_vocab=False
) -> Trainer:
    if placement.is_chief:
        run.check_compatible(config)
    loaded, partial = _initial_weights(run, config, source)
    training = config.training
    keras.utils.set_random_seed(training.seed)
    choice = training_precision(config, run, placement.kind)
    log.info("precision: %s", choice.describe())
    run.path.mkdir(parents=True, exist_ok=True)
    # A rerun of a start that failed before its first checkpoint finds the vocabulary copied.
    adopted = loaded is not None and init.keeps_source_vocabulary(
        config, update_vocab, loaded.config
    )
    if adopted and placement.is_chief:
        init.adopt_vocabulary(run, loaded.source)
    assembly = assemble(
        config,
        run,
        create=True,
        write=placement.is_chief,
        strategy=placement.strategy,
        policy=choice.policy,
    )
    with placement.strategy.scope():
        assembly.task.initialize_model(assembly.model)
        if loaded is not None:
            mappings = init.transfer_weights(
                assembly.model,
                assembly.task.vocabularies(),
                loaded,
                assembly.model_args,
                partial=partial,
            )
    initialized_from = run.read_init_from() if run.is_run() else None
    if loaded is not None:
        initialized_from = init.record(loaded, mappings, adopted, assembly.model)
        log.info("weights from %s", init.describe(initialized_from))
    # `auto` and effective_batch_size resolved on the model as built, before any training data
    # is read; the assembly (its task, the update, validation) then sees the numbers.
    batch = resolve_batch(
        config,
        run,
        placement,
        assembly,
        loss_scale=choice.policy == "mixed_float16",
        device=choice.hardware,
    )
    log.info("batch size: %s", batch.describe())
    assembly.config = assembly.task.config = resolved_config(config, batch)
    training = assembly.config.training
    total_steps = training.steps
    if training.epochs is not None:
        # An update reads `gradient_accumulation` batches; an epoch's last one may read fewer.
        updates = -(-assembly.task.train_batches_per_epoch() // training.gradient_accumulation)
        epoch_steps = training.epochs * updates
        total_steps = min(total_steps or epoch_steps, epoch_steps)
    with placement.strategy.scope():
        optimizer = make_optimizer(
            training, total_steps, loss_scale=choice.policy == "mixed_float16"
        )
        optimizer.build(assembly.model.trainable_variables)
    # Written once the model builds: a config whose layers do not fit leaves no record.
    if placement.is_chief:
        run.write_config(config)
        run.write_precision(choice.record())
        run.write_batch_size(batch.record())
        if loaded is not None:
            run.write_init_from(initialized_from)
    trainer = Trainer(
        assembly,
        placement,
        optimizer,
        total_steps=total_steps,
        show_progress=show_progress,
        lock=lock,
        precision=choice,
        batch=batch,
        initialized_from=initialized_from,
    )
    trainer.restore_latest()
    return trainer


def train(config: Config, run_dir, **kwargs) -> TrainResult:
    """Train (or resume) ``config`` in ``run_dir``; see :func:`build_trainer`."""
    return build_trainer(config, run_dir, **kwargs).train()
