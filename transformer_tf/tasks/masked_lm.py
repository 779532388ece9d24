"""Masked-language-model pretraining (BERT): plain text -> the original tokens at masked places.

The run learns an encoder on unlabeled text; a classification run then starts from it
(``train CLASSIFICATION_CONFIG --init-from RUN``, see :mod:`transformer_tf.init_from`): the
embedding and the encoder carry over, the head starts fresh. The documents are tokenized as the
classification task's reviews are (:class:`~transformer_tf.data.review_tokenizer.ReviewTokenizer`,
words only) so that the two vocabularies map token by token.
"""

from __future__ import annotations

import logging
import math

import tensorflow as tf

from transformer_tf.config import Config
from transformer_tf.data import text
from transformer_tf.data.bucketing import bucket_batch_sizes
from transformer_tf.data.masking import masked_token_accuracy, masked_token_loss
from transformer_tf.data.review_tokenizer import ReviewTokenizer
from transformer_tf.data.special_tokens import UNK_ID
from transformer_tf.errors import DataError, UserError
from transformer_tf.run import RunDir
from transformer_tf.tasks.pretraining import PretrainingTask

log = logging.getLogger(__name__)

#: Ids below this are never chosen: padding and the out-of-vocabulary token.
FIRST_MASKABLE_ID = UNK_ID + 1


class MaskedLMTask(PretrainingTask):
    """BERT's masked-LM objective on ``data.source: text`` (:class:`~transformer_tf.config.TextData`).

    Inputs are ``{"token_ids": (batch, length), "mask_positions": (batch, P)}`` and labels
    ``{"ids": (batch, P), "weights": (batch, P)}`` (:func:`~transformer_tf.data.text.chosen_positions`);
    the model predicts the chosen positions only. Validation reports the loss, the masked-token
    ``accuracy`` and the ``perplexity`` (exp of the loss), over the chosen tokens.
    """

    name = "masked_lm"
    fine_tuned_by = "classification"

    def __init__(self, config: Config, run: RunDir):
        super().__init__(config, run)
        self.tokenizer: ReviewTokenizer | None = None

    @property
    def mask_id(self) -> int:
        """The mask token's id: the vocabulary's last."""
        return self.tokenizer.vocab_size - 1

    def vocabulary_ready(self) -> bool:
        return (self.run.vocab_dir / "vocab.txt").exists()

    def prepare(self, create: bool = False, write: bool = True) -> None:
        vocab_dir = self.run.vocab_dir
        if self.vocabulary_ready():
            self.tokenizer = ReviewTokenizer.load(vocab_dir)
            if self.tokenizer.vocab[-1] != text.MASK_TOKEN or self.tokenizer.ngrams != 1:
                raise DataError(
                    f"{vocab_dir} is not a masked-LM vocabulary (words only, ending with "
                    f"{text.MASK_TOKEN})"
                )
            return
        if not create:
            raise UserError(f"{vocab_dir} has no vocabulary: is {self.run} a trained run?")
        data = self.config.data
        texts = self.training_texts(data.vocabulary_sample)
        words = ReviewTokenizer.build(
            texts, data.vocab_size - 1, lowercase=data.lowercase, max_length=data.max_length
        )
        self.tokenizer = ReviewTokenizer(
            [*words.vocab, text.MASK_TOKEN],
            lowercase=data.lowercase,
            max_tokens=data.vocab_size,
            max_length=data.max_length,
        )
        log.info("masked-LM vocabulary: %d tokens from %d documents", len(words.vocab), len(texts))
        if write:
            self.tokenizer.save(vocab_dir)

    def vocabulary_args(self) -> dict:
        return {"vocab_size": self.tokenizer.vocab_size}

    def tokenizers(self) -> dict:
        return {"text": self.tokenizer}

    def vocabularies(self) -> dict[str, list[str]]:
        return {"source": list(self.tokenizer.vocab)}

    def positions_needed(self) -> int:
        return self.config.data.max_length

    def batches(self, documents: tf.data.Dataset, training: bool, epoch: int) -> tf.data.Dataset:
        settings = self.config.training
        options = dict(seed=settings.seed, epoch=epoch, training=training)
        batches = text.length_batches(
            documents,
            self.tokenizer,
            batch_size=settings.batch_size,
            batch_type=settings.batch_type,
            **self.data_options("max_length", "truncation", "shuffle_buffer"),
            **options,
        )
        masking = self.data_options("mask_probability", "mask_fraction", "random_fraction")
        return text.mask_batches(
            batches,
            mask_id=self.mask_id,
            vocab_size=self.tokenizer.vocab_size,
            first_maskable_id=FIRST_MASKABLE_ID,
            **masking,
            **options,
        )

    def probe_batch(self, tokens: int):
        # Documents of data.max_length tokens, every position predicted: an upper bound.
        length = self.config.data.max_length
        (examples,) = bucket_batch_sizes([length], tokens, "tokens")
        ids = tf.fill([examples, length], tf.constant(FIRST_MASKABLE_ID, tf.int32))
        positions = tf.broadcast_to(tf.range(length, dtype=tf.int32), [examples, length])
        inputs = {"token_ids": ids, "mask_positions": positions}
        return inputs, {"ids": ids, "weights": tf.ones([examples, length], tf.float32)}

    def loss(self, labels, logits, label_smoothing: float):
        return masked_token_loss(labels["ids"], logits, labels["weights"], label_smoothing)

    def metrics(self) -> dict:
        return {
            "accuracy": lambda labels, logits: masked_token_accuracy(
                labels["ids"], logits, labels["weights"]
            )
        }

    def derived_scores(self, scores: dict) -> dict:
        # exp of the mean cross-entropy over the chosen tokens (capped: exp overflows at ~709).
        return {"perplexity": math.exp(min(scores["loss"], 700.0))}
