"""Assembly: a config and a run directory -> the task and the model, for every command.

``train``, ``evaluate``, ``translate`` and ``export`` all build the model here, so the model's
arguments are derived in one place: the ``model:`` section, the vocabulary sizes of the run's
tokenizers and the number of positions the data and decoding need. The first build records the
arguments in the run directory (``model_args.json``); every later build starts from that record,
so a setting that only derives the shape (``decoding.max_length``, say) can never silently
change the model of a trained run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from transformer_tf.config import AUTO_BATCH_TOKENS_CPU, Config, with_batch_size
from transformer_tf.errors import UserError
from transformer_tf.models import build_model, model_arguments
from transformer_tf.precision import PrecisionChoice, detect_hardware, resolve_precision
from transformer_tf.registry import get_registry
from transformer_tf.run import RunDir, average_checkpoints, restore_model, step_of
from transformer_tf.tasks import Task, make_task
from transformer_tf.training.ema import checkpoint_has_averages

__all__ = [
    "Assembly",
    "LoadedRun",
    "assemble",
    "derive_model_args",
    "device_kind",
    "load_run",
    "numeric_batch_size",
    "precision",
    "wait_for_vocabulary",
]

log = logging.getLogger(__name__)


@dataclass
class Assembly:
    """What a command works with: the config, the run directory, the task and the model."""

    config: Config
    run: RunDir
    task: Task
    model: keras.Model
    model_args: dict[str, Any]


@dataclass
class LoadedRun(Assembly):
    """An assembly whose weights come from a checkpoint of the run."""

    strategy: tf.distribute.Strategy | None = None
    checkpoint: str = ""  # what was loaded: a checkpoint path, or "average of steps ..."
    step: int | None = None
    # Which weights: "averaged" (the moving averages of training.ema_decay) or "raw".
    weights: str = "raw"


def precision(config: Config, strategy: tf.distribute.Strategy | None = None) -> PrecisionChoice:
    """The dtype policy of ``config``'s ``training.mixed_precision`` on the hardware that
    ``strategy`` (None: the current strategy) computes on; ``auto`` resolves there (see
    :mod:`transformer_tf.precision`)."""
    strategy = strategy or tf.distribute.get_strategy()
    return resolve_precision(
        config.training.mixed_precision, detect_hardware(device_kind(strategy))
    )


def device_kind(strategy: tf.distribute.Strategy) -> str:
    """``tpu``, ``gpu`` or ``cpu``: what the strategy's devices are."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: TensorFlow places ops on a GPU if it has one
        devices = [device.name for device in tf.config.list_physical_devices("GPU")]
    return "gpu" if any("GPU" in device.upper() for device in devices) else "cpu"


def derive_model_args(config: Config, task: Task) -> dict[str, Any]:
    """The model's constructor arguments for ``config`` (the task's vocabulary prepared)."""
    kwargs = config.model.model_dump()
    name = kwargs.pop("name")  # The registry name selects the class; it is not an argument.
    kwargs.update(task.vocabulary_args())
    kwargs["max_length"] = max(kwargs["max_length"], task.positions_needed())
    return model_arguments(name, kwargs)


def _length_limited(config: Config) -> bool:
    registry = get_registry("positional_encoding")
    name = config.model.positional_encoding
    return name not in registry or getattr(registry.get(name), "length_limited", True)


def _resolve_model_args(config: Config, run: RunDir, task: Task) -> tuple[dict, bool]:
    """The arguments to build with, and whether they are new (not yet recorded)."""
    record = run.read_model_args()
    if record is not None:
        args = dict(record["arguments"])
    else:
        args = derive_model_args(config, task)
        if run.is_run():
            # A run written before model_args.json: its shape follows from its *saved* config,
            # never from the overrides of this command.
            saved = run.read_config()
            args["max_length"] = max(
                saved.model.max_length, make_task(saved, run).positions_needed()
            )
    needed = task.positions_needed()
    if needed > args["max_length"]:
        if _length_limited(config):
            key, value = max(
                ((key, _dotted_get(config, key)) for key in task.length_keys),
                key=lambda item: item[1],
            )
            raise UserError(
                f"{key}={value} needs {needed} positions, but the model of {run} was built "
                f"with {args['max_length']} (model.positional_encoding "
                f"`{config.model.positional_encoding}` has a fixed table of positions); use "
                f"{key} <= {value - (needed - args['max_length'])}"
            )
        # Positions computed on the fly have no weights: the same checkpoint serves any length.
        args["max_length"] = needed
    return args, record is None


def _dotted_get(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


#: How long a non-chief worker waits for the chief's vocabulary (seconds): learning one from a
#: large sample takes minutes.
VOCABULARY_TIMEOUT = 3600.0


def wait_for_vocabulary(
    task: Task, run: RunDir, timeout: float | None = None, poll: float = 0.5
) -> None:
    """Wait until the run directory holds the vocabulary that the chief writes.

    Args:
        task: Task, whose :meth:`~transformer_tf.tasks.Task.vocabulary_ready` is polled.
        run: RunDir, the run directory shared with the chief.
        timeout: float | None, seconds; None: :data:`VOCABULARY_TIMEOUT`.
        poll: float, seconds between looks. Defaults to 0.5.

    Raises:
        UserError: no vocabulary appeared within ``timeout``.
    """
    timeout = VOCABULARY_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    if not task.vocabulary_ready():
        log.info("waiting for the chief's vocabulary in %s", run.vocab_dir)
    while not task.vocabulary_ready():
        if time.monotonic() >= deadline:
            raise UserError(
                f"no vocabulary appeared in {run.vocab_dir} within {timeout:g} s: a non-chief "
                "worker reads the vocabulary the chief writes there, so the chief must be "
                "running with the same run directory on a shared filesystem; or name a prebuilt "
                "vocabulary with data.vocabulary"
            )
        time.sleep(poll)


def numeric_batch_size(config: Config, run: RunDir) -> Config:
    """``config``, with ``training.batch_size: auto`` replaced by a number: the batch the run
    trains with (its ``batch_size.json``), else :data:`~transformer_tf.config.AUTO_BATCH_TOKENS_CPU`
    tokens. Evaluation and decoding batches are sized by it (``evaluate``, ``translate``, a
    validation); training resolves ``auto`` itself (:mod:`transformer_tf.training.batch_size`)."""
    if config.training.batch_size != "auto":
        return config
    record = run.read_batch_size() if run.is_run() else None
    size = int(record["batch_size"]) if record else AUTO_BATCH_TOKENS_CPU
    return with_batch_size(config, size, int(record["gradient_accumulation"]) if record else 1)


def assemble(
    config: Config,
    run: RunDir,
    *,
    create: bool = False,
    write: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    policy: str | None = None,
) -> Assembly:
    """Prepare the task's vocabulary and build (not restore) the model.

    The assembly's config is ``config`` with a number for ``training.batch_size: auto``
    (:func:`numeric_batch_size`).

    Args:
        config: Config, the validated config (of this command, overrides applied).
        run: RunDir, where the vocabulary and the model record live.
        create: bool, build the vocabulary from the training data when the run has none.
            Defaults to False (a missing vocabulary is then a UserError).
        write: bool, write a new vocabulary and the model record (False on non-chief workers,
            which must not race the chief). Defaults to True. ``create`` without ``write`` under a
            MultiWorkerMirroredStrategy (a non-chief worker) waits for the chief's vocabulary (:func:`wait_for_vocabulary`)
            when the task learns one from data and the config names no prebuilt one.
        strategy: the tf.distribute strategy whose scope holds the variables; None uses the
            current (default) strategy.
        policy: str | None, the Keras dtype policy; None resolves ``training.mixed_precision``
            on the strategy's hardware (:func:`precision`).
    """
    config = numeric_batch_size(config, run)
    task = make_task(config, run)
    non_chief = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and not write
    if create and non_chief and task.vocabulary_from_chief:
        # A non-chief worker: one vocabulary for all workers, the chief's (SentencePiece trained
        # on several threads need not come out the same on two hosts).
        wait_for_vocabulary(task, run)
        task.prepare(create=False, write=False)
    else:
        task.prepare(create=create, write=write)
    args, new = _resolve_model_args(config, run, task)
    if config.model.share_embeddings and args.get("source_vocab_size") != args.get(
        "target_vocab_size"
    ):
        raise UserError(
            "model.share_embeddings needs one vocabulary for source and target, but the "
            f"tokenizers have {args.get('source_vocab_size')} and {args.get('target_vocab_size')} "
            "entries: set data.shared_vocab: true, or model.share_embeddings: false"
        )
    strategy = strategy or tf.distribute.get_strategy()
    policy = policy or precision(config, strategy).policy
    with strategy.scope():
        model = build_model(config.model.name, dtype_policy=policy, **args)
        model.build()
    if new and write:
        # Recorded once the model builds: a config whose layers do not fit leaves no record.
        run.write_model_args(config.model.name, args)
    return Assembly(config, run, task, model, args)


def load_run(
    run_dir,
    *,
    checkpoint: str = "latest",
    average_last: int | None = None,
    overrides=(),
    strategy: tf.distribute.Strategy | None = None,
    raw_weights: bool = False,
) -> LoadedRun:
    """The config, task (with its vocabulary) and model of a run directory, from a checkpoint.

    Args:
        run_dir: str, PathLike or RunDir, a directory written by ``transformer-tf train``.
        checkpoint: str, ``"latest"``, ``"best"`` or a step number. Defaults to ``"latest"``,
            the newest checkpoint that reads back whole (a damaged newer one is named in a
            warning); a damaged ``best`` or step is a DamagedCheckpointError (exit 2).
        average_last: int or None, average the weights of the last K checkpoints instead.
        overrides: ``key.path=value`` strings; they may repoint data, decoding or distribute
            settings, never change the model.
        strategy: build the model under this strategy; None uses the default strategy.
        raw_weights: bool, load the trained weights themselves even when the run keeps their
            moving averages (``training.ema_decay``), which are loaded otherwise. A checkpoint
            without averages (written before ``ema_decay`` was set) gives its raw weights, with
            a warning.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    config = run.read_config(overrides)
    assembly = assemble(config, run, write=False, strategy=strategy)
    model = assembly.model
    averaged = config.training.ema_decay is not None and not raw_weights
    if average_last:
        steps = average_checkpoints(model, run, average_last, averaged)
        loaded, step = f"average of steps {', '.join(map(str, steps))}", steps[-1]
        paths = [run.checkpoint_path(s) for s in steps]
    else:
        loaded = run.find_checkpoint(checkpoint)
        try:
            restore_model(model, loaded, averaged)
        except tf.errors.NotFoundError:
            if checkpoint != "latest":
                raise
            # A trainer still running removed it (keep_checkpoints) after it was found: its
            # successor is complete by now, because the state file names only complete ones.
            loaded = run.find_checkpoint(checkpoint)
            restore_model(model, loaded, averaged)
        step = step_of(loaded)
        paths = [loaded]
    if averaged:
        missing = [Path(p).name for p in paths if not checkpoint_has_averages(p)]
        if missing:
            log.warning(
                "%s holds no moving averages (written before training.ema_decay was set): "
                "using its raw weights",
                ", ".join(missing),
            )
        averaged = len(missing) < len(paths)
    return LoadedRun(
        assembly.config,
        run,
        assembly.task,
        model,
        assembly.model_args,
        strategy=strategy or tf.distribute.get_strategy(),
        checkpoint=loaded,
        step=step,
        weights="averaged" if averaged else "raw",
    )
