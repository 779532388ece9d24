"""The run directory: one object owns its layout, its records and its checkpoints.

A run directory is what ``transformer-tf train`` writes and what ``evaluate``, ``translate`` and
``export`` read back, with nothing else needed::

    RUN/config.yaml             the resolved config: the experiment record
    RUN/model_args.json         the arguments the model was built with (its shape)
    RUN/precision.json          the precision training computes in, and why (``auto``)
    RUN/batch_size.json         the batch size and accumulation training uses, and why (``auto``,
                                ``effective_batch_size``); a resumed run keeps them
    RUN/vocab/                  tokenizers or vocabulary
    RUN/checkpoints/ckpt-N.*    the last ``training.keep_checkpoints`` checkpoints (with ``ema``: the
                                moving averages of ``training.ema_decay``)
    RUN/checkpoints/best/       the best checkpoint on validation
    RUN/logs/{train,validation} TensorBoard
    RUN/train_log.jsonl         one record per logging window
    RUN/validation_log.jsonl    one record per validation
    RUN/model.keras             the final model (the moving averages with training.ema_decay)
    RUN/.lock                   held (``flock``) by the trainer using the directory

Every other module asks :class:`RunDir` for a path instead of spelling it. Checkpoints store
the model as the ordered list of its weights (:func:`make_checkpoint`), which is the format
every reader here (resume, evaluation, averaging, export) shares.

What the directory promises (see README, "What a run directory promises"): one trainer at a
time (:meth:`RunDir.lock`); readers only ever load a complete checkpoint, and one that cannot be
read is named and skipped (:meth:`RunDir.find_checkpoint`); a write that fails raises
:class:`~transformer_tf.errors.RunWriteError` naming the file (:func:`writing_to`).
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import yaml

from transformer_tf.config import Config, load_config, model_affecting_differences, save_config
from transformer_tf.errors import DamagedCheckpointError, RunLockedError, RunWriteError, UserError
from transformer_tf.files import read_json_record, replacing, write_atomic
from transformer_tf.training.ema import restore_averages

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the lock is then a no-op (see RunLock).
    fcntl = None

__all__ = [
    "RunDir",
    "RunLock",
    "WRITE_ERRORS",
    "make_checkpoint",
    "restore_model",
    "average_checkpoints",
    "checkpoint_damage",
    "writing_to",
    "remove_partial_checkpoint",
]

log = logging.getLogger(__name__)

#: What a failed file write raises: the OS's errors, and TensorFlow's for its own writers
#: (checkpoints, summaries, SavedModel): "No space left on device" is ResourceExhaustedError,
#: a read-only or forbidden path PermissionDeniedError, FailedPreconditionError or UnknownError.
WRITE_ERRORS = (
    OSError,
    tf.errors.ResourceExhaustedError,
    tf.errors.PermissionDeniedError,
    tf.errors.FailedPreconditionError,
    tf.errors.UnknownError,
    tf.errors.NotFoundError,
)

#: What reading a damaged checkpoint raises: TensorFlow's errors for a bad index (``not an
#: sstable``) or a checksum mismatch, IndexError for a truncated data file (``Read less bytes
#: than requested``).
_READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, OSError)


@contextlib.contextmanager
def writing_to(what: str, path):
    """Turn a failed write in the block into a :class:`RunWriteError` naming ``what`` and ``path``.

    Args:
        what: str, what is being written, for the message ("checkpoint ckpt-30").
        path: str or PathLike, where it is written.
    """
    try:
        yield
    except RunWriteError:
        raise
    except WRITE_ERRORS as error:
        raise RunWriteError(what, path, _reason(error)) from error


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = error.message if isinstance(error, tf.errors.OpError) else str(error)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(error).__name__


class RunLock:
    """An exclusive lock on a run directory: ``flock`` on ``RUN/.lock``, held while training.

    The operating system releases a ``flock`` when its process dies, however it dies, so a lock
    left by a killed trainer is never in the way: the next trainer takes it over (and says so).
    The file records who holds it (process, host, start time, command) for the refusal message.
    Acquiring a held lock again is a no-op; :meth:`release` leaves the (emptied) file in place,
    because removing a locked file lets two processes lock two different files.

    Args:
        path: Path, the lock file.
        command: str, what holds it, for the message. Defaults to ``"transformer-tf train"``.
    """

    def __init__(self, path: Path, command: str = "transformer-tf train"):
        self.path = Path(path)
        self.command = command
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunLockedError naming its holder; returns self."""
        if self._file is not None:
            return self
        with writing_to("the lock file", self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held open)
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(handle)
                handle.close()
                raise RunLockedError(
                    f"run directory {self.path.parent} is in use by {holder}; wait for it to "
                    "finish or stop it, or train into another --run-dir"
                ) from None
        previous = _read_holder(handle, default=None)
        if previous is not None:
            log.warning(
                "%s: taking over the lock left by %s, which is no longer running",
                self.path.parent,
                previous,
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": self.command,
        }
        with writing_to("the lock file", self.path):
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(record) + "\n")
            handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        """Release the lock (idempotent)."""
        handle, self._file = self._file, None
        if handle is None:
            return
        with contextlib.suppress(OSError):
            # Emptied first: a record left behind would name a trainer that has finished.
            handle.seek(0)
            handle.truncate()
            handle.flush()
        handle.close()  # closing the file releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(handle, default: str | None = "another process") -> str | None:
    """``process P on host H since T (command)`` from a lock file's record, or ``default``."""
    try:
        handle.seek(0)
        record = json.loads(handle.read() or "null")
        return (
            f"process {record['pid']} on host {record['host']} since {record['since']} "
            f"({record['command']})"
        )
    except (OSError, ValueError, TypeError, KeyError):
        return default


def checkpoint_damage(path: str) -> str | None:
    """Why the checkpoint at prefix ``path`` cannot be read, naming the file; None if intact.

    Reads every tensor (a read of the whole checkpoint): a truncated data file is only noticed
    when the bytes past its end are asked for.
    """
    index = path + ".index"
    if not tf.io.gfile.exists(index):
        return f"{index} is missing"
    data = sorted(glob.glob(glob.escape(path) + ".data-*"))
    if not data:
        return f"{path}.data-00000-of-00001 is missing"
    try:
        reader = tf.train.load_checkpoint(path)
    except _READ_ERRORS as error:
        return f"{index} cannot be read ({_reason(error)})"
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except _READ_ERRORS as error:
        return f"{', '.join(data)} cannot be read ({_reason(error)})"
    return None


def _below(*names: str) -> property:
    """A read-only :class:`RunDir` path: the directory joined with the class constants
    ``names`` (``_below("CHECKPOINT_DIR", "BEST_DIR")`` is ``RUN/checkpoints/best``)."""
    return property(lambda run: run.path.joinpath(*(getattr(run, name) for name in names)))


def _write_record(what: str, path: Path, record: Any) -> None:
    """Write a JSON record atomically; a RunWriteError names ``what`` and the file."""
    with writing_to(what, path):
        write_atomic(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


class RunDir:
    """The layout of one run directory and the reading and writing of its records.

    Args:
        path: str or PathLike, the directory (it need not exist yet).
    """

    CONFIG_FILE = "config.yaml"
    MODEL_ARGS_FILE = "model_args.json"
    PRECISION_FILE = "precision.json"
    BATCH_SIZE_FILE = "batch_size.json"
    INIT_FROM_FILE = "init_from.json"
    MODEL_FILE = "model.keras"
    VOCAB_DIR = "vocab"
    CHECKPOINT_DIR = "checkpoints"
    BEST_DIR = "best"
    LOG_DIR = "logs"
    TRAIN_LOG = "train_log.jsonl"
    VALIDATION_LOG = "validation_log.jsonl"
    LOCK_FILE = ".lock"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # -- paths ---------------------------------------------------------------------------------

    config_file = _below("CONFIG_FILE")
    model_args_file = _below("MODEL_ARGS_FILE")
    precision_file = _below("PRECISION_FILE")
    init_from_file = _below("INIT_FROM_FILE")
    model_file = _below("MODEL_FILE")
    vocab_dir = _below("VOCAB_DIR")
    checkpoint_dir = _below("CHECKPOINT_DIR")
    best_dir = _below("CHECKPOINT_DIR", "BEST_DIR")
    train_log = _below("TRAIN_LOG")
    validation_log = _below("VALIDATION_LOG")
    lock_file = _below("LOCK_FILE")

    def log_dir(self, name: str) -> Path:
        """TensorBoard directory ``logs/<name>`` (``train`` or ``validation``)."""
        return self.path / self.LOG_DIR / name

    def lock(self, command: str = "transformer-tf train") -> RunLock:
        """The directory's exclusive lock (not yet taken): ``with run.lock(): ...`` or
        ``run.lock().acquire()``. Taking it creates the directory. Only trainers take it;
        ``evaluate``, ``translate`` and ``export`` read complete checkpoints and need none."""
        return RunLock(self.lock_file, command)

    # -- the config record ---------------------------------------------------------------------

    def is_run(self) -> bool:
        """Whether the directory holds a run (its ``config.yaml``)."""
        return self.config_file.is_file()

    def require_run(self) -> None:
        """Raise a UserError unless the directory holds a run."""
        if not self.is_run():
            raise UserError(f"{self.path} is not a run directory: it has no {self.CONFIG_FILE}")

    def read_config(self, overrides=()) -> Config:
        """The run's config; ``overrides`` may repoint data, decoding or distribute settings,
        never change the model or its vocabulary (a UserError names the keys that would)."""
        self.require_run()
        config = load_config(self.config_file, overrides)
        if overrides:
            changed = model_affecting_differences(load_config(self.config_file), config)
            if changed:
                raise UserError(
                    f"--set cannot change the model of a trained run ({', '.join(changed)}), "
                    "its vocabulary, or the validation split and preprocessing it was trained "
                    "with; only data paths, decoding and distribute settings may be overridden"
                )
        return config

    def write_config(self, config: Config) -> None:
        with writing_to("the config", self.config_file):
            save_config(config, self.config_file)

    def recorded_plugins(self) -> list[str]:
        """The ``plugins:`` entries of ``config.yaml``, read without validating the rest (the
        training data need not exist where a trained run is reloaded)."""
        try:
            raw = yaml.safe_load(self.config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise UserError(
                f"cannot read the plugins recorded in {self.config_file}: {error}"
            ) from error
        plugins = raw.get("plugins") if isinstance(raw, dict) else None
        if plugins is None:
            return []
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            raise UserError(
                f"{self.config_file}: `plugins` must be a list of file paths or module names, "
                f"found {plugins!r}"
            )
        return plugins

    def check_compatible(self, config: Config) -> bool:
        """Refuse a directory that holds another model's run; True if there is a run to resume.

        A non-empty directory without ``config.yaml`` is not a run and is refused too: training
        into it could overwrite someone's files.
        """
        if not self.is_run():
            if self.path.exists() and any(p.name != self.LOCK_FILE for p in self.path.iterdir()):
                raise UserError(
                    f"run directory {self.path} is not empty and has no {self.CONFIG_FILE}: it "
                    "is not a transformer_tf run; choose another --run-dir"
                )
            return False
        # Compare plugins before loading the saved config, which would import its plugins: a
        # plugin module of the same name from another path is a different model, not a clash.
        saved_plugins = self.recorded_plugins()
        if list(saved_plugins) != list(config.plugins):
            raise UserError(
                f"run directory {self.path} was trained with plugins {saved_plugins}, this "
                f"config imports {list(config.plugins)}; resuming would mix two models. Use a "
                "new --run-dir, or the same plugin files."
            )
        differences = model_affecting_differences(load_config(self.config_file), config)
        if differences:
            raise UserError(
                f"run directory {self.path} holds a run with a different model, vocabulary or "
                f"validation split ({', '.join(differences)} differ from {self.config_file}); "
                "resuming it would mix two runs. Use a new --run-dir, or restore those values."
            )
        return True

    # -- the model's shape ---------------------------------------------------------------------

    def read_model_args(self) -> dict[str, Any] | None:
        """The recorded ``{"name": ..., "arguments": {...}}`` of the built model, or None for a
        run written before this record existed."""
        if not self.model_args_file.is_file():
            return None
        record = read_json_record(self.model_args_file)
        if not isinstance(record, dict) or not isinstance(record.get("arguments"), dict):
            raise UserError(f"{self.model_args_file}: expected {{'name': ..., 'arguments': {{}}}}")
        return record

    def write_model_args(self, name: str, arguments: dict[str, Any]) -> None:
        record = {"name": name, "arguments": arguments}
        _write_record("the model record", self.model_args_file, record)

    # -- the precision of training ----------------------------------------------------------

    def read_precision(self) -> dict[str, Any] | None:
        """The record of the last training start's precision (see :meth:`write_precision`), or
        None when there is none (a new run, or one written before this record existed)."""
        record = read_json_record(self.precision_file)
        return record if isinstance(record, dict) and "policy" in record else None

    def write_precision(self, record: dict[str, Any]) -> None:
        """Record the dtype policy training starts with: ``{"requested", "policy", "reason",
        "hardware"}``."""
        _write_record("the precision record", self.precision_file, record)

    # -- the batch size of training ---------------------------------------------------------

    @property
    def batch_size_file(self) -> Path:
        return self.path / self.BATCH_SIZE_FILE

    def read_batch_size(self) -> dict[str, Any] | None:
        """The record of the batch size training uses (see :meth:`write_batch_size`), or None
        when there is none (a new run, or one written before this record existed)."""
        try:
            record = json.loads(self.batch_size_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise UserError(f"cannot read {self.batch_size_file}: {error}") from error
        wanted = ("requested", "batch_size", "gradient_accumulation")
        return record if isinstance(record, dict) and all(k in record for k in wanted) else None

    def write_batch_size(self, record: dict[str, Any]) -> None:
        """Record the batch training uses: ``{"requested", "batch_size",
        "gradient_accumulation", "effective_batch_size", "global_batch", "unit", "reason",
        "search"}`` (:class:`~transformer_tf.training.batch_size.BatchChoice`)."""
        with writing_to("the batch size record", self.batch_size_file):
            write_atomic(self.batch_size_file, json.dumps(record, indent=2, sort_keys=True) + "\n")

    # -- where the weights came from -------------------------------------------------------

    def read_init_from(self) -> dict[str, Any] | None:
        """The record of ``train --init-from`` (see :mod:`transformer_tf.init_from`), or None
        for a run that started from random weights."""
        record = read_json_record(self.init_from_file)
        return record if isinstance(record, dict) and "source" in record else None

    def write_init_from(self, record: dict[str, Any]) -> None:
        _write_record("the init-from record", self.init_from_file, record)

    def save_model(self, model) -> None:
        """Write ``model.keras`` atomically: a temporary sibling, then a rename, so a failed
        write (a full disk) leaves the previous file, or none, never half a zip."""
        with writing_to("the final model", self.model_file), replacing(self.model_file) as tmp:
            model.save(tmp)

    # -- logs ----------------------------------------------------------------------------------

    def append_record(self, path: Path, record: dict) -> None:
        """Append one JSON line to ``path`` (``train_log`` or ``validation_log``)."""
        with writing_to("a log record", path), open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint_steps(self) -> list[int]:
        """Steps of the kept ``ckpt-<step>`` checkpoints, oldest first."""
        return [step_of(p) for p in self._recorded_checkpoints(self.checkpoint_dir)]

    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint the ``checkpoint`` state file names (unverified)."""
        return tf.train.latest_checkpoint(str(self.checkpoint_dir))

    def latest_intact_checkpoint(self) -> str | None:
        """The newest kept checkpoint that reads back whole, warning about each newer one that
        does not; None if the run has no checkpoint. Raises DamagedCheckpointError when every
        kept checkpoint is damaged.

        Only checkpoints the ``checkpoint`` state file names are candidates: TensorFlow
        rewrites that file (atomically) after a checkpoint's files are complete, so a
        checkpoint being written by a running trainer is never read here.
        """
        recorded = self._recorded_checkpoints(self.checkpoint_dir)
        damaged = []
        for path in reversed(recorded):
            damage = checkpoint_damage(path)
            if damage is None:
                for skipped in damaged:
                    log.warning(
                        "checkpoint %s is damaged: %s; using %s, the newest intact one",
                        Path(skipped[0]).name,
                        skipped[1],
                        Path(path).name,
                    )
                return path
            damaged.append((path, damage))
        if damaged:
            raise DamagedCheckpointError(
                f"every checkpoint in {self.checkpoint_dir} is damaged: "
                + "; ".join(damage for _, damage in damaged)
                + f". Move {self.checkpoint_dir} away to train from scratch"
            )
        return None

    def find_checkpoint(self, which: str = "latest") -> str:
        """Path prefix of the ``latest`` (newest intact), ``best`` or ``<step>`` checkpoint.

        A damaged ``latest`` falls back, with a warning, to the newest intact checkpoint; a
        damaged ``best`` or ``<step>`` (asked for by name) raises DamagedCheckpointError naming
        the file.
        """
        directory = self.checkpoint_dir
        if which == "latest":
            path = self.latest_intact_checkpoint()
        elif which == "best":
            recorded = self._recorded_checkpoints(self.best_dir)
            path = recorded[-1] if recorded else None
        elif re.fullmatch(r"ckpt-\d+", Path(which).name):  # a prefix (locate_checkpoint)
            path = which
        elif re.fullmatch(r"\d+", which):
            path = str(directory / f"ckpt-{which}")
            if not tf.io.gfile.exists(path + ".index"):
                kept = ", ".join(map(str, self.checkpoint_steps())) or "none"
                raise UserError(
                    f"no checkpoint at step {which} in {directory} (kept steps: {kept})"
                )
        else:
            raise UserError(f"--checkpoint must be latest, best or a step number, got `{which}`")
        if not path:
            raise UserError(
                f"no {which} checkpoint in {directory}: train first (transformer-tf train)"
            )
        if which != "latest":
            self.require_intact(path, f"the {which} checkpoint" if which == "best" else None)
        return path

    def require_intact(self, path: str, name: str | None = None) -> None:
        """Raise DamagedCheckpointError (naming the file and the intact steps) unless the
        checkpoint at prefix ``path`` reads back whole; ``name`` says what it is for."""
        damage = checkpoint_damage(path)
        if damage is not None:
            intact = [
                step
                for step in self.checkpoint_steps()
                if checkpoint_damage(self.checkpoint_path(step)) is None
            ]
            raise DamagedCheckpointError(
                f"{name or 'checkpoint ' + Path(path).name} cannot be used: {damage}. Intact "
                f"checkpoints: {', '.join(map(str, intact)) or 'none'} (--checkpoint latest "
                "takes the newest of them)"
            )

    @staticmethod
    def _recorded_checkpoints(directory: Path) -> list[str]:
        """The checkpoint prefixes the ``checkpoint`` state file in ``directory`` lists."""
        state = tf.train.get_checkpoint_state(str(directory))
        if state is None:
            return []
        paths = list(state.all_model_checkpoint_paths)
        if state.model_checkpoint_path and state.model_checkpoint_path not in paths:
            paths.append(state.model_checkpoint_path)
        return paths

    def checkpoint_path(self, step: int) -> str:
        return str(self.checkpoint_dir / f"ckpt-{step}")


def locate_checkpoint(spec: str | os.PathLike) -> tuple[RunDir, str]:
    """The run and the checkpoint that a command-line reference names, for
    :meth:`RunDir.find_checkpoint`: a run directory (``"latest"``), a run's ``checkpoints/best``
    directory (``"best"``), or a checkpoint prefix inside a run (``RUN/checkpoints/ckpt-500``,
    ``RUN/checkpoints/best/ckpt-480``; with or without ``.index``), returned as its path.

    Raises:
        UserError: none of these (the caller prefixes its option).
    """
    text = str(spec)
    text = text[: -len(".index")] if text.endswith(".index") else text
    path = Path(text)
    if RunDir(path).is_run():
        return RunDir(path), "latest"
    if path.name == RunDir.BEST_DIR and RunDir(path.parent.parent).is_run():
        return RunDir(path.parent.parent), "best"
    run = next((RunDir(parent) for parent in path.parents if RunDir(parent).is_run()), None)
    found = run is not None and re.fullmatch(r"ckpt-\d+", path.name)
    if found and tf.io.gfile.exists(f"{text}.index"):
        return run, text
    what = "does not exist" if not path.exists() and run is None else "is neither"
    raise UserError(
        f"{what} a run directory (with a {RunDir.CONFIG_FILE}), a run's "
        f"{RunDir.CHECKPOINT_DIR}/{RunDir.BEST_DIR}, nor a checkpoint of a run (a prefix such as "
        f"RUN/{RunDir.CHECKPOINT_DIR}/ckpt-300 with its .index file)"
    )


def make_checkpoint(model, **objects) -> tf.train.Checkpoint:
    """A checkpoint of the model's weights and any other trackable ``objects``.

    The model is saved as the ordered list of its weights, not as an object graph: Keras 3
    keeps lists of layers (a stack's blocks) in its own tracker, which TensorFlow's checkpoint
    graph does not traverse, so ``Checkpoint(model=model)`` silently misses those weights. The
    order of ``model.weights`` is fixed by the architecture, which the run's records pin.
    """
    return tf.train.Checkpoint(model_weights=list(model.weights), **objects)


def restore_model(model, path: str, averaged: bool = False) -> bool:
    """Load only the model weights from a training checkpoint.

    Args:
        model: keras.Model, of the run's architecture.
        path: str, the checkpoint's prefix.
        averaged: bool, then put the moving averages of the trainable weights that the
            checkpoint holds (``training.ema_decay``) in their place. Defaults to False.

    Returns:
        bool, whether moving averages were loaded (False when ``averaged`` is, or the
        checkpoint holds none: the raw weights are then loaded).
    """
    status = make_checkpoint(model).restore(path).expect_partial()
    status.assert_existing_objects_matched()
    if not averaged:
        return False
    return restore_averages(model.trainable_variables, path)


def average_checkpoints(model, run: RunDir, last: int, averaged: bool = False) -> list[int]:
    """Set the model's weights to the mean of the last ``last`` checkpoints; returns their steps.

    Averaging the final checkpoints of a run is a cheap ensemble that usually adds BLEU. With
    ``averaged`` each checkpoint contributes its moving averages where it holds them (see
    :func:`restore_model`).
    """
    steps = run.checkpoint_steps()
    if last < 1:
        raise UserError("--average-last must be at least 1")
    if len(steps) < last:
        raise UserError(
            f"--average-last {last} needs {last} checkpoints, but {run.checkpoint_dir} keeps "
            f"{len(steps)} (steps {', '.join(map(str, steps)) or 'none'}); raise "
            "training.keep_checkpoints for future runs"
        )
    chosen = steps[-last:]
    for step in chosen:
        run.require_intact(run.checkpoint_path(step))
    total = [np.zeros(w.shape, "float64") for w in model.weights]
    for step in chosen:
        restore_model(model, run.checkpoint_path(step), averaged)
        for acc, weight in zip(total, model.weights, strict=True):
            acc += np.asarray(weight.numpy(), "float64")
    for acc, weight in zip(total, model.weights, strict=True):
        weight.assign((acc / len(chosen)).astype(weight.dtype))
    return chosen


def step_of(path: str) -> int:
    """The step of a checkpoint prefix ``.../ckpt-<step>``."""
    return int(path.rsplit("-", 1)[-1])


def remove_partial_checkpoint(prefix: str) -> None:
    """Remove what a failed save of the checkpoint ``prefix`` left (TensorFlow's ``_temp``
    directory), so nothing half-written sits next to the intact checkpoints."""
    for leftover in glob.glob(glob.escape(prefix) + "_temp*"):
        shutil.rmtree(leftover, ignore_errors=True)
