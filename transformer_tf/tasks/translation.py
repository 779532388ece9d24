"""Sequence to sequence: source sentence -> target sentence, teacher forced."""

from __future__ import annotations

import logging
from functools import cached_property

import tensorflow as tf

from transformer_tf.config import Config
from transformer_tf.data import tokenizers
from transformer_tf.data.parallel import read_parallel
from transformer_tf.data.toy import toy_splits
from transformer_tf.data.translation import encode_pairs, make_translation_dataset
from transformer_tf.errors import UserError
from transformer_tf.run import RunDir
from transformer_tf.tasks import losses, metrics
from transformer_tf.tasks.base import Task

log = logging.getLogger(__name__)


class TranslationTask(Task):
    """Translation: source and target tokenizers, parallel splits, token-level loss."""

    name = "translation"
    count_unit = "tokens"

    def __init__(self, config: Config, run: RunDir):
        super().__init__(config, run)
        self.source_tokenizer = None
        self.target_tokenizer = None
        self._encoded: dict[str, tuple] = {}

    @cached_property
    def raw_splits(self) -> dict[str, list[tuple[str, str]]]:
        """Split name -> list of (source, target) sentence pairs."""
        data = self.config.data
        if data.source == "toy_translation":
            return toy_splits(data.num_train, data.num_validation, data.num_test, data.seed)
        splits = {}
        for name, files in data.splits.items():
            corpus = read_parallel(files.source, files.target, lowercase=data.lowercase)
            skipped = corpus.skipped_empty + corpus.skipped_one_side_empty
            if skipped:
                log.warning("%s split: skipped %d pairs with an empty side", name, skipped)
            splits[name] = list(zip(corpus.sources, corpus.targets, strict=True))
        return splits

    def prepare(self, create: bool = False, write: bool = True) -> None:
        vocab_dir = self.run.vocab_dir
        if (vocab_dir / "tokenizer.json").exists():
            self.source_tokenizer, self.target_tokenizer = tokenizers.load_tokenizers(vocab_dir)
            return
        if not create:
            raise UserError(f"{vocab_dir} has no tokenizer: is {self.run} a trained run?")
        data = self.config.data
        train = self.raw_splits["train"]
        self.source_tokenizer, self.target_tokenizer = tokenizers.build_tokenizers(
            data.tokenizer,
            [s for s, _ in train],
            [t for _, t in train],
            vocab_size=getattr(data, "vocab_size", None),
            shared=getattr(data, "shared_vocab", False),
            lowercase=getattr(data, "lowercase", False),
        )
        if write:
            tokenizers.save_tokenizers(vocab_dir, self.source_tokenizer, self.target_tokenizer)

    def vocabulary_args(self) -> dict:
        return {
            "source_vocab_size": self.source_tokenizer.vocab_size,
            "target_vocab_size": self.target_tokenizer.vocab_size,
        }

    length_keys = ("data.max_length", "decoding.max_length")

    def positions_needed(self) -> int:
        # Sentences carry EOS (and the target input BOS), and decoding may run past the training
        # length: the positions must cover both.
        return max(self.config.data.max_length, self.config.decoding.max_length) + 1

    def has_split(self, split: str) -> bool:
        return bool(self.raw_splits.get(split))

    def encoded(self, split: str, training: bool):
        """Token ids of a split (without BOS/EOS): training drops over-long pairs, evaluation
        truncates them (every reference is scored)."""
        key = (split, training)
        if key not in self._encoded:
            if not self.has_split(split):
                raise UserError(
                    f"split `{split}` is not available; splits: {', '.join(self.raw_splits)}"
                )
            source_ids, target_ids, dropped = encode_pairs(
                self.raw_splits[split],
                self.source_tokenizer,
                self.target_tokenizer,
                self.config.data.max_length,
                truncate=not training,
            )
            if dropped:
                action = "dropped" if training else "truncated"
                log.warning("%s split: %s %d over-long pairs", split, action, dropped)
            self._encoded[key] = (source_ids, target_ids)
        return self._encoded[key]

    def dataset(self, split: str, training: bool, epoch: int = 0) -> tf.data.Dataset:
        source_ids, target_ids = self.encoded(split, training)
        # XLA and TPUs compile one program per shape: pad each batch to its length bucket (a
        # few shapes in all) and, in training, keep only full batches.
        static = self.config.training.jit_compile or self.config.distribute.strategy == "tpu"
        return make_translation_dataset(
            source_ids,
            target_ids,
            batch_size=self.config.training.batch_size,
            shuffle=training,
            seed=self.config.training.seed,
            epoch=epoch,
            pad_to_multiple=8 if static else None,
            drop_remainder=static and training,
            batch_type=self.config.training.batch_type,
        )

    def loss(self, labels, logits, label_smoothing: float):
        return losses.token_cross_entropy(labels, logits, label_smoothing)

    def metrics(self) -> dict:
        return {"token_accuracy": metrics.token_accuracy}
