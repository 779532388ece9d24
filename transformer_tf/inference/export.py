"""Export a trained run as a self-contained TensorFlow SavedModel (``transformer-tf export``).

The SavedModel has one signature, ``serving_default``, that takes raw text and does everything
in graph, so that it can be served (TF Serving, ``tf.saved_model.load``) without this package:

* translation runs: ``text`` ``(batch,)`` tf.string -> ``{"translation": (batch,) tf.string,
  "scores": (batch,) float32, "truncated": (batch,) bool}``: source tokenization, truncation to
  ``data.max_length - 1`` tokens (the source EOS is implicit; ``truncated`` says which inputs
  were cut), padding, greedy or beam search (or sampling) with the run's decoding settings,
  detokenization. ``scores`` is the search's score of each translation (beam search: summed
  log-probability over the GNMT length penalty; greedy and sampling: summed log-probability).
  Exported with ``n_best=N`` (``export --n-best N``) it also returns ``"translations"`` ``(batch,
  N)`` tf.string and ``"all_scores"`` ``(batch, N)`` float32, best first (``translation`` is
  their first column). The translations are those of
  :func:`~transformer_tf.inference.translate.translate` with the same
  :class:`~transformer_tf.inference.options.DecodingOptions` on the same checkpoint (batched
  differently, so only floating-point noise could differ).
* classification runs: ``text`` ``(batch,)`` tf.string -> ``{"probabilities": (batch,
  num_classes) float32, "label": (batch,) int32}``: the run's
  :class:`~transformer_tf.data.review_tokenizer.ReviewTokenizer` in graph (``tf_encode``: cleaning, words
  and n-grams, vocabulary), :func:`~transformer_tf.data.classification.truncate` as in training, the
  classifier and a softmax.

SentencePiece runs use ``tensorflow_text`` ops: a process loading such an export must
``import tensorflow_text`` first (it registers the ops); the provenance file lists it under
``requires``.

Provenance (run directory, checkpoint, step, decoding settings, tokenizers, versions) is written
to ``assets.extra/transformer_tf_export.json`` inside the export: ``assets.extra`` is the
SavedModel convention for files that travel with a model without being part of its graph.

An export is written to a temporary sibling directory and renamed into place, so a failed
export never leaves a half-written directory, and an existing non-empty directory is never
overwritten.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

import transformer_tf
from transformer_tf.assembly import load_run
from transformer_tf.data.classification import truncate
from transformer_tf.data.special_tokens import PAD_ID
from transformer_tf.errors import UserError
from transformer_tf.inference.options import SAMPLING_FIELDS, DecodingOptions
from transformer_tf.inference.search import make_decoder
from transformer_tf.run import writing_to

log = logging.getLogger(__name__)

SIGNATURE_NAME = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # "serving_default"
PROVENANCE_DIR = "assets.extra"
PROVENANCE_FILE = "transformer_tf_export.json"
PROVENANCE_FORMAT_VERSION = 1

_TEXT_SPEC = tf.TensorSpec([None], tf.string, name="text")


def export_run(
    run_dir: str | os.PathLike,
    export_dir: str | os.PathLike,
    *,
    checkpoint: str = "latest",
    average_last: int | None = None,
    beam_size: int | None = None,
    n_best: int | None = None,
) -> Path:
    """Export a checkpoint of a run as a SavedModel with a text-in, text-out signature.

    Args:
        run_dir: a directory written by ``transformer-tf train``.
        export_dir: where to write the SavedModel; must not exist or be an empty directory.
            Missing parent directories are created.
        checkpoint: ``"latest"``, ``"best"`` or a step number.
        average_last: export the average of the last K checkpoints instead.
        beam_size: beam size baked into a translation export (1 is greedy search); None uses
            the run's ``decoding.beam_size``. Ignored (with a warning) for classification.
        n_best: int in ``1 .. beam_size`` or None: also return the n-best lists
            (``translations``, ``all_scores``). Translation only.

    Returns:
        Path, ``export_dir``.

    Raises:
        UserError: ``export_dir`` is a file or a non-empty directory, ``beam_size < 1``,
            ``n_best`` outside ``1 .. beam_size``, ``beam_size > 1`` while the run samples
            (see :class:`~transformer_tf.inference.options.DecodingOptions`), or the run cannot
            be loaded (see :func:`~transformer_tf.assembly.load_run`).
    """
    run_dir, export_dir = Path(run_dir), Path(export_dir)
    # Checked before loading the run: refusing should be instant and touch nothing.
    check_export_dir(export_dir)
    DecodingOptions.check_flags(beam_size=beam_size, n_best=n_best)

    run = load_run(run_dir, checkpoint=checkpoint, average_last=average_last)
    config = run.config
    provenance = {
        "format_version": PROVENANCE_FORMAT_VERSION,
        "task": config.task,
        "run_dir": str(run_dir.resolve()),
        "checkpoint": str(run.checkpoint),
        "step": run.step,
        "model": config.model.name,
        "signature": SIGNATURE_NAME,
    }
    if config.task == "translation":
        options = DecodingOptions.from_config(config, beam_size=beam_size, n_best=n_best)
        source, target = run.task.source_tokenizer, run.task.target_tokenizer
        module = build_translation_module(
            run.model, source, target, options, nbest_outputs=n_best is not None
        )
        outputs = {
            "translation": "(batch,) string",
            "scores": "(batch,) float32, the search's score of each translation",
            "truncated": "(batch,) bool, whether the input was cut to max_input_length - 1",
        }
        if n_best is not None:
            outputs["translations"] = f"(batch, {n_best}) string, best first"
            outputs["all_scores"] = f"(batch, {n_best}) float32"
        provenance.update(
            inputs={"text": "(batch,) string, raw source sentences"},
            outputs=outputs,
            beam_size=options.beam_size,
            n_best=n_best,
            sampling=(
                {name: getattr(options, name) for name in SAMPLING_FIELDS}
                if options.sampling
                else None
            ),
            length_penalty=options.length_penalty,
            max_input_length=options.max_input_length,
            max_output_length=options.max_output_length,
            tokenizer={
                "source": source.kind,
                "target": target.kind,
                "shared": source is target,
                "source_vocab_size": source.vocab_size,
                "target_vocab_size": target.vocab_size,
            },
        )
        uses_tf_text = any(kind.startswith("sentencepiece") for kind in (source.kind, target.kind))
    elif config.task == "classification":
        if beam_size is not None:
            log.warning("--beam-size has no effect on a classification export")
        if n_best is not None:
            log.warning("--n-best has no effect on a classification export")
        data = config.data
        module = build_classification_module(
            run.model,
            run.task.tokenizer,
            max_length=data.max_length,
            truncation=data.truncation,
        )
        provenance.update(
            inputs={"text": "(batch,) string, raw texts"},
            outputs={"probabilities": "(batch, num_classes) float32", "label": "(batch,) int32"},
            num_classes=config.model.num_classes,
            max_input_length=data.max_length,
            truncation=data.truncation,
            vocab_size=run.task.tokenizer.vocab_size,
        )
        uses_tf_text = False
    else:  # pragma: no cover - the config only allows the two tasks above
        raise UserError(f"export supports translation and classification runs, not {config.task}")
    provenance["requires"] = ["tensorflow"] + (["tensorflow_text"] if uses_tf_text else [])
    provenance["versions"] = _versions(uses_tf_text)
    provenance["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

    _save_atomically(module, export_dir, provenance)
    return export_dir


def build_translation_module(
    model,
    source_tokenizer,
    target_tokenizer,
    options: DecodingOptions,
    *,
    nbest_outputs: bool = False,
) -> tf.Module:
    """A ``tf.Module`` whose ``serve(text)`` translates a ``(batch,)`` string tensor in graph.

    ``serve`` returns ``{"translation": (batch,) tf.string, "scores": (batch,) float32,
    "truncated": (batch,) bool}``, the same strings as
    :func:`~transformer_tf.inference.translate.translate` with the same options (its
    ``.texts``), and with ``nbest_outputs`` also ``"translations"`` ``(batch, N)`` and
    ``"all_scores"`` ``(batch, N)``, ``N = options.n_best``.

    Args:
        model: a decoding model (``Seq2SeqTransformer``), built and restored.
        source_tokenizer, target_tokenizer: :class:`~transformer_tf.data.tokenizers.Tokenizer`.
        options: :class:`~transformer_tf.inference.options.DecodingOptions`: the search (see
            :func:`~transformer_tf.inference.search.make_decoder`); sources keep
            ``options.max_input_length - 1`` tokens. ``batch_size`` plays no part: the server
            batches.
        nbest_outputs: bool, also return the n-best lists (``export --n-best``). Defaults to
            False.
    """
    decoder = make_decoder(model, options, with_scores=True)
    n_best = options.n_best
    keep = options.max_input_length - 1
    module = tf.Module(name="transformer_tf_translation")
    # The tokenizers' resources (lookup tables, SentencePiece model) must be reachable from the
    # module for the SavedModel to include them; tf_module is what holds them.
    module.source_tokenizer = source_tokenizer.tf_module
    module.target_tokenizer = target_tokenizer.tf_module
    _attach_variables(module, model)

    @tf.function(input_signature=[_TEXT_SPEC])
    def serve(text):
        encoded = source_tokenizer.tf_encode(text)  # ragged (batch, tokens)
        truncated = encoded.row_lengths() > keep
        source_ids = _pad_to_dense(encoded[:, :keep])  # (batch, <= keep)
        ids, scores = decoder(source_ids)  # (batch, N, length), (batch, N)
        shape = tf.shape(ids)
        texts = target_tokenizer.tf_decode(tf.reshape(ids, [shape[0] * shape[1], shape[2]]))
        texts = tf.reshape(texts, shape[:2])  # (batch, N)
        outputs = {
            "translation": tf.ensure_shape(texts[:, 0], [None]),
            "scores": tf.ensure_shape(scores[:, 0], [None]),
            "truncated": tf.ensure_shape(truncated, [None]),
        }
        if nbest_outputs:
            outputs["translations"] = tf.ensure_shape(texts, [None, n_best])
            outputs["all_scores"] = tf.ensure_shape(scores, [None, n_best])
        return outputs

    module.serve = serve
    return module


def build_classification_module(
    model, tokenizer, *, max_length: int, truncation: str = "head"
) -> tf.Module:
    """A ``tf.Module`` whose ``serve(text)`` classifies a ``(batch,)`` string tensor in graph.

    ``serve`` returns ``{"probabilities": (batch, num_classes) float32, "label": (batch,)
    int32}``. Text goes through the training preprocessing: ``tokenizer.tf_encode`` (in-graph
    cleaning, words and n-grams, the run's vocabulary) and
    :func:`~transformer_tf.data.classification.truncate` to ``max_length`` ids.

    Args:
        model: ``TransformerClassifier``, built and restored.
        tokenizer: :class:`~transformer_tf.data.review_tokenizer.ReviewTokenizer`, the run's.
        max_length: int, ``data.max_length``.
        truncation: str, ``data.truncation`` (``head``, ``tail`` or ``head_tail``).
    """
    module = tf.Module(name="transformer_tf_classification")
    # The vocabulary table must be reachable from the module for the SavedModel to include it.
    module.tokenizer = tokenizer.tf_module
    _attach_variables(module, model)

    @tf.function(input_signature=[_TEXT_SPEC])
    def serve(text):
        ids = _pad_to_dense(truncate(tokenizer.tf_encode(text), max_length, truncation))
        logits = model(ids, training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        label = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities, "label": label}

    module.serve = serve
    return module


def _pad_to_dense(ids: tf.RaggedTensor) -> tf.Tensor:
    """Ragged ``(batch, None)`` ids -> int32 ``(batch, max(1, longest))`` padded with PAD_ID.

    At least one column, as ``translate_ids`` builds its batches: a batch of empty texts (or no
    text) then gives an all-padding source instead of a zero-length one.
    """
    dense = tf.cast(ids.to_tensor(default_value=PAD_ID), tf.int32)
    missing = tf.maximum(1 - tf.shape(dense)[1], 0)
    return tf.pad(dense, [[0, 0], [0, missing]], constant_values=PAD_ID)


def _attach_variables(module: tf.Module, model) -> None:
    """Make the model's variables reachable from ``module``.

    Keras 3 keeps layer lists (the encoder/decoder blocks) in its own tracker, which TensorFlow's
    object graph does not traverse, so attaching the model alone may leave variables out of the
    SavedModel. A plain list of the variables is tracked by ``tf.Module``. The model itself is
    not attached: the serving function captures the variables it reads, and Keras' own
    SavedModel hooks (training functions, call traces) have no place in a serving export.
    """
    module.model_variables = list(model.weights)


def check_export_dir(export_dir: Path) -> None:
    """Refuse an ``export_dir`` that is a file or a non-empty directory."""
    if export_dir.is_dir():
        if any(export_dir.iterdir()):
            raise UserError(
                f"export directory {export_dir} already exists and is not empty; "
                "choose a new directory or remove it"
            )
    elif export_dir.exists() or export_dir.is_symlink():
        raise UserError(f"export directory {export_dir} exists and is not a directory")


def _save_atomically(module: tf.Module, export_dir: Path, provenance: dict) -> None:
    """Save ``module`` to a temporary sibling of ``export_dir``, then rename it into place.

    A sibling (same parent, so the same file system) makes the final rename atomic; on any
    failure the temporary directory is removed and ``export_dir`` is left as it was.
    """
    parent = export_dir.parent
    with writing_to("the SavedModel", export_dir):
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.", suffix=".tmp", dir=parent))
    try:
        # A full disk or a read-only parent: one line naming the export (RunWriteError).
        with writing_to("the SavedModel", export_dir):
            tf.saved_model.save(module, str(tmp), signatures={SIGNATURE_NAME: module.serve})
            extra = tmp / PROVENANCE_DIR
            extra.mkdir()
            (extra / PROVENANCE_FILE).write_text(
                json.dumps(provenance, indent=2) + "\n", encoding="utf-8"
            )
            # mkdtemp makes the directory 0700 (private while incomplete); an export is meant
            # to be read by a server running as another user.
            os.chmod(tmp, 0o755)
        # Checked again right before the rename: the export may have taken minutes. os.rename
        # replaces an empty directory and fails on a non-empty one, so a late writer is safe.
        check_export_dir(export_dir)
        try:
            os.rename(tmp, export_dir)
        except OSError as error:
            raise UserError(f"cannot move the export into {export_dir}: {error}") from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _versions(uses_tf_text: bool) -> dict:
    versions = {
        "transformer_tf": transformer_tf.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }
    if uses_tf_text:
        import tensorflow_text

        versions["tensorflow_text"] = tensorflow_text.__version__
    return versions
