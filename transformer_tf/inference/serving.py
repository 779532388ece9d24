"""What a SavedModel export serves: one ``tf.Module`` per task whose ``serve(text)`` takes raw
text and does everything in graph (tokenization, the model, decoding or a softmax).

Each task builds its own (``Task.serving``); :func:`~transformer_tf.inference.export.export_run`
saves it with its provenance. This module sits below the tasks: it knows models, tokenizers and
the search, not runs.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from transformer_tf.data.classification import truncate
from transformer_tf.data.special_tokens import PAD_ID
from transformer_tf.inference.options import DecodingOptions
from transformer_tf.inference.search import make_decoder

__all__ = ["Serving", "build_classification_module", "build_translation_module"]

_TEXT_SPEC = tf.TensorSpec([None], tf.string, name="text")


@dataclasses.dataclass(frozen=True)
class Serving:
    """A task's serving module and what the export records about it.

    Attributes:
        module: tf.Module with a ``serve`` tf.function (the ``serving_default`` signature).
        provenance: dict, the inputs, outputs and settings baked into ``serve``.
        requires: tuple[str, ...], the Python packages a process loading the export needs.
    """

    module: tf.Module
    provenance: dict
    requires: tuple[str, ...] = ("tensorflow",)


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
