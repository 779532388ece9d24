"""Tasks: what the engine trains. Each task owns its data, vocabulary, loss and metrics.

The engine only calls the methods of :class:`Task`; a task turns the config's ``data`` section
into tf.data pipelines of ``(inputs, labels)`` batches and the model's vocabulary arguments.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import tensorflow as tf

from transformer_tf.config import Config
from transformer_tf.errors import UserError
from transformer_tf.training import losses, metrics

log = logging.getLogger(__name__)

VOCAB_DIR = "vocab"


class Task:
    """Interface between a config's task and the engine."""

    count_unit = "examples"

    def __init__(self, config: Config, run_dir: Path):
        self.config = config
        self.run_dir = Path(run_dir)

    @property
    def vocab_dir(self) -> Path:
        return self.run_dir / VOCAB_DIR

    def prepare(self, create: bool = False, write: bool = True) -> None:
        """Load the vocabulary from the run directory; build it from training data when it is
        missing and ``create`` (and save it when ``write``)."""
        raise NotImplementedError

    def model_kwargs(self) -> dict:
        """Constructor arguments of the model: the ``model`` section plus vocabulary sizes."""
        raise NotImplementedError

    def has_split(self, split: str) -> bool:
        raise NotImplementedError

    def dataset(self, split: str, training: bool, epoch: int = 0) -> tf.data.Dataset:
        raise NotImplementedError

    def train_batches_per_epoch(self) -> int:
        return int(self.dataset("train", training=True).reduce(0, lambda n, _: n + 1))

    def loss(self, labels, logits, label_smoothing: float):
        raise NotImplementedError

    def metrics(self) -> dict:
        return {}

    def extra_validation_metrics(self, model) -> dict:
        return {}

    def evaluate_extra(self, model, split: str, **options) -> dict:
        return {}

    def _model_section(self) -> dict:
        kwargs = self.config.model.model_dump()
        kwargs.pop("name")  # the registry name selects the class; it is not an argument
        return kwargs


class ClassificationTask(Task):
    """Text classification (IMDb): raw text -> ``ReviewTokenizer`` ids -> label."""

    count_unit = "examples"

    def __init__(self, config: Config, run_dir: Path):
        super().__init__(config, run_dir)
        self.tokenizer = None
        self._encoded: dict = {}

    @cached_property
    def splits(self) -> dict:
        from transformer_tf.data import imdb

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
        from transformer_tf.data import imdb

        self._encoded.clear()  # ids made with another tokenizer would be stale
        if (self.vocab_dir / "vocab.txt").exists():
            self.tokenizer = imdb.ReviewTokenizer.load(self.vocab_dir)
            return
        if not create:
            raise UserError(f"{self.vocab_dir} has no vocabulary: is {self.run_dir} a trained run?")
        data = self.config.data
        texts, _ = self.splits["train"]
        self.tokenizer = imdb.ReviewTokenizer.build(
            texts,
            data.vocab_size,
            ngrams=data.ngrams,
            lowercase=data.lowercase,
            max_length=data.max_length,
        )
        if write:
            self.tokenizer.save(self.vocab_dir)

    def model_kwargs(self) -> dict:
        kwargs = self._model_section()
        kwargs["vocab_size"] = self.tokenizer.vocab_size
        kwargs["max_length"] = max(kwargs["max_length"], self.config.data.max_length + 1)
        return kwargs

    def has_split(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split][0]) > 0

    def dataset(self, split: str, training: bool, epoch: int = 0) -> tf.data.Dataset:
        from transformer_tf.data import imdb

        if not self.has_split(split):
            raise UserError(f"split `{split}` is not available; splits: {', '.join(self.splits)}")
        texts, labels = self.splits[split]
        data = self.config.data
        if split not in self._encoded:
            # Encode once per run, not once per epoch (each epoch builds a new dataset).
            self._encoded[split] = imdb.encode_texts(
                texts, self.tokenizer, max_length=data.max_length, truncation=data.truncation
            )
        return imdb.make_classification_dataset(
            self._encoded[split],
            labels,
            batch_size=self.config.training.batch_size,
            max_length=data.max_length,
            shuffle=training,
            seed=self.config.training.seed,
            epoch=epoch,
            truncation=data.truncation,
            batch_type=self.config.training.batch_type,
        )

    def loss(self, labels, logits, label_smoothing: float):
        return losses.class_cross_entropy(labels, logits, label_smoothing)

    def metrics(self) -> dict:
        return {"accuracy": metrics.accuracy}


def _available_imdb_splits(path: str) -> tuple[str, ...]:
    root = Path(path)
    if (root / "aclImdb").is_dir():
        root = root / "aclImdb"
    return tuple(s for s in ("train", "test") if (root / s).is_dir()) or ("train",)


class TranslationTask(Task):
    """Sequence to sequence: source sentence -> target sentence, teacher forced."""

    count_unit = "tokens"

    def __init__(self, config: Config, run_dir: Path):
        super().__init__(config, run_dir)
        self.source_tokenizer = None
        self.target_tokenizer = None
        self._encoded: dict[str, tuple] = {}

    @cached_property
    def raw_splits(self) -> dict[str, list[tuple[str, str]]]:
        """Split name -> list of (source, target) sentence pairs."""
        data = self.config.data
        if data.source == "toy_translation":
            from transformer_tf.data.toy import toy_splits

            return toy_splits(data.num_train, data.num_validation, data.num_test, data.seed)
        from transformer_tf.data.parallel import read_parallel

        splits = {}
        for name, files in data.splits.items():
            corpus = read_parallel(files.source, files.target, lowercase=data.lowercase)
            skipped = corpus.skipped_empty + corpus.skipped_one_side_empty
            if skipped:
                log.warning("%s split: skipped %d pairs with an empty side", name, skipped)
            splits[name] = list(zip(corpus.sources, corpus.targets, strict=True))
        return splits

    def prepare(self, create: bool = False, write: bool = True) -> None:
        from transformer_tf.data import tokenizers

        if (self.vocab_dir / "tokenizer.json").exists():
            self.source_tokenizer, self.target_tokenizer = tokenizers.load_tokenizers(
                self.vocab_dir
            )
            return
        if not create:
            raise UserError(f"{self.vocab_dir} has no tokenizer: is {self.run_dir} a trained run?")
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
            tokenizers.save_tokenizers(self.vocab_dir, self.source_tokenizer, self.target_tokenizer)

    def model_kwargs(self) -> dict:
        kwargs = self._model_section()
        kwargs["source_vocab_size"] = self.source_tokenizer.vocab_size
        kwargs["target_vocab_size"] = self.target_tokenizer.vocab_size
        # Decoding may run past the training length: leave room for the decoding limit.
        kwargs["max_length"] = max(
            kwargs["max_length"],
            self.config.data.max_length + 1,
            self.config.decoding.max_length + 1,
        )
        return kwargs

    def has_split(self, split: str) -> bool:
        return bool(self.raw_splits.get(split))

    def encoded(self, split: str, training: bool):
        """Token ids of a split (without BOS/EOS): training drops over-long pairs, evaluation
        truncates them (every reference is scored)."""
        key = (split, training)
        if key not in self._encoded:
            from transformer_tf.data.translation import encode_pairs

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
        from transformer_tf.data.translation import make_translation_dataset

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

    def evaluate_extra(self, model, split: str, **options) -> dict:
        from transformer_tf.inference.translate import translation_scores

        return translation_scores(self, model, split, **options)


TASKS = {"classification": ClassificationTask, "translation": TranslationTask}


def make_task(config: Config, run_dir: Path) -> Task:
    return TASKS[config.task](config, run_dir)
