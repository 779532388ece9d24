"""Denoising pretraining (BART's text infilling): a corrupted document -> the document.

An encoder-decoder learns to rebuild plain text whose spans were each replaced by one mask
token; a translation run then starts from it (``train TRANSLATION_CONFIG --init-from RUN``, see
:mod:`transformer_tf.init_from`): every weight carries over, the vocabulary mapped by token.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from transformer_tf.config import Config
from transformer_tf.data import text, tokenizers
from transformer_tf.data.seeds import epoch_seeds
from transformer_tf.data.special_tokens import PAD_ID
from transformer_tf.data.translation import batch_translation_examples, seq2seq_probe_batch
from transformer_tf.errors import UserError
from transformer_tf.run import RunDir
from transformer_tf.tasks import losses, metrics
from transformer_tf.tasks.pretraining import PretrainingTask

log = logging.getLogger(__name__)

#: The mask token's name in the run's vocabularies (its id is one past the tokenizer's).
MASK_TOKEN = "<mask>"


def sequence_exact_match(labels, logits):
    """Teacher-forced exact match: the sequences whose every (non-padding) token is the
    argmax prediction given the original tokens before it, ``(matches, sequences)``."""
    real = tf.not_equal(labels, PAD_ID)  # (batch, length)
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    wrong = real & tf.not_equal(predictions, tf.cast(labels, tf.int32))
    matches = tf.cast(~tf.reduce_any(wrong, axis=1), tf.float32)  # (batch,)
    return tf.reduce_sum(matches), tf.cast(tf.shape(labels)[0], tf.float32)


class DenoisingTask(PretrainingTask):
    """BART's text infilling on ``data.source: text`` (:class:`~transformer_tf.config.DenoisingData`).

    Batches are translation batches (``{"source", "target"}`` inputs, labels the target shifted
    by one): the source the corrupted document, the target the document. The tokenizer is a
    translation tokenizer (word or SentencePiece), one for both sides; the mask token gets the
    id after its vocabulary, so the model's vocabularies have one more entry. Validation reports
    the reconstruction ``loss``, the ``token_accuracy`` and the teacher-forced ``exact_match``
    (:func:`sequence_exact_match`), all teacher forced.
    """

    name = "denoising"
    fine_tuned_by = "translation"

    def __init__(self, config: Config, run: RunDir):
        super().__init__(config, run)
        self.tokenizer = None

    @property
    def mask_id(self) -> int:
        return self.tokenizer.vocab_size

    def vocabulary_ready(self) -> bool:
        return (self.run.vocab_dir / tokenizers.MANIFEST_NAME).exists()

    def prepare(self, create: bool = False, write: bool = True) -> None:
        vocab_dir = self.run.vocab_dir
        if self.vocabulary_ready():
            self.tokenizer, _ = tokenizers.load_tokenizers(vocab_dir)
            return
        if not create:
            raise UserError(f"{vocab_dir} has no tokenizer: is {self.run} a trained run?")
        data = self.config.data
        texts = self.training_texts(data.vocab_sample)
        # One tokenizer for both sides; the mask token takes one id after its vocabulary.
        self.tokenizer, _ = tokenizers.build_tokenizers(
            data.tokenizer,
            texts,
            texts,
            vocab_size=data.vocab_size - 1,
            shared=True,
            lowercase=data.lowercase,
        )
        log.info("denoising vocabulary: %d tokens from %d documents", self.mask_id + 1, len(texts))
        if write:
            tokenizers.save_tokenizers(vocab_dir, self.tokenizer, self.tokenizer)

    def vocabulary_args(self) -> dict:
        size = self.tokenizer.vocab_size + 1  # the mask token
        return {"source_vocab_size": size, "target_vocab_size": size}

    def tokenizers(self) -> dict:
        return {"source": self.tokenizer, "target": self.tokenizer}

    def vocabularies(self) -> dict[str, list[str]]:
        tokens = [*tokenizers.token_list(self.tokenizer), MASK_TOKEN]
        return {"source": tokens, "target": list(tokens)}

    def positions_needed(self) -> int:
        return self.config.data.max_length + 1

    def batches(self, documents: tf.data.Dataset, training: bool, epoch: int) -> tf.data.Dataset:
        data, training_config = self.config.data, self.config.training
        infilling = self.data_options(
            "max_length", "shuffle_buffer", "mask_ratio", "poisson_lambda"
        )
        pairs = text.denoising_pairs(
            documents,
            self.tokenizer,
            mask_id=self.mask_id,
            seed=training_config.seed,
            epoch=epoch,
            training=training,
            **infilling,
        )
        return batch_translation_examples(
            pairs,
            longest=data.max_length,
            batch_size=training_config.batch_size,
            shuffle=training,
            batch_seed=epoch_seeds(training_config.seed, epoch)[1],
            bucket_width=data.bucket_width,
            batch_type=training_config.batch_type,
        )

    def probe_batch(self, tokens: int):
        # The longest bucket: documents of data.max_length tokens (the target with EOS).
        return seq2seq_probe_batch(self.config.data.max_length, tokens)

    def loss(self, labels, logits, label_smoothing: float):
        return losses.token_cross_entropy(labels, logits, label_smoothing)

    def metrics(self) -> dict:
        return {"token_accuracy": metrics.token_accuracy, "exact_match": sequence_exact_match}
