"""``train CONFIG --init-from SOURCE``: a new run that starts from another run's weights.

The new run is a run of its own: step 0, a fresh optimizer, its learning-rate schedule from the
start and its own checkpoints. Only the model's weights come from the source: a run directory
(its newest intact checkpoint) or one checkpoint of a run (``RUN/checkpoints/ckpt-300``,
``RUN/checkpoints/best/ckpt-280``). Rerunning the command resumes the new run, as any rerun
does; the weights are taken once, before the first step, and ``RUN/init_from.json`` records
where they came from.

**Vocabulary.** By default the new run adopts the source run's vocabulary (its ``vocab/`` is
copied), so the model is exactly the source model. With ``--update-vocab``, or a config that
names ``data.vocabulary``, the new run has its own vocabulary (learned from its training data
as the config says, or the one named) and the weights indexed by token (embeddings, an untied
output layer and its bias, a classifier's naive-Bayes rows) are mapped by token: a token in
both vocabularies keeps its row, a new token keeps the row the new model was initialised with
(embeddings Normal(0, d_model^-0.5), output kernels Glorot-uniform, biases and naive-Bayes rows
zero), a dropped token's row goes. Tied and shared embeddings stay tied and shared: they are one
weight, mapped once.

**Positions.** A learned position table of another length keeps the source's rows for the
positions both have; positions beyond the source's keep their new initialisation.

**The model section.** The keys the new config's ``model:`` section leaves out are the source's
(a config with no ``model:`` section fine-tunes the source's model as it is); the keys it sets
must agree with the source, except dropout rates and ``max_length``. Every other weight must
exist in both models with the same shape; the first that does not is
refused (exit 2) naming the tensor and both shapes, before anything is assigned.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from transformer_tf.assembly import assemble
from transformer_tf.config import Config
from transformer_tf.data.review_tokenizer import ReviewTokenizer
from transformer_tf.data.special_tokens import SPECIAL_TOKENS
from transformer_tf.errors import UserError
from transformer_tf.layers.positional_encoding import POSITION_TABLE
from transformer_tf.models import weight_path
from transformer_tf.run import RunDir, locate_checkpoint, restore_model, step_of
from transformer_tf.tasks import TASKS

__all__ = [
    "InitSource",
    "SourceModel",
    "VocabularyMapping",
    "adopt_vocabulary",
    "check_same_kind",
    "describe",
    "inherit_model",
    "load_source",
    "resolve_source",
    "transfer_weights",
]

log = logging.getLogger(__name__)

#: The model arguments a run started from another run's weights may change: dropout rates and
#: the number of positions. Any other difference is refused, also one that leaves every weight's
#: shape as it was (activation, positions, pre- or post-norm): the weights would be misused.
_MAY_DIFFER = {"dropout", "attention_dropout", "ffn_dropout", "token_dropout", "max_length"}


@dataclass(frozen=True)
class InitSource:
    """Where the weights come from: a run and one of its checkpoints (a path prefix)."""

    run: RunDir
    checkpoint: str
    given: str  # as the user wrote it, for messages

    @property
    def step(self) -> int:
        return step_of(self.checkpoint)


@dataclass
class SourceModel:
    """The source run, built and restored (float32, on the default strategy)."""

    source: InitSource
    config: Config
    model_name: str
    model_args: dict
    model: keras.Model
    vocabularies: dict[str, list[str]]


@dataclass
class VocabularyMapping:
    """How one vocabulary was carried over: tokens kept, new and dropped."""

    name: str
    size: int
    source_size: int
    kept: int
    new: int
    dropped: int


def resolve_source(given: str | os.PathLike) -> InitSource:
    """The run and checkpoint that ``--init-from given`` names (see
    :func:`~transformer_tf.run.locate_checkpoint`: a run directory, its ``checkpoints/best``,
    or a checkpoint prefix inside a run).

    Raises:
        UserError: none of these, no checkpoint in the run, or a damaged checkpoint.
    """
    try:
        run, which = locate_checkpoint(given)
        return InitSource(run, run.find_checkpoint(which), str(given))
    except UserError as error:
        raise UserError(f"--init-from {given}: {error}") from None


def load_source(source: InitSource) -> SourceModel:
    """Build the source run's model in float32 and restore the source checkpoint into it."""
    config = source.run.read_config()
    built = assemble(config, source.run, write=False, policy="float32")
    restore_model(built.model, source.checkpoint)
    record = source.run.read_model_args()
    return SourceModel(
        source,
        config,
        record["name"] if record else config.model.name,
        dict(built.model_args),
        built.model,
        built.task.vocabularies(),
    )


def check_same_kind(config: Config, source: SourceModel) -> bool:
    """Whether the new run takes only part of the source's weights (``partial``): a run of a
    task that starts from another task's runs (a classifier from a masked LM: see
    :attr:`~transformer_tf.tasks.base.Task.starts_from`). A source of any other task, or of
    another model class of the same task, is refused (exit 2)."""
    where = f"--init-from {source.source.given}"
    if config.task != source.config.task:
        starts_from = TASKS[config.task].starts_from
        if source.config.task in starts_from:
            return True
        others = f" or of task {', '.join(sorted(starts_from))}" if starts_from else ""
        raise UserError(
            f"{where} is a {source.config.task} run; this config trains {config.task}, which "
            f"starts from runs of the same task{others}"
        )
    if config.model.name != source.model_name:
        raise UserError(
            f"{where} is a `{source.model_name}` model; this config builds "
            f"`{config.model.name}` (model.name): weights carry over between models of one class"
        )
    return False


#: Tokens every vocabulary of a kind has (padding, unknown, BOS, EOS): sharing only these
#: says nothing about two vocabularies.
_SPECIAL = {*SPECIAL_TOKENS, "", ReviewTokenizer.OOV}

#: Model keys filled in by validation (from ``num_layers``), never a sign of an explicit choice.
_DERIVED_MODEL_KEYS = {"name", "num_encoder_layers", "num_decoder_layers"}


def inherit_model(config: Config, source_config: Config) -> Config:
    """``config`` with the ``model:`` keys it does not set taken from ``source_config``; from
    a source of another task (pretraining), the keys both tasks' models have, except
    ``model.name``."""
    explicit = config.model.model_fields_set - _DERIVED_MODEL_KEYS
    if "num_layers" in explicit:
        explicit |= {"num_encoder_layers", "num_decoder_layers"}
    if config.task != source_config.task:
        shared = set(type(config.model).model_fields) & set(type(source_config.model).model_fields)
        taken = shared - explicit - {"name"}
        merged = config.model.model_copy(
            update={key: getattr(source_config.model, key) for key in taken}
        )
        return config.model_copy(update={"model": merged})
    merged = source_config.model.model_copy(
        update={key: getattr(config.model, key) for key in explicit}
    )
    return config.model_copy(update={"model": merged})


def keeps_source_vocabulary(config: Config, update_vocab: bool, source_config: Config) -> bool:
    """Whether the new run adopts the source's vocabulary: unless ``--update-vocab``, a
    config that names its own (``data.vocabulary``), or a source of another task (whose
    vocabulary is made for its own objective: a masked LM's has a mask token and no n-grams)."""
    return (
        not update_vocab
        and not getattr(config.data, "vocabulary", None)
        and config.task == source_config.task
    )


def adopt_vocabulary(run: RunDir, source: InitSource) -> None:
    """Copy the source run's vocabulary into ``run`` (if ``run`` has none yet).

    Copied to a temporary sibling first and renamed: an interrupted copy leaves no partial
    vocabulary that a rerun would take for the run's own.
    """
    if run.vocab_dir.exists():
        return
    tmp = run.path / f".{RunDir.VOCAB_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source.run.vocab_dir, tmp)
    os.replace(tmp, run.vocab_dir)


def _row_index(source_tokens: list[str], tokens: list[str]) -> np.ndarray:
    """For each id of ``tokens``, the id of the same token in ``source_tokens``, or -1."""
    where = {token: i for i, token in enumerate(source_tokens)}
    return np.array([where.get(token, -1) for token in tokens], dtype=np.int64)


def _mapped(value: np.ndarray, fresh: np.ndarray, rows: np.ndarray, axis: int) -> np.ndarray:
    """``fresh`` with the slices along ``axis`` whose ``rows`` entry is >= 0 taken from
    ``value`` at that index (kept tokens or positions); the others stay as initialised."""
    out = np.moveaxis(fresh.copy(), axis, 0)  # (new size, ...)
    source = np.moveaxis(value, axis, 0)  # (source size, ...)
    kept = rows >= 0
    out[kept] = source[rows[kept]]
    return np.moveaxis(out, 0, axis)


def _hint(model_args: dict, source: SourceModel, partial: bool = False) -> str:
    # A partial transfer compares the arguments both models take (a classifier's pooling or
    # classes have nothing to match in a masked LM).
    keys = (set.__and__ if partial else set.__or__)(set(model_args), set(source.model_args))
    differing = sorted(
        key
        for key in keys
        if key not in _MAY_DIFFER
        and not key.endswith("vocab_size")
        and model_args.get(key) != source.model_args.get(key)
    )
    if not differing:
        return ""
    return "; the model arguments differ in " + ", ".join(
        f"{key} ({source.model_args.get(key)!r} in the source, {model_args.get(key)!r} here)"
        for key in differing
    )


def _position_tables(model) -> dict[str, object]:
    """The learned position tables (:class:`~transformer_tf.layers.LearnedPositionalEmbedding`'s
    ``(max_length, d_model)`` weight) of the model, by relative path."""
    return {
        weight_path(w): w
        for w in model.weights
        if w.path.endswith(f"/{POSITION_TABLE}") and len(w.shape) == 2
    }


def transfer_weights(
    model,
    vocabularies: dict[str, list[str]],
    source: SourceModel,
    model_args: dict,
    partial: bool = False,
) -> list[VocabularyMapping]:
    """Assign ``source``'s weights to ``model`` (mapped by token where the vocabularies differ).

    Every weight is checked and computed first, then all are assigned: a refusal leaves the
    model as it was.

    Args:
        model: the new run's built model.
        vocabularies: the new run's tokens by id, per vocabulary (``Task.vocabularies``).
        source: the loaded source (:func:`load_source`).
        model_args: the new model's arguments (compared with the source's).
        partial: bool, take the weights both models have (by path) and leave the others: the
            new model's own (a classifier's head) keep their initialisation, the source's own
            (a masked LM's head) are not used. Else every weight must be in both.
            Defaults to False.

    Returns:
        One VocabularyMapping per vocabulary.

    Raises:
        UserError: a weight missing on one side (or, ``partial``, no weight in common), or a
            shape that does not fit.
    """
    where = f"--init-from {source.source.given}"
    hint = _hint(model_args, source, partial)
    theirs = {weight_path(w): w for w in source.model.weights}
    ours = {weight_path(w): w for w in model.weights}
    only_ours = [path for path in ours if path not in theirs]
    only_theirs = [path for path in theirs if path not in ours]
    if partial:
        if len(only_ours) == len(ours):
            raise UserError(
                f"{where}: the two models have no weight in common (the source has "
                f"{', '.join(list(theirs)[:5])}){hint}"
            )
        ours = {path: variable for path, variable in ours.items() if path in theirs}
    elif only_ours or only_theirs:
        parts = []
        if only_ours:
            parts.append(f"only the new model has {', '.join(only_ours[:5])}")
        if only_theirs:
            parts.append(f"only the source has {', '.join(only_theirs[:5])}")
        raise UserError(
            f"{where}: the two models do not have the same weights ({'; '.join(parts)}){hint}"
        )
    axes = {weight_path(v): (name, axis) for v, name, axis in model.vocabulary_weights()}
    indexed = {name for name, _ in axes.values()}
    rows = {
        name: _row_index(source.vocabularies[name], tokens)
        for name, tokens in vocabularies.items()
        if name in indexed
    }
    positions = _position_tables(model)
    assignments = []
    for path, variable in ours.items():
        value = theirs[path].numpy()
        shape = tuple(variable.shape)
        if path in axes or path in positions:
            name, axis = axes.get(path, ("positions", 0))
            index = (
                rows[name]
                if path in axes
                else np.where(np.arange(shape[0]) < value.shape[0], np.arange(shape[0]), -1)
            )
            others = value.shape[:axis] + value.shape[axis + 1 :]
            if others == shape[:axis] + shape[axis + 1 :]:
                value = _mapped(value, variable.numpy(), index, axis)
        if value.shape != shape:
            raise UserError(
                f"{where}: tensor {path} has shape {list(value.shape)} in the source and "
                f"{list(shape)} in the new model{hint}"
            )
        assignments.append((variable, value.astype(variable.dtype)))
    if hint:
        # Weights that fit are not enough: positions, the activation or the epsilon have no
        # weights of their own, yet the source's weights were trained with them.
        raise UserError(
            f"{where}: the new model is not the source's model{hint.replace('; the', ': the', 1)}."
            f" Set these model keys to the source's values ({source.source.run.config_file} has"
            " them); only dropout and max_length may differ"
        )
    for variable, value in assignments:
        variable.assign(value)
    mappings = []
    for name, index in rows.items():
        tokens = vocabularies[name]
        kept = int((index >= 0).sum())
        ordinary = sum(1 for i, t in enumerate(tokens) if index[i] >= 0 and t not in _SPECIAL)
        if partial and ordinary == 0:
            raise UserError(
                f"{where}: no token of the new run's {name} vocabulary but the special ones "
                "is in the source's: the "
                "two runs tokenize differently (data.tokenizer, data.lowercase), so its "
                "embedding would be of no use"
            )
        mappings.append(
            VocabularyMapping(
                name,
                size=len(tokens),
                source_size=len(source.vocabularies[name]),
                kept=kept,
                new=len(tokens) - kept,
                dropped=len(source.vocabularies[name]) - kept,
            )
        )
    return mappings


def record(
    source: SourceModel, mappings: list[VocabularyMapping], adopted: bool, model=None
) -> dict:
    """The ``RUN/init_from.json`` record. With the new ``model``: its weights that did not
    come from the source (``fresh``: a new head) and the source's that it did not take
    (``left``: the source's head), by path."""
    result = {
        "source": str(source.source.run.path.resolve()),
        "checkpoint": str(Path(source.source.checkpoint).resolve()),
        "step": source.source.step,
        "task": source.config.task,
        "vocabulary": "source" if adopted else "mapped by token",
        "vocabularies": [asdict(m) for m in mappings],
    }
    if model is not None:
        theirs = {weight_path(w) for w in source.model.weights}
        ours = {weight_path(w) for w in model.weights}
        result["fresh"] = sorted(ours - theirs)
        result["left"] = sorted(theirs - ours)
    return result


def describe(record: dict) -> str:
    """One line of an ``init_from.json`` record: the checkpoint, its step, each vocabulary."""
    vocabularies = [
        f"{v['name']} vocabulary "
        + (
            f"the source's ({v['size']} tokens)"
            if v["new"] == 0 and v["dropped"] == 0 and v["size"] == v["source_size"]
            else f"mapped by token: {v['kept']} kept, {v['new']} new, {v['dropped']} dropped "
            f"({v['source_size']} -> {v['size']} tokens)"
        )
        for v in record["vocabularies"]
    ]
    parts = [f"{record['checkpoint']} (step {record['step']})", *vocabularies]
    if record.get("fresh"):
        parts.append(f"new: {', '.join(record['fresh'])}")
    if record.get("left"):
        parts.append(f"not taken: {', '.join(record['left'])}")
    return "; ".join(parts)
