"""``transformer-tf import``: models trained elsewhere become run directories.

An importer (:mod:`.opennmt_tf`, :mod:`.marian`) reads another toolkit's checkpoint into an
:class:`ImportedModel`: our model's arguments, the tokenizers, and every weight under our
model's names, as NumPy arrays (read as arrays, never unpickled). :func:`write_run` turns it
into a run directory like one ``train`` writes (``config.yaml``, ``vocab/``,
``model_args.json``, ``checkpoints/ckpt-0``) plus ``imported.json``, which says where it came
from. ``evaluate``, ``translate``, ``score``, ``export`` and ``train --init-from`` accept it;
training it in place is refused (it has no optimizer state): start a run from it instead.

The run directory is written into a temporary sibling and renamed at the end: a refused or
failed import leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import yaml

from transformer_tf.data.tokenizers import Tokenizer, save_tokenizers
from transformer_tf.errors import UserError
from transformer_tf.files import new_directory, read_json_record
from transformer_tf.models import weight_path

__all__ = ["IMPORTED_FILE", "ImportedModel", "read_imported", "write_run"]

#: The record of an imported run (its origin), in the run directory.
IMPORTED_FILE = "imported.json"


@dataclass
class ImportedModel:
    """A model read from another toolkit, in our terms.

    Attributes:
        toolkit: str, ``"opennmt-tf"`` or ``"marian"``.
        origin: str, the path imported.
        model: dict, the ``model:`` section (``seq2seq_transformer`` arguments).
        source_tokenizer, target_tokenizer: the tokenizers (the same object when shared).
        weights: dict, our weight path below the model (``encoder/layer_0/.../kernel``) ->
            float32 array, for every weight of the model.
        decoding: dict, the ``decoding:`` section the toolkit's defaults come to.
        max_length: int, ``data.max_length`` of a run imported without a config.
        details: dict, what else the record should say (the checkpoint's step, notes).
    """

    toolkit: str
    origin: str
    model: dict[str, Any]
    source_tokenizer: Tokenizer
    target_tokenizer: Tokenizer
    weights: dict[str, np.ndarray]
    decoding: dict[str, Any] = field(default_factory=dict)
    max_length: int = 256
    details: dict[str, Any] = field(default_factory=dict)


def read_imported(run_path: str | os.PathLike) -> dict | None:
    """The ``imported.json`` record of a run directory, or None for a run trained here."""
    return read_json_record(Path(run_path) / IMPORTED_FILE)


def _config(imported: ImportedModel, config_path, overrides):
    """The run's validated config: the imported model, with the data, decoding and training
    sections of ``config_path`` (or, without one, ``data.source: none``)."""
    from transformer_tf.config import config_from_dict, load_config

    if config_path is None:
        raw: dict[str, Any] = {
            "task": "translation",
            "data": {"source": "none", "max_length": imported.max_length},
            "decoding": dict(imported.decoding),
        }
        base_dir = None
    else:
        given = load_config(config_path, overrides)
        if given.task != "translation":
            raise UserError(
                f"--config {config_path}: task is {given.task}; an imported translation model "
                "needs a translation config"
            )
        if getattr(given.data, "vocabulary", None):
            raise UserError(
                f"--config {config_path}: data.vocabulary names a vocabulary, but the imported "
                "model brings its own; remove the key"
            )
        raw = yaml.safe_load(given.to_yaml())
        base_dir = Path(config_path).resolve().parent
        overrides = ()  # applied above
    raw["model"] = {"name": "seq2seq_transformer", **imported.model}
    return config_from_dict(
        raw, source=str(config_path or imported.origin), overrides=overrides, base_dir=base_dir
    )


def write_run(
    imported: ImportedModel,
    run_dir: str | os.PathLike,
    *,
    config_path: str | os.PathLike | None = None,
    overrides=(),
) -> Path:
    """Write ``imported`` as the run directory ``run_dir`` (which must be new or empty).

    Args:
        imported: ImportedModel, from an importer.
        run_dir: the run directory to create.
        config_path: a translation config whose data, decoding and training sections the run
            takes (its model section is the imported model's); None: ``data.source: none``.
        overrides: ``--set`` values for that config.

    Returns:
        Path of the run directory.

    Raises:
        UserError: ``run_dir`` exists and is not empty, a bad config, or weights that do not
            fit the model (an architecture the importer should have refused).
    """
    from transformer_tf.assembly import assemble
    from transformer_tf.run import RunDir, make_checkpoint

    target = Path(run_dir)
    _check_new_run_dir(target)
    config = _config(imported, config_path, overrides)
    with new_directory(target, _check_new_run_dir, error=UserError) as partial:
        run = RunDir(partial)
        save_tokenizers(run.vocab_dir, imported.source_tokenizer, imported.target_tokenizer)
        built = assemble(config, run, write=True, policy="float32")
        _assign(built.model, imported.weights, imported.toolkit)
        manager = tf.train.CheckpointManager(
            make_checkpoint(built.model), str(run.checkpoint_dir), max_to_keep=1
        )
        manager.save(checkpoint_number=0)
        run.write_config(config)
        record = {
            "toolkit": imported.toolkit,
            "origin": str(Path(imported.origin).resolve()),
            **imported.details,
        }
        (partial / IMPORTED_FILE).write_text(
            json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    return target


def _check_new_run_dir(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"--run-dir {target} exists and is not empty; import into a new directory")


def _assign(model, weights: dict[str, np.ndarray], toolkit: str) -> None:
    """Set every weight of ``model`` from ``weights`` (by path below the model); all checked
    before any is assigned."""
    ours = {weight_path(w): w for w in model.weights}
    missing = sorted(set(ours) - set(weights))
    extra = sorted(set(weights) - set(ours))
    if missing or extra:
        raise UserError(
            f"the {toolkit} weights do not fit the model: "
            + "; ".join(
                part
                for part in (
                    f"no value for {', '.join(missing[:5])}" if missing else "",
                    f"no place for {', '.join(extra[:5])}" if extra else "",
                )
                if part
            )
        )
    for path, variable in ours.items():
        if tuple(weights[path].shape) != tuple(variable.shape):
            raise UserError(
                f"the {toolkit} weight for {path} has shape {list(weights[path].shape)}, the "
                f"model's is {list(variable.shape)}"
            )
    for path, variable in ours.items():
        variable.assign(np.asarray(weights[path], dtype=np.float32))
