"""Translate text with a trained model: batching, tokenization and the run's decoding settings."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from transformer_tf.data.special_tokens import EOS_ID, PAD_ID
from transformer_tf.inference.search import make_decoder


def translate_ids(source_ids: list[list[int]], *, batch_size: int, decoder) -> list[list[int]]:
    """Decode lists of source ids in length-sorted batches; returns ids in input order.

    Sorting by length keeps padding (and so wasted decoding work) small.
    """
    order = np.argsort([len(ids) for ids in source_ids], kind="stable")
    outputs: list[list[int] | None] = [None] * len(source_ids)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        longest = max(1, max(len(source_ids[i]) for i in chunk))
        batch = np.zeros((len(chunk), longest), "int32")
        for row, i in enumerate(chunk):
            batch[row, : len(source_ids[i])] = source_ids[i]
        decoded = decoder(tf.constant(batch)).numpy()
        for row, i in enumerate(chunk):
            outputs[i] = _strip(decoded[row])
    return outputs


def _strip(ids) -> list[int]:
    """Ids up to (not including) EOS, without padding."""
    result = []
    for token in ids:
        token = int(token)
        if token == EOS_ID:
            break
        if token != PAD_ID:
            result.append(token)
    return result


def translate_texts(
    model,
    source_tokenizer,
    target_tokenizer,
    texts: list[str],
    *,
    max_input_length: int,
    max_output_length: int,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    batch_size: int = 64,
) -> list[str]:
    """Source sentences -> detokenized translations."""
    decoder = make_decoder(
        model, max_length=max_output_length, beam_size=beam_size, length_penalty=length_penalty
    )
    # Inputs longer than the model was trained for are truncated (EOS of the source is implicit).
    source_ids = [source_tokenizer.encode(t)[: max_input_length - 1] for t in texts]
    decoded = translate_ids(source_ids, batch_size=batch_size, decoder=decoder)
    return [target_tokenizer.decode(ids) for ids in decoded]


def translate_with_task(
    task, model, texts: list[str], *, beam_size: int | None = None
) -> list[str]:
    """Translate with a translation task's tokenizers and its config's decoding settings
    (``decoding.beam_size`` unless ``beam_size`` is given)."""
    config = task.config
    return translate_texts(
        model,
        task.source_tokenizer,
        task.target_tokenizer,
        texts,
        max_input_length=config.data.max_length,
        max_output_length=config.decoding.max_length,
        beam_size=config.decoding.beam_size if beam_size is None else beam_size,
        length_penalty=config.decoding.length_penalty,
        batch_size=examples_per_batch(config),
    )


def examples_per_batch(config) -> int:
    """Sentences per decoding batch: ``training.batch_size``, or with a token budget
    (``batch_type: tokens``) as many sentences of the maximum length as the budget holds."""
    training = config.training
    if training.batch_type == "tokens":
        return max(1, training.batch_size // max(config.data.max_length, 1))
    return training.batch_size
