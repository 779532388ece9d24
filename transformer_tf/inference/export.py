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
from pathlib import Path

import keras
import tensorflow as tf

import transformer_tf
from transformer_tf.assembly import load_run
from transformer_tf.errors import UserError
from transformer_tf.files import new_directory
from transformer_tf.inference.options import DecodingOptions
from transformer_tf.run import writing_to

log = logging.getLogger(__name__)

SIGNATURE_NAME = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # "serving_default"
PROVENANCE_DIR = "assets.extra"
PROVENANCE_FILE = "transformer_tf_export.json"
PROVENANCE_FORMAT_VERSION = 1


def export_run(
    run_dir: str | os.PathLike,
    export_dir: str | os.PathLike,
    *,
    checkpoint: str = "latest",
    average_last: int | None = None,
    beam_size: int | None = None,
    n_best: int | None = None,
    raw_weights: bool = False,
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
        raw_weights: bool, export the raw weights of a run that keeps moving averages
            (``training.ema_decay``) rather than the averages (see
            :func:`~transformer_tf.assembly.load_run`).

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

    run = load_run(
        run_dir, checkpoint=checkpoint, average_last=average_last, raw_weights=raw_weights
    )
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
    serving = run.task.serving(run.model, beam_size=beam_size, n_best=n_best)
    provenance.update(serving.provenance)
    uses_tf_text = "tensorflow_text" in serving.requires
    provenance["requires"] = ["tensorflow"] + (["tensorflow_text"] if uses_tf_text else [])
    provenance["versions"] = _versions(uses_tf_text)
    provenance["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

    _save_atomically(serving.module, export_dir, provenance)
    return export_dir


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
    """Save ``module`` and its provenance into ``export_dir`` through a temporary sibling
    (:func:`~transformer_tf.files.new_directory`): all of it, or nothing."""
    # A full disk or a read-only parent: one line naming the export (RunWriteError).
    with (
        writing_to("the SavedModel", export_dir),
        new_directory(export_dir, check_export_dir, error=UserError) as tmp,
    ):
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE_NAME: module.serve})
        extra = tmp / PROVENANCE_DIR
        extra.mkdir()
        (extra / PROVENANCE_FILE).write_text(
            json.dumps(provenance, indent=2) + "\n", encoding="utf-8"
        )


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
