"""Sequence to sequence: source sentence -> target sentence, teacher forced."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cached_property

import numpy as np
import tensorflow as tf

from transformer_tf.config import Config
from transformer_tf.data import streaming, tokenizers
from transformer_tf.data.parallel import read_parallel
from transformer_tf.data.seeds import epoch_seeds
from transformer_tf.data.toy import toy_splits
from transformer_tf.data.translation import (
    batch_translation_examples,
    encode_pairs,
    make_translation_dataset,
    seq2seq_probe_batch,
)
from transformer_tf.errors import UserError
from transformer_tf.evaluation import scorers
from transformer_tf.inference.ensemble_models import Ensemble
from transformer_tf.inference.options import SAMPLING_FIELDS, DecodingOptions
from transformer_tf.inference.serving import Serving, build_translation_module
from transformer_tf.inference.translate import translate
from transformer_tf.run import RunDir
from transformer_tf.tasks import losses, metrics
from transformer_tf.tasks.base import Task, per_replica_batch_size

log = logging.getLogger(__name__)

#: The data sources whose training split is streamed (never read into memory).
STREAMED_SOURCES = ("parallel_text", "tfds")


class _LazySplits(Mapping):
    """Split name -> list of (source, target) pairs, each split read on first access."""

    def __init__(self, names, load):
        self._names = list(names)
        self._load = load
        self._loaded: dict[str, list[tuple[str, str]]] = {}

    def __getitem__(self, name: str) -> list[tuple[str, str]]:
        if name not in self._names:
            raise KeyError(name)
        if name not in self._loaded:
            self._loaded[name] = self._load(name)
        return self._loaded[name]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class TranslationTask(Task):
    """Translation: source and target tokenizers, parallel splits, token-level loss.

    The training split of ``parallel_text`` and ``tfds`` is streamed (:meth:`dataset` with
    ``training=True``: read record by record, tokenized in the graph, memory independent of the
    corpus size); the evaluation splits are read into memory (:attr:`raw_splits`), where every
    reference is at hand for BLEU. The toy task is generated in memory.
    """

    name = "translation"
    starts_from = frozenset({"denoising"})
    count_unit = "tokens"
    commands = frozenset({"translate", "score", "export --format ctranslate2"})
    shards_input = True

    def __init__(self, config: Config, run: RunDir):
        super().__init__(config, run)
        self.source_tokenizer = None
        self.target_tokenizer = None
        self._encoded: dict[str, tuple] = {}
        self._train_lines: list[int] | None = None
        self._drawn = None  # examples drawn from each corpus of a mixture, as they are drawn

    @property
    def streamed(self) -> bool:
        """bool, whether the training split is streamed rather than held in memory."""
        return self.config.data.source in STREAMED_SOURCES

    @cached_property
    def raw_splits(self) -> Mapping[str, list[tuple[str, str]]]:
        """Split name -> list of (source, target) sentence pairs, each split read into memory
        on first access (for a streamed source, training never reads ``train`` here)."""
        data = self.config.data
        if data.source == "toy_translation":
            return toy_splits(data.num_train, data.num_validation, data.num_test, data.seed)
        if data.source == "none":
            return {}
        return _LazySplits(data.splits, self._read_split)

    def _tfds_pairs(
        self, split: str, num_pipelines: int = 1, pipeline_id: int = 0
    ) -> tf.data.Dataset:
        """The ``(source, target)`` strings of a split of the configured tfds dataset, streamed
        (pipeline ``pipeline_id`` of ``num_pipelines`` keeps its part)."""
        data = self.config.data
        return streaming.tfds_text_pairs(
            data.name, split, data.source_language, data.target_language,
            data_dir=data.data_dir, lowercase=data.lowercase,
            num_pipelines=num_pipelines, pipeline_id=pipeline_id,
        )  # fmt: skip

    def _read_split(self, name: str) -> list[tuple[str, str]]:
        data = self.config.data
        if data.source == "tfds":
            sources, targets = streaming.collect_pairs(self._tfds_pairs(data.splits[name]))
            return list(zip(sources, targets, strict=True))
        pairs: list[tuple[str, str]] = []
        skipped = 0
        for source, target in zip(*data.split_files(name), strict=True):
            corpus = read_parallel(source, target, lowercase=data.lowercase)
            skipped += corpus.skipped_empty + corpus.skipped_one_side_empty
            pairs.extend(zip(corpus.sources, corpus.targets, strict=True))
        if skipped:
            log.warning("%s split: skipped %d pairs with an empty side", name, skipped)
        return pairs

    @property
    def vocabulary_from_chief(self) -> bool:
        # A prebuilt vocabulary is read by every worker itself; otherwise the chief learns it.
        return not getattr(self.config.data, "vocabulary", None)

    def vocabulary_ready(self) -> bool:
        return (self.run.vocab_dir / tokenizers.MANIFEST_NAME).exists()

    def prepare(self, create: bool = False, write: bool = True) -> None:
        vocab_dir = self.run.vocab_dir
        if self.vocabulary_ready():
            self.source_tokenizer, self.target_tokenizer = tokenizers.load_tokenizers(vocab_dir)
            return
        data = self.config.data
        prebuilt = getattr(data, "vocabulary", None)
        if prebuilt:
            self.source_tokenizer, self.target_tokenizer = tokenizers.load_tokenizers(prebuilt)
            if write:
                tokenizers.save_tokenizers(vocab_dir, self.source_tokenizer, self.target_tokenizer)
            return
        if not create:
            raise UserError(f"{vocab_dir} has no tokenizer: is {self.run} a trained run?")
        sources, targets = self.vocabulary_sample()
        self.source_tokenizer, self.target_tokenizer = tokenizers.build_tokenizers(
            data.tokenizer,
            sources,
            targets,
            vocab_size=getattr(data, "vocab_size", None),
            shared=getattr(data, "shared_vocab", False),
            lowercase=getattr(data, "lowercase", False),
        )
        if write:
            tokenizers.save_tokenizers(vocab_dir, self.source_tokenizer, self.target_tokenizer)

    def vocabulary_sample(self) -> tuple[list[str], list[str]]:
        """The (source, target) training sentences a new vocabulary is learned from: the toy
        task's whole training split, else at most ``data.vocab_sample`` pairs, the first ones
        of the training split (spread evenly over its shards)."""
        data = self.config.data
        if data.source == "none":
            raise UserError(
                "data.source: none has no training data to learn a vocabulary or a model from; "
                "give the run a corpus (data.source: parallel_text or tfds)"
            )
        if data.source == "toy_translation":
            train = self.raw_splits["train"]
            return [s for s, _ in train], [t for _, t in train]
        if data.source == "tfds":
            return streaming.collect_pairs(
                self._tfds_pairs(data.splits["train"]), data.vocab_sample
            )
        sources, targets = data.split_files("train")
        return streaming.sample_parallel(
            sources, targets, data.vocab_sample, lowercase=data.lowercase
        )

    def vocabulary_args(self) -> dict:
        return {
            "source_vocab_size": self.source_tokenizer.vocab_size,
            "target_vocab_size": self.target_tokenizer.vocab_size,
        }

    def tokenizers(self) -> dict:
        return {"source": self.source_tokenizer, "target": self.target_tokenizer}

    def ensemble(self, models: list):
        return Ensemble(models)

    def serving(self, model, *, beam_size: int | None = None, n_best: int | None = None):
        options = DecodingOptions.from_config(self.config, beam_size=beam_size, n_best=n_best)
        source, target = self.source_tokenizer, self.target_tokenizer
        module = build_translation_module(
            model, source, target, options, nbest_outputs=n_best is not None
        )
        outputs = {
            "translation": "(batch,) string",
            "scores": "(batch,) float32, the search's score of each translation",
            "truncated": "(batch,) bool, whether the input was cut to max_input_length - 1",
        }
        if n_best is not None:
            outputs["translations"] = f"(batch, {n_best}) string, best first"
            outputs["all_scores"] = f"(batch, {n_best}) float32"
        sampling = {name: getattr(options, name) for name in SAMPLING_FIELDS}
        provenance = {
            "inputs": {"text": "(batch,) string, raw source sentences"},
            "outputs": outputs,
            "beam_size": options.beam_size,
            "n_best": n_best,
            "sampling": sampling if options.sampling else None,
            "length_penalty": options.length_penalty,
            "max_input_length": options.max_input_length,
            "max_output_length": options.max_output_length,
            "tokenizer": {
                "source": source.kind,
                "target": target.kind,
                "shared": source is target,
                "source_vocab_size": source.vocab_size,
                "target_vocab_size": target.vocab_size,
            },
        }
        # SentencePiece runs tokenize with tensorflow_text ops.
        uses_tf_text = any(kind.startswith("sentencepiece") for kind in (source.kind, target.kind))
        requires = ("tensorflow", "tensorflow_text") if uses_tf_text else ("tensorflow",)
        return Serving(module, provenance, requires)

    def output_scores(
        self, model, split: str, *, validation: bool = False, beam_size: int | None = None
    ) -> dict:
        settings = self.config.training.validation
        if not validation:
            return decoding_scores(self, model, split, beam_size=beam_size)
        if not settings.decode:
            return {}
        return decoding_scores(
            self, model, split, beam_size=settings.beam_size, max_sentences=settings.max_sentences
        )

    def vocabularies(self) -> dict[str, list[str]]:
        return {
            "source": tokenizers.token_list(self.source_tokenizer),
            "target": tokenizers.token_list(self.target_tokenizer),
        }

    length_keys = ("data.max_length", "decoding.max_length")

    def positions_needed(self) -> int:
        # Sentences carry EOS (and the target input BOS), and decoding may run past the training
        # length: the positions must cover both.
        return max(self.config.data.max_length, self.config.decoding.max_length) + 1

    def require_split(self, split: str) -> None:
        if self.config.data.source == "none" and not self.has_split(split):
            raise UserError(
                f"split `{split}` is not available: {self.run} has no data (data.source: none, "
                "a model imported without --config); import it again with --config naming the "
                "data, or evaluate a run trained from it (train CONFIG --init-from RUN)"
            )
        super().require_split(split)

    def has_split(self, split: str) -> bool:
        if split == "train" and self.streamed:
            return True  # required by the schema; not read to find out
        return split in self.raw_splits and bool(self.raw_splits[split])

    def encoded(self, split: str, training: bool):
        """Token ids of a split (without BOS/EOS): training drops over-long pairs, evaluation
        truncates them (every reference is scored)."""
        key = (split, training)
        if key not in self._encoded:
            self.require_split(split)
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

    def dataset(
        self,
        split: str,
        training: bool,
        epoch: int = 0,
        input_context: tf.distribute.InputContext | None = None,
    ) -> tf.data.Dataset:
        """Batches of ``split``; see :meth:`Task.dataset`.

        With ``input_context`` (one input pipeline of several), the pipeline reads only its
        part of the data and its batches are per replica: ``training.batch_size`` divided by
        ``num_replicas_in_sync`` examples (or tokens), so that one batch per replica makes one
        global batch of ``training.batch_size``.
        """
        training_config = self.config.training
        batch_size = training_config.batch_size
        shard = None
        if input_context is not None:
            batch_size = per_replica_batch_size(batch_size, input_context.num_replicas_in_sync)
            shard = (input_context.num_input_pipelines, input_context.input_pipeline_id)
        # XLA and TPUs compile one program per shape: pad each batch to its length bucket (a
        # few shapes in all) and, in training, keep only full batches.
        static = training_config.jit_compile or self.config.distribute.strategy == "tpu"
        if training and split == "train" and self.streamed:
            return self._streamed_train(epoch, batch_size, shard, static)
        source_ids, target_ids = self.encoded(split, training)
        return make_translation_dataset(
            source_ids,
            target_ids,
            batch_size=batch_size,
            shuffle=training,
            seed=training_config.seed,
            epoch=epoch,
            bucket_width=self.config.data.bucket_width,
            pad_to_multiple=8 if static else None,
            drop_remainder=static and training,
            batch_type=training_config.batch_type,
            shard=shard,
        )

    def _streamed_train(self, epoch, batch_size, shard, static) -> tf.data.Dataset:
        data, training = self.config.data, self.config.training
        num_pipelines, pipeline_id = shard or (1, 0)
        example_seed, batch_seed = epoch_seeds(training.seed, epoch)
        if data.source == "tfds":
            pairs = self._tfds_pairs(data.splits["train"], num_pipelines, pipeline_id)
        else:
            pairs = self._parallel_text_train(epoch, num_pipelines, pipeline_id, example_seed)
        pairs = pairs.shuffle(data.shuffle_buffer, seed=example_seed, reshuffle_each_iteration=True)
        ids = streaming.filter_pairs(
            streaming.encode_text_pairs(
                pairs,
                self.source_tokenizer,
                self.target_tokenizer,
                sampling=data.subword_regularization,
            ),
            data.max_length,
        )
        return batch_translation_examples(
            ids,
            longest=data.max_length,
            batch_size=batch_size,
            shuffle=True,
            batch_seed=batch_seed,
            bucket_width=data.bucket_width,
            pad_to_multiple=8 if static else None,
            drop_remainder=static,
            batch_type=training.batch_type,
        )

    def _parallel_text_train(self, epoch, num_pipelines, pipeline_id, seed) -> tf.data.Dataset:
        """The training pairs of ``parallel_text``: its one corpus read through in another shard
        order every epoch, or its weighted mixture drawn from forever."""
        data, training = self.config.data, self.config.training
        corpora = data.train_corpora
        if self._train_lines is None:  # one byte scan per run, not per epoch
            self._train_lines = [
                streaming.check_aligned(files.source_files, files.target_files)
                for _, files, _ in corpora
            ]
            log.info(
                "train split: %s, streamed; pairs with an empty side or over %d tokens are "
                "dropped as they are read",
                "; ".join(
                    f"{name}: {lines} line pairs in {len(files.source_files)} file pair(s)"
                    + (f", weight {weight:g}" if data.mixture else "")
                    for (name, files, weight), lines in zip(corpora, self._train_lines, strict=True)
                ),
                data.max_length - 1,
            )
        streams = []
        for index, (_, files, _) in enumerate(corpora):
            sources, targets = files.source_files, files.target_files
            # Another shard order every epoch, the same on every worker (so the parts of the
            # pipelines stay disjoint).
            key = [training.seed, epoch] + ([index] if data.mixture else [])
            order = np.random.default_rng(key).permutation(len(sources))
            streams.append(
                streaming.parallel_text_pairs(
                    [sources[i] for i in order],
                    [targets[i] for i in order],
                    num_pipelines=num_pipelines,
                    pipeline_id=pipeline_id,
                    lowercase=data.lowercase,
                )  # fmt: skip
            )
        if not data.mixture:
            return streams[0]
        self._drawn = np.zeros(len(corpora), np.int64)

        def count(choices):
            choices = choices.numpy()
            np.add.at(self._drawn, choices, 1)
            return choices

        weights = [weight for _, _, weight in corpora]
        return streaming.weighted_mixture(streams, weights, seed, on_draw=count)

    def log_fields(self) -> dict:
        data = self.config.data
        if not getattr(data, "mixture", False) or self._drawn is None or not self._drawn.sum():
            return {}
        shares = self._drawn / self._drawn.sum()
        names = [name for name, _, _ in data.train_corpora]
        return {f"corpus_share/{n}": float(share) for n, share in zip(names, shares, strict=True)}

    def train_batches_per_epoch(self) -> int:
        if self.streamed:
            log.warning(
                "training.epochs with a streamed corpus: counting the batches of an epoch takes "
                "one pass over the training data; set training.steps (and no epochs) to skip it"
            )
        return super().train_batches_per_epoch()

    def probe_batch(self, tokens: int):
        # The longest bucket: data.max_length counts the longer side (the target with EOS),
        # padded to a multiple of 8 where the pipeline pads to static shapes.
        length = self.config.data.max_length
        if self.config.training.jit_compile or self.config.distribute.strategy == "tpu":
            length = -(-length // 8) * 8
        return seq2seq_probe_batch(length, tokens)

    def loss(self, labels, logits, label_smoothing: float):
        return losses.token_cross_entropy(labels, logits, label_smoothing)

    def metrics(self) -> dict:
        return {"token_accuracy": metrics.token_accuracy}


def decoding_scores(
    task: TranslationTask,
    model,
    split: str,
    *,
    beam_size: int | None = None,
    max_sentences: int | None = None,
) -> dict:
    """Decode a split with the run's decoding settings and score it: exact match, BLEU, chrF.

    ``beam_size`` overrides ``decoding.beam_size``; ``max_sentences`` scores only the first N
    pairs of the split (validation during training, for speed).

    BLEU and chrF (sacreBLEU) compare the detokenized output with the raw references, as
    published scores do. Exact match compares like with like: each reference is written as the
    target tokenizer writes its output (:meth:`~transformer_tf.data.tokenizers.Tokenizer.normalize`:
    a word tokenizer's ``a , b .`` for ``a, b.``), or no sentence with punctuation could match.
    """
    pairs = task.raw_splits[split][:max_sentences]
    options = DecodingOptions.from_config(task.config, beam_size=beam_size)
    sources = [s for s, _ in pairs]
    hypotheses = translate(
        model, task.source_tokenizer, task.target_tokenizer, sources, options
    ).texts
    references = [t for _, t in pairs]
    if getattr(task.config.data, "lowercase", False):
        references = [r.lower() for r in references]
    normalized = [task.target_tokenizer.normalize(r) for r in references]
    return {
        "exact_match": scorers.exact_match(hypotheses, normalized),
        "bleu": scorers.bleu(hypotheses, references),
        "chrf": scorers.chrf(hypotheses, references),
    }
