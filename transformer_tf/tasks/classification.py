"""Text classification (IMDb): raw text -> ``ReviewTokenizer`` ids -> label."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import tensorflow as tf

from transformer_tf.config import Config
from transformer_tf.data import classification, imdb
from transformer_tf.data.bucketing import bucket_batch_sizes
from transformer_tf.data.review_tokenizer import ReviewTokenizer
from transformer_tf.data.special_tokens import UNK_ID
from transformer_tf.errors import UserError
from transformer_tf.inference.ensemble_models import ClassifierEnsemble
from transformer_tf.inference.serving import Serving, build_classification_module
from transformer_tf.run import RunDir
from transformer_tf.tasks import losses, metrics
from transformer_tf.tasks.base import Task

log = logging.getLogger(__name__)


class ClassificationTask(Task):
    """Text classification: a review (or any text) -> one of ``model.num_classes`` labels."""

    name = "classification"
    count_unit = "examples"
    starts_from = frozenset({"masked_lm"})

    def __init__(self, config: Config, run: RunDir):
        super().__init__(config, run)
        self.tokenizer = None
        self._encoded: dict = {}

    @cached_property
    def splits(self) -> dict:
        """Split name -> (raw texts, labels); the tokenizer cleans them."""
        data = self.config.data
        wanted = ("train", "test")
        if data.source == "directory":
            raw = imdb.load_imdb_directory(data.path, splits=_available_imdb_splits(data.path))
        else:
            raw = imdb.load_imdb_tfds(data.name, data_dir=data.data_dir, splits=wanted)
        if "train" not in raw:
            raise UserError(f"no training split found for data.source `{data.source}`")
        train, validation = imdb.split_validation(
            raw["train"], data.validation_fraction, data.split_seed
        )
        splits = {"train": train, "validation": validation}
        if "test" in raw:
            splits["test"] = raw["test"]
        # Raw texts: the tokenizer cleans them (with the run's saved `lowercase`).
        texts = {name: (split.texts, split.labels) for name, split in splits.items()}
        num_classes = self.config.model.num_classes
        for name, (_, labels) in texts.items():
            if len(labels) and int(labels.max()) >= num_classes:
                raise UserError(
                    f"split `{name}` has label {int(labels.max())} but model.num_classes is "
                    f"{num_classes}"
                )
        return texts

    def prepare(self, create: bool = False, write: bool = True) -> None:
        self._encoded.clear()  # ids made with another tokenizer would be stale
        vocab_dir = self.run.vocab_dir
        if (vocab_dir / "vocab.txt").exists():
            self.tokenizer = ReviewTokenizer.load(vocab_dir)
            return
        if not create:
            raise UserError(f"{vocab_dir} has no vocabulary: is {self.run} a trained run?")
        data = self.config.data
        texts, _ = self.splits["train"]
        self.tokenizer = ReviewTokenizer.build(
            texts,
            data.vocab_size,
            ngrams=data.ngrams,
            lowercase=data.lowercase,
            max_length=data.max_length,
        )
        if write:
            self.tokenizer.save(vocab_dir)

    def vocabulary_args(self) -> dict:
        return {"vocab_size": self.tokenizer.vocab_size}

    def tokenizers(self) -> dict:
        return {"review": self.tokenizer}

    def serving(self, model, *, beam_size: int | None = None, n_best: int | None = None):
        for flag, value in (("--beam-size", beam_size), ("--n-best", n_best)):
            if value is not None:
                log.warning("%s has no effect on a classification export", flag)
        data = self.config.data
        module = build_classification_module(
            model, self.tokenizer, max_length=data.max_length, truncation=data.truncation
        )
        provenance = {
            "inputs": {"text": "(batch,) string, raw texts"},
            "outputs": {"probabilities": "(batch, num_classes) float32", "label": "(batch,) int32"},
            "num_classes": self.config.model.num_classes,
            "max_input_length": data.max_length,
            "truncation": data.truncation,
            "vocab_size": self.tokenizer.vocab_size,
        }
        return Serving(module, provenance)

    def ensemble(self, models: list):
        return ClassifierEnsemble(models)

    def vocabularies(self) -> dict[str, list[str]]:
        return {"source": list(self.tokenizer.vocab)}

    length_keys = ("data.max_length",)

    def positions_needed(self) -> int:
        # One more than the tokens kept: room for a CLS position.
        return self.config.data.max_length + 1

    def has_split(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split][0]) > 0

    def dataset(self, split: str, training: bool, epoch: int = 0) -> tf.data.Dataset:
        if not self.has_split(split):
            raise UserError(f"split `{split}` is not available; splits: {', '.join(self.splits)}")
        _, labels = self.splits[split]
        data = self.config.data
        return classification.make_classification_dataset(
            self._encoded_split(split),
            labels,
            batch_size=self.config.training.batch_size,
            max_length=data.max_length,
            shuffle=training,
            seed=self.config.training.seed,
            epoch=epoch,
            truncation=data.truncation,
            batch_type=self.config.training.batch_type,
        )

    def _encoded_split(self, split: str) -> classification.EncodedTexts:
        # Encoded once per run, not once per epoch (each epoch builds a new dataset).
        if split not in self._encoded:
            data = self.config.data
            self._encoded[split] = classification.encode_texts(
                self.splits[split][0],
                self.tokenizer,
                max_length=data.max_length,
                truncation=data.truncation,
            )
        return self._encoded[split]

    def initialize_model(self, model) -> None:
        """A model with ``naive_bayes`` gets its ratios from the training reviews' tokens, as
        truncated for training (:meth:`TransformerClassifier.adapt_naive_bayes`)."""
        if getattr(model, "naive_bayes", False):
            model.adapt_naive_bayes(
                classification.document_counts(
                    self._encoded_split("train"),
                    self.splits["train"][1],
                    vocab_size=self.tokenizer.vocab_size,
                    num_classes=model.num_classes,
                )
            )

    def probe_batch(self, tokens: int):
        # Reviews of data.max_length tokens, the longest bucket.
        length = self.config.data.max_length
        (examples,) = bucket_batch_sizes([length], tokens, "tokens")
        ids = tf.fill([examples, length], tf.constant(UNK_ID, tf.int32))
        return ids, tf.zeros([examples], tf.int32)

    def loss(self, labels, logits, label_smoothing: float):
        return losses.class_cross_entropy(labels, logits, label_smoothing)

    def metrics(self) -> dict:
        return {"accuracy": metrics.accuracy}


def _available_imdb_splits(path: str) -> tuple[str, ...]:
    root = Path(path)
    if (root / "aclImdb").is_dir():
        root = root / "aclImdb"
    return tuple(s for s in ("train", "test") if (root / s).is_dir()) or ("train",)
