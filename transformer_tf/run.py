"""The run directory: one object owns its layout, its records and its checkpoints.

A run directory is what ``transformer-tf train`` writes and what ``evaluate``, ``translate`` and
``export`` read back, with nothing else needed::

    RUN/config.yaml             the resolved config: the experiment record
    RUN/model_args.json         the arguments the model was built with (its shape)
    RUN/vocab/                  tokenizers or vocabulary
    RUN/checkpoints/ckpt-N.*    the last ``training.keep_checkpoints`` checkpoints
    RUN/checkpoints/best/       the best checkpoint on validation
    RUN/logs/{train,validation} TensorBoard
    RUN/train_log.jsonl         one record per logging window
    RUN/validation_log.jsonl    one record per validation
    RUN/model.keras             the final model, written when training ends

Every other module asks :class:`RunDir` for a path instead of spelling it. Checkpoints store
the model as the ordered list of its weights (:func:`make_checkpoint`), which is the format
every reader here (resume, evaluation, averaging, export) shares.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import yaml

from transformer_tf.config import Config, load_config, model_affecting_differences, save_config
from transformer_tf.errors import UserError

__all__ = ["RunDir", "make_checkpoint", "restore_model", "average_checkpoints"]


class RunDir:
    """The layout of one run directory and the reading and writing of its records.

    Args:
        path: str or PathLike, the directory (it need not exist yet).
    """

    CONFIG_FILE = "config.yaml"
    MODEL_ARGS_FILE = "model_args.json"
    MODEL_FILE = "model.keras"
    VOCAB_DIR = "vocab"
    CHECKPOINT_DIR = "checkpoints"
    BEST_DIR = "best"
    LOG_DIR = "logs"
    TRAIN_LOG = "train_log.jsonl"
    VALIDATION_LOG = "validation_log.jsonl"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # -- paths ---------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / self.CONFIG_FILE

    @property
    def model_args_file(self) -> Path:
        return self.path / self.MODEL_ARGS_FILE

    @property
    def model_file(self) -> Path:
        return self.path / self.MODEL_FILE

    @property
    def vocab_dir(self) -> Path:
        return self.path / self.VOCAB_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / self.CHECKPOINT_DIR

    @property
    def best_dir(self) -> Path:
        return self.checkpoint_dir / self.BEST_DIR

    def log_dir(self, name: str) -> Path:
        """TensorBoard directory ``logs/<name>`` (``train`` or ``validation``)."""
        return self.path / self.LOG_DIR / name

    @property
    def train_log(self) -> Path:
        return self.path / self.TRAIN_LOG

    @property
    def validation_log(self) -> Path:
        return self.path / self.VALIDATION_LOG

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
                    f"--set cannot change the model of a trained run ({', '.join(changed)}); "
                    "only data, decoding and distribute settings may be overridden"
                )
        return config

    def write_config(self, config: Config) -> None:
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
            if self.path.exists() and any(self.path.iterdir()):
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
                f"run directory {self.path} holds a run with a different model or vocabulary "
                f"({', '.join(differences)} differ from {self.config_file}); resuming it would "
                "mix two models. Use a new --run-dir, or restore those values."
            )
        return True

    # -- the model's shape ---------------------------------------------------------------------

    def read_model_args(self) -> dict[str, Any] | None:
        """The recorded ``{"name": ..., "arguments": {...}}`` of the built model, or None for a
        run written before this record existed."""
        if not self.model_args_file.is_file():
            return None
        try:
            record = json.loads(self.model_args_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise UserError(f"cannot read {self.model_args_file}: {error}") from error
        if not isinstance(record, dict) or not isinstance(record.get("arguments"), dict):
            raise UserError(f"{self.model_args_file}: expected {{'name': ..., 'arguments': {{}}}}")
        return record

    def write_model_args(self, name: str, arguments: dict[str, Any]) -> None:
        _write_atomic(
            self.model_args_file,
            json.dumps({"name": name, "arguments": arguments}, indent=2, sort_keys=True) + "\n",
        )

    # -- logs ----------------------------------------------------------------------------------

    def append_record(self, path: Path, record: dict) -> None:
        """Append one JSON line to ``path`` (``train_log`` or ``validation_log``)."""
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint_steps(self) -> list[int]:
        """Steps of the kept ``ckpt-<step>`` checkpoints, oldest first."""
        state = tf.train.get_checkpoint_state(str(self.checkpoint_dir))
        if state is None:
            return []
        return [_step_of(p) for p in state.all_model_checkpoint_paths]

    def latest_checkpoint(self) -> str | None:
        return tf.train.latest_checkpoint(str(self.checkpoint_dir))

    def find_checkpoint(self, which: str = "latest") -> str:
        """Path prefix of the ``latest``, ``best`` or ``<step>`` checkpoint."""
        directory = self.checkpoint_dir
        if which == "latest":
            path = self.latest_checkpoint()
        elif which == "best":
            path = tf.train.latest_checkpoint(str(self.best_dir))
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
        return path

    def checkpoint_path(self, step: int) -> str:
        return str(self.checkpoint_dir / f"ckpt-{step}")


def make_checkpoint(model, **objects) -> tf.train.Checkpoint:
    """A checkpoint of the model's weights and any other trackable ``objects``.

    The model is saved as the ordered list of its weights, not as an object graph: Keras 3
    keeps lists of layers (a stack's blocks) in its own tracker, which TensorFlow's checkpoint
    graph does not traverse, so ``Checkpoint(model=model)`` silently misses those weights. The
    order of ``model.weights`` is fixed by the architecture, which the run's records pin.
    """
    return tf.train.Checkpoint(model_weights=list(model.weights), **objects)


def restore_model(model, path: str) -> None:
    """Load only the model weights from a training checkpoint."""
    status = make_checkpoint(model).restore(path).expect_partial()
    status.assert_existing_objects_matched()


def average_checkpoints(model, run: RunDir, last: int) -> list[int]:
    """Set the model's weights to the mean of the last ``last`` checkpoints; returns their steps.

    Averaging the final checkpoints of a run is a cheap ensemble that usually adds BLEU.
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
    total = [np.zeros(w.shape, "float64") for w in model.weights]
    for step in chosen:
        restore_model(model, run.checkpoint_path(step))
        for acc, weight in zip(total, model.weights, strict=True):
            acc += np.asarray(weight.numpy(), "float64")
    for acc, weight in zip(total, model.weights, strict=True):
        weight.assign((acc / len(chosen)).astype(weight.dtype))
    return chosen


def _step_of(path: str) -> int:
    return int(path.rsplit("-", 1)[-1])


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
