"""The batch a run trains with: ``training.batch_size: auto`` and ``training.effective_batch_size``.

``batch_size: auto`` (with ``batch_type: tokens``) is resolved once, when a run starts, after the
strategy, the precision and the model exist and before the training data is read:

- **On GPUs** it is the largest token budget that trains without running out of device memory,
  as OpenNMT-tf's ``batch_size: 0`` and Marian's ``--mini-batch-fit``. :func:`largest_fitting`
  tries sizes, doubling from :data:`SEARCH_START` tokens per replica until one fails (or
  :data:`SEARCH_CAP` per replica, or ``effective_batch_size``, fits), then bisects between the
  last size that fitted and the first that failed, to :data:`GRANULARITY` tokens per replica.
  Each try is one forward and backward pass of the real model under the run's strategy and
  precision (:class:`MemoryProbe`) on a worst-case batch: every example as long as the data
  allows (``data.max_length``), as many as the budget holds, with the optimizer's slots, a
  gradient accumulator and the moving averages allocated beside the weights, as in training; a
  ``tf.errors.ResourceExhaustedError`` means "does not fit". :data:`MARGIN` of the largest size
  that fitted is kept (rounded down to the granularity), for what one worst-case batch does not
  show (fragmentation, other shapes); when the cap itself fits, memory was not the limit and
  the cap is used as it is. The tries run in this process (OpenNMT-tf starts a process per try):
  TensorFlow raises the error and frees what the failed try held.
- **On a CPU** nothing is searched: a CPU has no device memory to probe (a batch too large
  swaps rather than fails), so ``auto`` is :data:`~transformer_tf.config.AUTO_BATCH_TOKENS_CPU`
  tokens, and the run says so.

``effective_batch_size`` E is the global batch one update sees, in ``batch_type`` units
(OpenNMT-tf's key). With a number ``batch_size`` B, the accumulation is ``ceil(E / B)`` and B is
kept (an update then sees ``B * ceil(E / B) >= E``). With ``auto`` the batch is ours to choose,
so the update sees exactly E (:func:`split_effective`): with B the size that fits, the
accumulation A is the smallest value from ``ceil(E / B)`` up to ``2 * ceil(E / B) - 1`` that
divides E, and the batch ``E / A`` (at least half of B); when none divides E the accumulation
is ``ceil(E / B)``, the batch ``E // A``, and an update sees ``A * (E // A)``, less than E by
fewer than A tokens (said in the record's reason).

What was chosen, and why, is logged and written to the run directory (``batch_size.json``,
:meth:`BatchChoice.record`); a resumed run (one with checkpoints) reads it back and never
searches again, because another batch size would change the order of the data it continues.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import tensorflow as tf

from transformer_tf.config import AUTO_BATCH_TOKENS_CPU, Config, TrainingConfig, with_batch_size
from transformer_tf.errors import UserError
from transformer_tf.tasks.base import per_replica_batch_size

__all__ = [
    "GRANULARITY",
    "MARGIN",
    "SEARCH_CAP",
    "SEARCH_START",
    "BatchChoice",
    "MemoryProbe",
    "SearchResult",
    "agreement",
    "choose_batch",
    "largest_fitting",
    "max_tries",
    "split_effective",
]

log = logging.getLogger(__name__)

#: Tokens per replica: the search's step, and what the kept size is rounded down to.
GRANULARITY = 128
#: Tokens per replica of the first try.
SEARCH_START = 1024
#: Tokens per replica the search never goes beyond (OpenNMT-tf's bound for its auto-tuning).
SEARCH_CAP = 16384
#: The share of the largest fitting size that is kept.
MARGIN = 0.9


@dataclass(frozen=True)
class SearchResult:
    """What :func:`largest_fitting` found.

    Attributes:
        largest: int, the largest size seen to fit (0: none did).
        chosen: int, the size to use: ``largest`` less the margin, or ``largest`` itself when it
            is the cap (0 when none fitted).
        capped: bool, whether the cap fitted (memory did not bound the search).
        tries: tuple of ``(size, fitted)``, in the order tried.
    """

    largest: int
    chosen: int
    capped: bool
    tries: tuple[tuple[int, bool], ...]


def _round_down(value: float, granularity: int) -> int:
    return int(value // granularity) * granularity


def largest_fitting(
    fits: Callable[[int], bool],
    *,
    start: int,
    cap: int,
    granularity: int,
    margin: float = MARGIN,
) -> SearchResult:
    """The largest size that ``fits``, to ``granularity``, less a margin.

    Doubles from ``start`` (``start``, ``2 * start``, ..., never past ``cap``) until a size does
    not fit or ``cap`` fits; then bisects between the largest size that fitted and the smallest
    that did not, on multiples of ``granularity``, until they are ``granularity`` apart. When
    ``start`` does not fit the bisection runs between 0 and ``start``. At most
    :func:`max_tries` calls of ``fits``.

    Known answer: ``fits = lambda b: b <= 5000`` with ``start=1024, cap=16384,
    granularity=128`` tries 1024, 2048, 4096, 8192 (no), 6144 (no), 5120 (no), 4608, 4864, 4992:
    the largest is 4992 (39 x 128), and 90% of it, 4492.8, rounds down to 4480 (35 x 128).

    Args:
        fits: callable ``size -> bool``, whether a batch of ``size`` trains.
        start: int > 0, the first size tried (a multiple of ``granularity``).
        cap: int > 0, the largest size tried; it need not be a multiple of ``granularity``.
        granularity: int > 0, the step of the search and of the kept size.
        margin: float in (0, 1], the share of the largest fitting size kept (unless it is
            ``cap``). Defaults to :data:`MARGIN`.

    Returns:
        SearchResult; ``chosen`` is 0 when not even ``granularity`` fits.
    """
    if min(start, cap, granularity) < 1 or not 0 < margin <= 1:
        raise ValueError(
            f"largest_fitting needs start, cap, granularity >= 1 and margin in (0, 1], got "
            f"{start}, {cap}, {granularity}, {margin}"
        )
    tries: list[tuple[int, bool]] = []

    def probe(size: int) -> bool:
        fitted = bool(fits(size))
        tries.append((size, fitted))
        return fitted

    fitted, failed = 0, None  # the largest size that fitted, the smallest that did not
    size = min(start, cap)
    while True:
        if not probe(size):
            failed = size
            break
        fitted = size
        if size >= cap:
            break
        size = min(2 * size, cap)
    if failed is not None:
        while True:
            middle = _round_down((fitted + failed) // 2, granularity)
            if middle <= fitted:
                break
            if probe(middle):
                fitted = middle
            else:
                failed = middle
    capped = fitted >= cap
    if fitted == 0:
        chosen = 0
    elif capped:
        chosen = cap
    else:
        chosen = max(granularity, _round_down(fitted * margin, granularity))
    return SearchResult(fitted, chosen, capped, tuple(tries))


def max_tries(start: int, cap: int, granularity: int) -> int:
    """The most calls of ``fits`` that :func:`largest_fitting` makes with these bounds: the
    doublings from ``start`` to ``cap``, then a bisection of at most ``max(start, cap / 2)``
    to ``granularity``."""
    doublings = 1 + max(0, math.ceil(math.log2(cap / start))) if cap > start else 1
    width = max(start, cap / 2) / granularity
    return doublings + max(0, math.ceil(math.log2(width)))


def split_effective(effective: int, fitting: int) -> tuple[int, int]:
    """``(batch, accumulation)`` for a global batch of ``effective`` per update, with batches of
    at most ``fitting``.

    The accumulation A is the smallest of ``ceil(effective / fitting)`` ...
    ``2 * ceil(effective / fitting) - 1`` that divides ``effective``, and the batch
    ``effective / A``, so that ``batch * A == effective`` with a batch of at least about half of
    ``fitting``; when none divides it, A is ``ceil(effective / fitting)`` and the batch
    ``effective // A`` (``batch * A`` then falls short of ``effective`` by less than A).

    Known answers: ``split_effective(4096, 1500)`` is ``(1024, 4)`` (3 does not divide 4096);
    ``split_effective(4096, 5000)`` is ``(4096, 1)``; ``split_effective(4099, 1500)`` is
    ``(1366, 3)`` (4099 is prime: 3 x 1366 = 4098).
    """
    if effective < 1 or fitting < 1:
        raise ValueError(f"split_effective needs sizes >= 1, got {effective}, {fitting}")
    first = -(-effective // fitting)
    for accumulation in range(first, 2 * first):
        if effective % accumulation == 0:
            return effective // accumulation, accumulation
    return effective // first, first


@dataclass(frozen=True)
class BatchChoice:
    """A resolved ``training.batch_size`` (and ``effective_batch_size``).

    Attributes:
        requested: int or ``"auto"``, the config's ``training.batch_size``.
        batch_size: int, the global batch of one micro-batch, in ``unit``.
        accumulation: int, micro-batches per update.
        effective: int or None, the config's ``training.effective_batch_size``.
        unit: str, ``"tokens"`` or ``"examples"`` (``training.batch_type``).
        reason: str, why, in words (logged and recorded).
        search: dict or None, the search's numbers (``tries``, ``largest``, ``cap``,
            ``granularity``, ``margin``), when there was one.
    """

    requested: int | str
    batch_size: int
    accumulation: int
    effective: int | None
    unit: str
    reason: str
    search: dict | None = field(default=None, compare=False)

    @property
    def global_batch(self) -> int:
        """int, what one update sees: ``batch_size * accumulation``."""
        return self.batch_size * self.accumulation

    def describe(self) -> str:
        """One line for logs: ``1024 tokens x 4 accumulated = 4096 tokens per update (auto:
        ...)``."""
        if self.accumulation == 1:
            size = f"{self.batch_size} {self.unit} per update"
        else:
            size = (
                f"{self.batch_size} {self.unit} x {self.accumulation} accumulated = "
                f"{self.global_batch} {self.unit} per update"
            )
        return f"{size} ({'auto: ' if self.requested == 'auto' else ''}{self.reason})"

    def record(self) -> dict:
        """What ``RUN/batch_size.json`` holds."""
        return {
            "requested": self.requested,
            "batch_size": self.batch_size,
            "gradient_accumulation": self.accumulation,
            "effective_batch_size": self.effective,
            "global_batch": self.global_batch,
            "unit": self.unit,
            "reason": self.reason,
            "search": self.search,
        }

    @classmethod
    def from_record(cls, record: dict) -> BatchChoice:
        return cls(
            record["requested"],
            int(record["batch_size"]),
            int(record["gradient_accumulation"]),
            record.get("effective_batch_size"),
            record.get("unit", "tokens"),
            record.get("reason", "recorded"),
            record.get("search"),
        )

    def answers(self, training: TrainingConfig) -> bool:
        """Whether this choice was made for the same request as ``training``'s."""
        accumulation = training.gradient_accumulation
        return (
            self.requested == training.batch_size
            and self.effective == training.effective_batch_size
            and self.unit == training.batch_type
            and (training.effective_batch_size is not None or self.accumulation == accumulation)
        )


def choose_batch(
    training: TrainingConfig,
    *,
    num_replicas: int = 1,
    fits: Callable[[int], bool] | None = None,
    device: str = "",
) -> BatchChoice:
    """Resolve ``training.batch_size`` and ``effective_batch_size`` (see the module's docstring).

    Args:
        training: TrainingConfig, the ``training:`` section.
        num_replicas: int, replicas in sync: the search's start, cap and granularity are per
            replica (the batch is global). Defaults to 1.
        fits: callable ``global tokens -> bool`` that tries a batch on the devices
            (:class:`MemoryProbe`), or None where there is no device memory to probe (a CPU):
            ``auto`` is then :data:`~transformer_tf.config.AUTO_BATCH_TOKENS_CPU`.
        device: str, what the search ran on, for the reason ("1 GPU(s)").

    Raises:
        UserError: ``auto`` on GPUs where not even the smallest batch fits.
    """
    unit, effective = training.batch_type, training.effective_batch_size
    requested = training.batch_size

    def choice(batch: int, accumulation: int, reason: str, search=None) -> BatchChoice:
        return BatchChoice(requested, batch, accumulation, effective, unit, reason, search)

    def with_effective(fitting: int, reason: str, search=None) -> BatchChoice:
        if effective is None:
            return choice(fitting, training.gradient_accumulation, reason, search)
        batch, accumulation = split_effective(effective, fitting)
        reason += f"; training.effective_batch_size {effective}"
        if batch * accumulation == effective:
            reason += f" = {accumulation} x {batch}"
        else:
            reason += (
                f": no accumulation from {-(-effective // fitting)} to "
                f"{2 * -(-effective // fitting) - 1} divides it, so {accumulation} x {batch} = "
                f"{batch * accumulation} {unit} per update"
            )
        return choice(batch, accumulation, reason, search)

    if requested != "auto":
        if effective is None:
            return choice(requested, training.gradient_accumulation, "training.batch_size")
        accumulation = -(-effective // requested)
        return choice(
            requested,
            accumulation,
            f"training.effective_batch_size {effective} / training.batch_size {requested}, "
            "rounded up",
        )
    if fits is None:
        return with_effective(
            AUTO_BATCH_TOKENS_CPU,
            f"CPU, no device memory to probe: the CPU default of {AUTO_BATCH_TOKENS_CPU} "
            "tokens; set training.batch_size to a number to override",
        )
    cap = SEARCH_CAP * num_replicas
    if effective is not None:
        cap = min(cap, effective)
    granularity = GRANULARITY * num_replicas
    result = largest_fitting(
        fits, start=SEARCH_START * num_replicas, cap=cap, granularity=granularity
    )
    search = {
        "tries": [list(t) for t in result.tries],
        "largest": result.largest,
        "cap": cap,
        "granularity": granularity,
        "margin": MARGIN,
    }
    if result.chosen == 0:
        raise UserError(
            f"training.batch_size: auto: not even {granularity} tokens ({GRANULARITY} per "
            "replica, in examples of data.max_length tokens) train in device memory"
            f"{f' ({device})' if device else ''}; make the model or data.max_length smaller"
        )
    on = f" on {device}" if device else ""
    if result.capped:
        what = "training.effective_batch_size" if cap == effective else "the search's cap"
        reason = (
            f"{result.chosen} tokens ({what}) fit{on} in {len(result.tries)} tries, so memory "
            "does not bound it"
        )
    else:
        reason = (
            f"the largest batch that fit{on} was {result.largest} tokens ({len(result.tries)} "
            f"tries); {MARGIN:.0%} of it kept as a margin"
        )
    return with_effective(result.chosen, reason, search)


# --------------------------------------------------------------------------------------------
# Trying a batch on the devices.

#: What a try that ran out of device memory raises: ResourceExhaustedError, and under XLA
#: sometimes an InternalError whose message says RESOURCE_EXHAUSTED.
_OUT_OF_MEMORY = (tf.errors.ResourceExhaustedError, tf.errors.InternalError)


def _out_of_memory(error: tf.errors.OpError) -> bool:
    if isinstance(error, tf.errors.ResourceExhaustedError):
        return True
    text = str(error).lower()
    return "resource_exhausted" in text or "out of memory" in text


class MemoryProbe:
    """``probe(global_tokens) -> bool``: whether one training micro-batch of that many tokens
    fits in the devices' memory.

    Each call runs, under the run's strategy, one forward and backward pass of ``model`` on
    :meth:`~transformer_tf.tasks.Task.probe_batch` (the worst-case batch of that budget) on every
    replica, and adds the gradients into a gradient accumulator: the real update's
    ``forward_backward`` (:class:`~transformer_tf.training.step.Update`), with what training
    keeps beside the weights allocated: the optimizer's slots, the accumulator (standing in for
    the gradients an update all-reduces and clips), and the moving averages with
    ``training.ema_decay``. No update is applied and no collective runs (a replica that fails
    cannot leave the others waiting); under multi-worker the workers then agree, with one
    all-reduce, that every one of them fitted. :meth:`close` drops all of it and puts back the
    model's non-trainable state (dropout seeds), so the run starts as if no try had been made.

    Args:
        strategy: tf.distribute.Strategy of the run.
        model: keras.Model, built, under ``strategy``.
        task: Task, whose ``probe_batch`` and ``loss`` are used.
        training: TrainingConfig of the run.
        loss_scale: bool, the run computes in float16 with a loss scale.
        multi_worker: bool, agree across workers after each try.
    """

    def __init__(self, strategy, model, task, training, *, loss_scale=False, multi_worker=False):
        from transformer_tf.training.ema import ExponentialMovingAverage
        from transformer_tf.training.optimizer import make_optimizer
        from transformer_tf.training.step import Update

        self.strategy = strategy
        self.model = model
        self.task = task
        self.replicas = strategy.num_replicas_in_sync
        self._state = [v.numpy() for v in model.non_trainable_variables]
        probe_training = training.model_copy(
            update={"schedule": "constant", "gradient_accumulation": 2, "batch_size": 1}
        )
        with strategy.scope():
            self.optimizer = make_optimizer(probe_training, None, loss_scale=loss_scale)
            self.optimizer.build(model.trainable_variables)
        # gradient_accumulation 2: the Update makes its accumulator.
        self.update = Update(strategy, model, self.optimizer, task, probe_training)
        self.averages = (
            ExponentialMovingAverage(strategy, model.trainable_variables, training.ema_decay)
            if training.ema_decay is not None
            else None
        )
        self._agree = agreement(strategy) if multi_worker else None

    def __call__(self, tokens: int) -> bool:
        try:
            self.run(tokens)
            fitted = True
        except _OUT_OF_MEMORY as error:
            if not _out_of_memory(error):
                raise
            fitted = False
        gc.collect()
        log.info("batch size search: %d tokens %s", tokens, "fit" if fitted else "do not fit")
        if self._agree is not None:
            fitted = self._agree(fitted)
        return fitted

    def run(self, tokens: int) -> None:
        """One forward and backward pass of a worst-case batch of ``tokens`` (global) per
        replica's share; raises what TensorFlow raises (ResourceExhaustedError)."""
        per_replica = per_replica_batch_size(tokens, self.replicas)
        update, task = self.update, self.task

        def replica_step():
            inputs, labels = task.probe_batch(per_replica)
            loss_sum, count, grads = update.forward_backward(inputs, labels)
            update.accumulator.add(loss_sum, count, grads)
            return count

        @tf.function
        def step():
            counts = self.strategy.run(replica_step)
            return self.strategy.experimental_local_results(counts)[0]

        step().numpy()  # waits for the devices, so an out-of-memory error surfaces here

    def close(self) -> None:
        """Drop the optimizer, accumulator and averages, and restore the model's non-trainable
        state."""
        for variable, value in zip(self.model.non_trainable_variables, self._state, strict=True):
            variable.assign(value)
        self.update = self.optimizer = self.averages = self._agree = None
        gc.collect()


def agreement(strategy) -> Callable[[bool], bool]:
    """``agree(fitted) -> bool``: whether a try fitted on every replica of ``strategy``, on every
    worker, by one all-reduce of the failures; every worker calls it after the same try (the
    tries are the same everywhere as long as the answers are)."""

    def failures(flag):
        def replica_fn(value):
            context = tf.distribute.get_replica_context()
            # identity: a tensor made on this replica's device (the collective needs one)
            return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(value))

        return strategy.experimental_local_results(strategy.run(replica_fn, args=(flag,)))[0]

    compiled = tf.function(failures)
    # float32: the collective implementations all reduce floats.
    return lambda fitted: float(compiled(tf.constant(0.0 if fitted else 1.0)).numpy()) == 0


def resolve_batch(
    config: Config,
    run,
    placement,
    assembly,
    *,
    loss_scale: bool = False,
    device: str = "",
    searchable: bool | None = None,
) -> BatchChoice:
    """The batch the run trains with: the run's record when it resumes (it has checkpoints and
    its ``batch_size.json`` answers the same request), else :func:`choose_batch`, on the
    devices (a :class:`MemoryProbe`) when ``searchable``.

    Args:
        config: Config of the run (``training.batch_size`` possibly ``auto``).
        run: RunDir.
        placement: Placement, the strategy and its kind.
        assembly: Assembly, the model and task, built under the strategy.
        loss_scale: bool, the run computes in float16 with a loss scale.
        device: str, what the devices are, for the reason.
        searchable: bool or None, whether device memory can be probed; None: whether the
            strategy's devices are GPUs.
    """
    training = config.training
    recorded = run.read_batch_size() if run.is_run() else None
    if recorded is not None and run.checkpoint_steps():
        choice = BatchChoice.from_record(recorded)
        if choice.answers(training):
            return BatchChoice(
                choice.requested,
                choice.batch_size,
                choice.accumulation,
                choice.effective,
                choice.unit,
                f"kept from the run's start ({choice.reason}); its data order depends on it",
                choice.search,
            )
        log.warning(
            "%s was chosen for another training.batch_size, effective_batch_size or "
            "gradient_accumulation than this config's: resolving them again (the data order "
            "changes)",
            run.batch_size_file,
        )
    if training.batch_size != "auto":
        return choose_batch(training, num_replicas=placement.num_replicas)
    if searchable is None:
        searchable = on_gpus(placement.strategy)
    if not searchable:
        return choose_batch(training, num_replicas=placement.num_replicas)
    log.info("training.batch_size: auto: searching the largest token batch that fits")
    probe = MemoryProbe(
        placement.strategy,
        assembly.model,
        assembly.task,
        training,
        loss_scale=loss_scale,
        multi_worker=placement.kind == "multi_worker",
    )
    try:
        return choose_batch(
            training, num_replicas=placement.num_replicas, fits=probe, device=device
        )
    finally:
        probe.close()


def on_gpus(strategy) -> bool:
    """Whether ``strategy`` computes on GPUs (whose memory a search can probe)."""
    from transformer_tf.assembly import device_kind

    return device_kind(strategy) == "gpu"


def resolved_config(config: Config, choice: BatchChoice) -> Config:
    """``config`` with ``choice``'s batch size and accumulation, numbers only (what the
    training data, the update and validation read)."""
    return with_batch_size(config, choice.batch_size, choice.accumulation)
