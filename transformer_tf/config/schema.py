"""The config schema: every section and key, with its type, default and allowed values.

A config file maps onto :class:`Config`; each section is one model below (``model:`` is
:class:`ModelConfig`, ``data:`` one of the data sources, ``training:`` :class:`TrainingConfig`,
...). The models are strict: unknown keys, wrong types and out-of-range values are errors and
nothing is coerced from strings, except numbers such as ``1e-3`` that YAML 1.1 reads as strings.

Validators raise :class:`Invalid`; :mod:`transformer_tf.config.diagnostics` turns it (and
pydantic's own errors) into messages naming the file, line and key. The block arguments of
``model:`` (``d_model`` ... ``normalization``) come from :mod:`transformer_tf.block_args`, their
one definition, shared with the layers and models.

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from transformer_tf.block_args import (
    BLOCK_ARG_SPECS,
    DEFAULT_MAXIMUM_RELATIVE_POSITION,
    RELATIVE_POSITIONS,
    ROTARY_POSITIONS,
    BlockArg,
)

__all__ = [
    "AUTO_BATCH_TOKENS_CPU",
    "AnyConfig",
    "BlockFields",
    "CLASSIFIER_MODEL_DEFAULTS",
    "CONFIG_ADAPTER",
    "ClassificationConfig",
    "ClassificationDataConfig",
    "ClassifierModelConfig",
    "Config",
    "Corpus",
    "DataConfig",
    "DecodingConfig",
    "DenoisingConfig",
    "DenoisingData",
    "DirectoryData",
    "DistributeConfig",
    "EarlyStopping",
    "Invalid",
    "MaskedLMConfig",
    "ModelConfig",
    "Number",
    "NoTranslationData",
    "ParallelTextData",
    "REGISTERED_MODEL_FIELDS",
    "SplitFiles",
    "SubwordRegularization",
    "TASK_CONFIGS",
    "TASK_DATA_SOURCES",
    "TfdsData",
    "TextData",
    "TfdsTranslationData",
    "ToyTranslationData",
    "TrainingConfig",
    "TranslationConfig",
    "TranslationDataConfig",
    "ValidationConfig",
]

#: ``model.<field>`` -> the registry slot its value must be registered in.
REGISTERED_MODEL_FIELDS: dict[str, str] = {
    "name": "model",
    "positional_encoding": "positional_encoding",
    "attention": "attention",
    "feed_forward": "feed_forward",
    "normalization": "normalization",
    "encoder_layer": "encoder_layer",
    "decoder_layer": "decoder_layer",
}


class Invalid(ValueError):
    """Raised inside validators: a problem at ``path`` (relative to the model being validated).

    The message is either ``message`` verbatim or built from ``expected``/``found``/``missing``.
    """

    def __init__(
        self,
        path: Sequence[str | int] = (),
        *,
        expected: str | None = None,
        found: str | None = None,
        message: str | None = None,
        missing: bool = False,
    ):
        self.path = tuple(path)
        self.expected = expected
        self.found = found
        self.message = message
        self.missing = missing
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.message is not None:
            return self.message
        if self.missing:
            text = f"missing required key (expected {self.expected})"
            return f"{text[:-1]}; {self.found})" if self.found else text
        return f"expected {self.expected}, found {self.found}"


# --------------------------------------------------------------------------------------------
# Field types.

_NUMBER_RE = re.compile(r"^[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _number_from_string(value: Any) -> Any:
    # PyYAML follows YAML 1.1, where `1e-3` (no dot) is a string, not a float. Accept it.
    if isinstance(value, str) and _NUMBER_RE.match(value.strip()):
        return float(value.strip().replace("_", ""))
    return value


Number = Annotated[float, BeforeValidator(_number_from_string)]
PositiveInt = Annotated[int, Field(gt=0)]
NonEmptyStr = Annotated[str, Field(min_length=1)]

_STRICT = ConfigDict(extra="forbid", strict=True)


# --------------------------------------------------------------------------------------------
# The schema.


def _block_field(spec: BlockArg) -> tuple[Any, Any]:
    """The pydantic (annotation, field) of one block argument: its type, default and bounds."""
    if spec.choices:
        annotation: Any = Literal[spec.choices]
    else:
        annotation = Number if spec.type is float else spec.type
    if spec.default is None:
        annotation = annotation | None
    bounds = {
        key: getattr(spec, key) for key in ("gt", "ge", "lt") if getattr(spec, key) is not None
    }
    return annotation, Field(spec.default, **bounds)


#: The block arguments of the ``model:`` section (``d_model``, ``num_heads``, ``d_ff``,
#: ``dropout``, ...), one field per :data:`transformer_tf.block_args.BLOCK_ARG_SPECS` entry, with
#: its default and bounds (for example ``d_model``: an integer > 0, default 128).
BlockFields = create_model(
    "BlockFields",
    __config__=_STRICT,
    __module__=__name__,
    **{spec.name: _block_field(spec) for spec in BLOCK_ARG_SPECS},
)


class ModelConfig(BlockFields):
    """The ``model:`` section: architecture hyperparameters and registered part names.

    The block arguments (``d_model``, ``num_heads``, ``d_ff``, ``dropout``,
    ``attention_dropout``, ``ffn_dropout``, ``activation``, ``normalize_first``,
    ``layer_norm_epsilon``, ``attention``, ``feed_forward``, ``normalization``,
    ``positional_encoding``, ``maximum_relative_position``) are the fields of
    :data:`BlockFields`, defined in :mod:`transformer_tf.block_args`.

    ``maximum_relative_position`` is only accepted with ``positional_encoding: relative``, and
    is filled in (:data:`~transformer_tf.block_args.DEFAULT_MAXIMUM_RELATIVE_POSITION`) there
    when not given, so that the saved config records the distance the model was built with.
    """

    model_config = _STRICT

    name: str | None = None  # Filled by Config: the task's default model.
    num_layers: int = Field(2, gt=0)
    num_encoder_layers: PositiveInt | None = None  # Defaults to num_layers.
    num_decoder_layers: PositiveInt | None = None  # Defaults to num_layers.
    max_length: int = Field(512, gt=0)  # Number of positions.
    encoder_layer: str = "transformer"
    decoder_layer: str = "transformer"
    share_embeddings: bool = False
    tie_embeddings: bool = True
    output_bias: bool = False  # a bias on the tied output projection (OpenNMT-tf, Marian)

    @model_validator(mode="after")
    def _resolve(self) -> ModelConfig:
        if self.num_encoder_layers is None:
            self.num_encoder_layers = self.num_layers
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        if self.d_model % self.num_heads:
            raise Invalid(
                ("d_model",),
                message=f"`model.d_model` ({self.d_model}) must be divisible by "
                f"`model.num_heads` ({self.num_heads})",
            )
        if self.positional_encoding == RELATIVE_POSITIONS:
            if self.maximum_relative_position is None:
                self.maximum_relative_position = DEFAULT_MAXIMUM_RELATIVE_POSITION
        elif self.maximum_relative_position is not None:
            raise Invalid(
                ("maximum_relative_position",),
                message="`model.maximum_relative_position` is only used with "
                f"`model.positional_encoding: {RELATIVE_POSITIONS}` (found "
                f"`{self.positional_encoding}`); remove it or set the positional encoding",
            )
        if self.positional_encoding == ROTARY_POSITIONS and (self.d_model // self.num_heads) % 2:
            raise Invalid(
                ("num_heads",),
                message="`model.positional_encoding: rotary` rotates pairs of channels: the "
                f"head size `model.d_model / model.num_heads` ({self.d_model} / "
                f"{self.num_heads} = {self.d_model // self.num_heads}) must be even",
            )
        return self


class ClassifierModelConfig(ModelConfig):
    """The ``model:`` section of a classification config: :class:`ModelConfig` and the keys
    that only a classifier takes."""

    pooling: Literal["mean", "cls"] = "mean"
    num_classes: int = Field(2, ge=2)
    # Training only: the probability that a review token is left out (word dropout).
    token_dropout: Number = Field(0.0, ge=0, lt=1)
    # A naive-Bayes bag-of-tokens path added to the logits (NBSVM); see TransformerClassifier.
    naive_bayes: bool = False


#: Defaults of the keys that only classification models take.
CLASSIFIER_MODEL_DEFAULTS: dict[str, Any] = {
    key: field.default
    for key, field in ClassifierModelConfig.model_fields.items()
    if key not in ModelConfig.model_fields
}


def _existing_path(value: str, info: ValidationInfo, kind: Literal["file", "directory"]) -> str:
    """The absolute path of an existing file/directory; relative to the config's directory first."""
    if not value.strip():
        raise Invalid(expected=f"the path of an existing {kind}", found="an empty string")
    base_dir = (info.context or {}).get("base_dir")
    path = Path(value).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [Path(base_dir) / path] if base_dir is not None else []
        candidates.append(Path.cwd() / path)
    exists = Path.is_file if kind == "file" else Path.is_dir
    for candidate in candidates:
        if exists(candidate):
            return os.path.abspath(candidate)
    looked = ", ".join(dict.fromkeys(os.path.abspath(c) for c in candidates))
    wrong_kind = [c for c in candidates if c.exists()]
    if wrong_kind:
        what = "a directory" if kind == "file" else "not a directory"
        found = f"{value!r} ({what}: {os.path.abspath(wrong_kind[0])})"
    else:
        found = f"{value!r} (no such {kind}: {looked})"
    raise Invalid(expected=f"an existing {kind}", found=found)


class SplitFiles(BaseModel):
    """One split of a parallel corpus: source-language and target-language text files.

    ``source`` and ``target`` are each one file or a list of files (shards). Shards pair up by
    position: source shard ``i`` is line-aligned with target shard ``i``, so both lists must have
    the same length.
    """

    model_config = _STRICT

    source: str | list[str]
    target: str | list[str]

    @field_validator("source", "target")
    @classmethod
    def _file_exists(cls, value: str | list[str], info: ValidationInfo) -> str | list[str]:
        if isinstance(value, str):
            return _existing_path(value, info, "file")
        if not value:
            raise Invalid(expected="a file or a non-empty list of files", found="an empty list")
        checked = []
        for index, item in enumerate(value):
            try:
                checked.append(_existing_path(item, info, "file"))
            except Invalid as error:
                raise Invalid(
                    (index,), expected=error.expected, found=error.found, message=error.message
                ) from None
        return checked

    @model_validator(mode="after")
    def _same_number_of_shards(self) -> SplitFiles:
        sources, targets = self.source_files, self.target_files
        if len(sources) != len(targets):
            raise Invalid(
                ("target",),
                expected=f"as many target files as source files ({len(sources)}; shards pair "
                "up by position)",
                found=f"{len(targets)} target file{'s' * (len(targets) != 1)}",
            )
        return self

    @property
    def source_files(self) -> list[str]:
        """list[str], the source shards (one item for a single file)."""
        return [self.source] if isinstance(self.source, str) else list(self.source)

    @property
    def target_files(self) -> list[str]:
        """list[str], the target shards, aligned with :attr:`source_files`."""
        return [self.target] if isinstance(self.target, str) else list(self.target)


class ToyTranslationData(BaseModel):
    """A generated toy translation task (no download), for demos and tests."""

    model_config = _STRICT

    source: Literal["toy_translation"]
    num_train: int = Field(20000, gt=0)
    num_validation: int = Field(500, gt=0)
    num_test: int = Field(500, gt=0)
    seed: int = 1234
    max_length: int = Field(64, gt=0)  # Tokens.
    tokenizer: Literal["word"] = "word"
    bucket_width: int = Field(2, ge=1)  # See _StreamedTranslationData.


class NoTranslationData(BaseModel):
    """No corpus (``data.source: none``): the data section of a model imported without a config
    (``transformer-tf import ... `` without ``--config``). ``translate``, ``score``, ``export``
    and ``train --init-from`` need no data; ``evaluate`` and training do (import with
    ``--config``, or train a run of its own from it)."""

    model_config = _STRICT

    source: Literal["none"]
    max_length: int = Field(256, gt=0)  # Tokens: longer inputs are cut when translating.
    bucket_width: int = Field(2, ge=1)  # See _StreamedTranslationData.


class SubwordRegularization(BaseModel):
    """``data.subword_regularization``: sample the SentencePiece segmentation of each training
    sentence anew every time it is read (Kudo 2018; BPE-dropout for BPE models).

    ``nbest_size``: sample among the n best segmentations, or -1 for all of them (unigram
    models); ``alpha``: the smoothing of their probabilities (unigram), or the probability of
    dropping a merge (BPE). Validation, test, ``translate`` and exports segment as usual.
    """

    model_config = _STRICT

    alpha: Number = Field(0.1, gt=0, le=1)
    nbest_size: int = -1

    @field_validator("nbest_size")
    @classmethod
    def _samples(cls, value: int) -> int:
        if value == -1 or value >= 2:
            return value
        raise Invalid(
            expected="-1 (sample among all segmentations) or an integer >= 2 (among the n best)",
            found=f"{value} (which does not sample; remove data.subword_regularization instead)",
        )


class _StreamedTranslationData(BaseModel):
    """The keys that both streamed translation sources take: tokenization, input and
    vocabulary settings.

    ``shuffle_buffer`` is the number of training examples the stream shuffles among (a bounded
    buffer: memory does not grow with the corpus; a corpus shorter than it is shuffled whole).
    ``vocab_sample`` bounds the sentence pairs a new vocabulary is learned from (the first ones
    of the training split, spread evenly over its shards). ``vocabulary`` names a prebuilt
    vocabulary directory (with a ``tokenizer.json``, such as a previous run's ``vocab/``) to use
    instead of learning one. ``bucket_width`` is the width, in tokens, of the length buckets
    that batches are drawn from (each batch is padded to its longest example): 1 pads least,
    8 mixes lengths more; with ``training.jit_compile`` or a TPU the buckets are multiples of 8.
    """

    model_config = _STRICT

    # Each source narrows this to its tag (a Literal); declared here so it comes first in dumps.
    source: str
    tokenizer: Literal["sentencepiece", "word"] = "sentencepiece"
    vocab_size: int = Field(8000, ge=16)
    shared_vocab: bool = True
    max_length: int = Field(128, gt=0)
    lowercase: bool = False
    shuffle_buffer: int = Field(100_000, ge=1)
    vocab_sample: int = Field(500_000, ge=1)
    bucket_width: int = Field(2, ge=1)  # = data.translation.DEFAULT_BUCKET_WIDTH
    vocabulary: str | None = None
    subword_regularization: SubwordRegularization | None = None
    TRAIN_SPLIT: ClassVar[str] = ""

    @model_validator(mode="after")
    def _sampling_needs_sentencepiece(self) -> _StreamedTranslationData:
        if self.subword_regularization is not None and self.tokenizer != "sentencepiece":
            raise Invalid(
                ("subword_regularization",),
                message="data.subword_regularization samples SentencePiece segmentations: it "
                f"needs data.tokenizer: sentencepiece (found {self.tokenizer!r}); remove it or "
                "change the tokenizer",
            )
        return self

    @model_validator(mode="after")
    def _has_train_split(self) -> _StreamedTranslationData:
        """Streamed sources train on ``splits.train``: it must be there."""
        splits = getattr(self, "splits", {"train": None})
        if "train" not in splits:
            found = ", ".join(repr(name) for name in splits) or "none"
            raise Invalid(
                ("splits", "train"),
                missing=True,
                expected=self.TRAIN_SPLIT,
                found=f"splits found: {found}",
            )
        return self

    @field_validator("vocabulary")
    @classmethod
    def _vocabulary_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = _existing_path(value, info, "directory")
        if not (Path(path) / "tokenizer.json").is_file():
            raise Invalid(
                expected="a vocabulary directory with a tokenizer.json (e.g. a run's vocab/)",
                found=f"{value!r} (no tokenizer.json in {path})",
            )
        return path


class Corpus(SplitFiles):
    """One corpus of a weighted training mixture (``data.splits.train`` as a list): its files,
    its ``weight`` (the share of the examples drawn from it is its weight over the sum) and a
    ``name`` for the logs (default: ``corpus <index>``)."""

    name: NonEmptyStr | None = None
    weight: Number = Field(1.0, gt=0)


#: A split's files: one corpus, or (``train`` only) a list of weighted corpora.
TrainFiles = Annotated[
    Union[Annotated[SplitFiles, Tag("files")], Annotated[list[Corpus], Tag("corpora")]],  # noqa: UP007
    Discriminator(lambda value: "corpora" if isinstance(value, list) else "files"),
]


class ParallelTextData(_StreamedTranslationData):
    """Line-aligned source/target text files per split; ``train`` is required.

    Training streams the ``train`` files line by line (each side one file or a list of shards);
    the other splits are read into memory for evaluation. ``train`` may instead be a list of
    corpora with weights (:class:`Corpus`): a mixture, drawn from in those proportions, which
    has no epochs (train by ``training.steps``).
    """

    source: Literal["parallel_text"]
    splits: dict[str, TrainFiles]

    @model_validator(mode="after")
    def _mixture_in_train_only(self) -> ParallelTextData:
        for name, split in self.splits.items():
            if isinstance(split, list) and name != "train":
                raise Invalid(
                    ("splits", name),
                    expected="a mapping with `source` and `target` files (only `train` can be a "
                    "list of weighted corpora)",
                    found="a list",
                )
            if isinstance(split, list) and not split:
                raise Invalid(
                    ("splits", name),
                    expected="a mapping with `source` and `target` files, or a non-empty list of "
                    "corpora",
                    found="an empty list",
                )
        return self

    @property
    def mixture(self) -> bool:
        """bool, whether ``splits.train`` is a list of weighted corpora."""
        return isinstance(self.splits.get("train"), list)

    def split_files(self, name: str) -> tuple[list[str], list[str]]:
        """The (source, target) files of split ``name``, a mixture's corpora one after the
        other."""
        split = self.splits[name]
        parts = split if isinstance(split, list) else [split]
        return (
            [f for part in parts for f in part.source_files],
            [f for part in parts for f in part.target_files],
        )

    @property
    def train_corpora(self) -> list[tuple[str, SplitFiles, float]]:
        """``(name, files, weight)`` of each training corpus: one, ``train`` with weight 1,
        without a mixture."""
        train = self.splits["train"]
        if not isinstance(train, list):
            return [("train", train, 1.0)]
        return [(c.name or f"corpus {i}", c, float(c.weight)) for i, c in enumerate(train)]

    #: What a ``splits.train`` entry is (said when it is missing).
    TRAIN_SPLIT: ClassVar[str] = "a mapping with `source` and `target` files"


class TfdsTranslationData(_StreamedTranslationData):
    """A TensorFlow Datasets translation dataset (``data.source: tfds`` with task translation).

    ``name`` is the tfds name (``wmt14_translate/de-en``, ``ted_hrlr_translate/pt_to_en``);
    ``source_language`` and ``target_language`` are the keys of the two sides in its examples
    (``de`` and ``en``). ``splits`` maps this run's split names to tfds split names (or slices
    such as ``train[:10%]``); ``train`` is required. Training streams the tfds ``train`` split.
    """

    source: Literal["tfds"]
    name: NonEmptyStr
    source_language: NonEmptyStr
    target_language: NonEmptyStr
    data_dir: str | None = None
    splits: dict[str, NonEmptyStr] = Field(
        default_factory=lambda: {"train": "train", "validation": "validation", "test": "test"}
    )

    TRAIN_SPLIT: ClassVar[str] = "the tfds split to train on, e.g. `train`"


class _ClassificationData(BaseModel):
    """The keys that both classification data sources take: validation split and tokenization."""

    model_config = _STRICT
    #: Keys that a trained run keeps: the validation split is carved out of the training data
    #: with them, and the reviews are cut with them. Another value on `evaluate` or a resume
    #: would score training reviews as validation, or another preprocessing than was trained.
    RUN_FIXED: ClassVar[tuple[str, ...]] = (
        "split_seed",
        "validation_fraction",
        "max_length",
        "truncation",
    )

    # Each source narrows this to its tag (a Literal); declared here so it comes first in dumps.
    source: str
    validation_fraction: Number = Field(0.1, gt=0, lt=1)
    split_seed: int = 1234
    max_length: int = Field(256, gt=0)
    vocab_size: int = Field(20000, ge=16)
    ngrams: int = Field(1, ge=1, le=3)
    lowercase: bool = True
    # Which tokens of a longer review to keep: the first max_length, the last, or the first
    # quarter and the last three quarters (reviews often conclude at the end).
    truncation: Literal["head", "tail", "head_tail"] = "head"


class TfdsData(_ClassificationData):
    """A TensorFlow Datasets text classification dataset (``imdb_reviews`` by default)."""

    source: Literal["tfds"]
    name: str = "imdb_reviews"
    data_dir: str | None = None


class DirectoryData(_ClassificationData):
    """Text classification from a directory with one sub-directory of text files per class."""

    source: Literal["directory"]
    path: str

    @field_validator("path")
    @classmethod
    def _directory_exists(cls, value: str, info: ValidationInfo) -> str:
        return _existing_path(value, info, "directory")


def _text_path(value: str, info: ValidationInfo) -> str:
    """An existing text file (one document per line) or a folder holding ``*.txt`` files (one
    document per file); the absolute path."""
    try:
        return _existing_path(value, info, "file")
    except Invalid as not_a_file:
        try:
            path = _existing_path(value, info, "directory")
        except Invalid:
            raise Invalid(
                expected="an existing text file or folder", found=not_a_file.found
            ) from None
    if not any(Path(path).glob("*.txt")):
        raise Invalid(
            expected="a text file (one document per line) or a folder of *.txt files (one "
            "document per file)",
            found=f"{value!r} (a folder with no *.txt file: {path})",
        )
    return path


class _TextSource(BaseModel):
    """The keys of every plain-text source (``data.source: text``) of the pretraining tasks.

    ``paths`` lists text files (one document per line) and folders (every ``*.txt`` file in
    it is one document, as in ``aclImdb/train/unsup``). A share ``validation_fraction`` of the
    documents, chosen by a hash of their text keyed with ``split_seed`` (equal documents fall
    on the same side), is held out for validation. Training shuffles the documents in a buffer
    of ``shuffle_buffer``.
    """

    model_config = _STRICT

    source: Literal["text"]
    paths: list[str] = Field(min_length=1)
    validation_fraction: Number = Field(0.02, gt=0, lt=1)
    split_seed: int = 1234
    shuffle_buffer: int = Field(100_000, ge=1)

    @field_validator("paths")
    @classmethod
    def _paths_exist(cls, value: list[str], info: ValidationInfo) -> list[str]:
        checked = []
        for index, item in enumerate(value):
            try:
                checked.append(_text_path(item, info))
            except Invalid as error:
                raise Invalid(
                    (index,), expected=error.expected, found=error.found, message=error.message
                ) from None
        return checked


class TextData(_TextSource):
    """Plain text for masked-LM pretraining (``data.source: text`` with ``task: masked_lm``);
    the text keys are :class:`_TextSource`'s.

    The vocabulary (``vocab_size`` tokens, the mask token included) is learned from the
    training documents, the first ``vocabulary_sample`` of them when set. Documents are cleaned
    and split into words as the classification task's reviews are (``lowercase``), and cut to
    ``max_length`` tokens (``truncation``).

    The masking (:func:`transformer_tf.data.masking.mask_tokens`): each token is chosen with
    probability ``mask_probability``; a chosen token becomes the mask token with probability
    ``mask_fraction``, a random token with ``random_fraction``, else stays; the loss counts the
    chosen tokens only. It is drawn in the ``tf.data`` graph, anew each epoch, from
    ``training.seed``; validation masks the same tokens every time.
    """

    #: Keys that a trained run keeps (see :class:`_ClassificationData`).
    RUN_FIXED: ClassVar[tuple[str, ...]] = (
        "split_seed",
        "validation_fraction",
        "max_length",
        "truncation",
        "mask_probability",
        "mask_fraction",
        "random_fraction",
    )

    max_length: int = Field(256, gt=1)
    truncation: Literal["head", "tail", "head_tail"] = "head"
    vocab_size: int = Field(30000, ge=16)
    vocabulary_sample: PositiveInt | None = None
    lowercase: bool = True
    mask_probability: Number = Field(0.15, gt=0, lt=1)
    mask_fraction: Number = Field(0.8, ge=0, le=1)
    random_fraction: Number = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _fractions(self) -> TextData:
        if self.mask_fraction + self.random_fraction > 1.0 + 1e-9:
            raise Invalid(
                ("random_fraction",),
                message=f"data.mask_fraction + data.random_fraction ({self.mask_fraction} + "
                f"{self.random_fraction}) must be at most 1: they are shares of the chosen "
                "tokens (the rest stay unchanged)",
            )
        return self


class DenoisingData(_TextSource):
    """Plain text for denoising pretraining (``data.source: text`` with ``task: denoising``);
    the text keys are :class:`_TextSource`'s.

    Documents are tokenized as translation sentences are (``tokenizer``, ``vocab_size``,
    ``lowercase``; the vocabulary is learned from the first ``vocab_sample`` training documents
    and the mask token added after it) and cut to ``max_length - 1`` tokens (the target gets
    EOS). The source is the document with BART's text infilling
    (:func:`transformer_tf.data.masking.infill_spans`): spans of Poisson(``poisson_lambda``)
    tokens, covering about ``mask_ratio`` of them, each replaced by one mask token; the target
    is the document. Drawn in the ``tf.data`` graph, anew each epoch, from ``training.seed``;
    validation corrupts the same way every time.
    """

    RUN_FIXED: ClassVar[tuple[str, ...]] = (
        "split_seed",
        "validation_fraction",
        "max_length",
        "mask_ratio",
        "poisson_lambda",
    )

    tokenizer: Literal["sentencepiece", "word"] = "sentencepiece"
    vocab_size: int = Field(8000, ge=16)
    lowercase: bool = False
    vocab_sample: int = Field(500_000, ge=1)
    max_length: int = Field(128, gt=1)
    bucket_width: int = Field(2, ge=1)
    mask_ratio: Number = Field(0.3, gt=0, lt=1)
    poisson_lambda: Number = Field(3.0, gt=0)


#: The ``data:`` section of a translation config, by ``source`` (toy_translation by default).
TranslationDataConfig = Annotated[
    Union[ToyTranslationData, ParallelTextData, TfdsTranslationData, NoTranslationData],  # noqa: UP007
    Field(discriminator="source"),
]
#: The ``data:`` section of a classification config, by ``source``.
ClassificationDataConfig = Annotated[
    Union[TfdsData, DirectoryData],  # noqa: UP007
    Field(discriminator="source"),
]
#: Every data source of every task (the diagnostics name the other sources that take a key).
DataConfig = Union[  # noqa: UP007
    ToyTranslationData,
    ParallelTextData,
    TfdsTranslationData,
    NoTranslationData,
    TfdsData,
    DirectoryData,
    TextData,
    DenoisingData,
]


DECODING_METRICS = ("exact_match", "bleu", "chrf")
#: Metrics where lower is better; every other one is maximised.
MINIMIZED_METRICS = ("loss", "perplexity")


class EarlyStopping(BaseModel):
    """Keep as ``best/`` the checkpoint with the best validation ``metric``, and stop when it has
    not improved by ``min_delta`` for ``patience`` validations.

    ``mode`` defaults to ``min`` for ``loss`` and ``max`` for every other metric (accuracy, BLEU).
    """

    model_config = _STRICT

    metric: str = "loss"
    mode: Literal["min", "max"] | None = None
    patience: int = Field(3, ge=1)
    min_delta: Number = 0.0

    @model_validator(mode="after")
    def _default_mode(self) -> EarlyStopping:
        if self.mode is None:
            self.mode = "min" if self.metric in MINIMIZED_METRICS else "max"
        return self


class ValidationConfig(BaseModel):
    """``training.validation``: what each validation measures besides the teacher-forced loss.

    For translation, ``decode`` translates the validation split with the run's ``decoding``
    settings and scores it (``bleu``, ``chrf``, ``exact_match``, sacreBLEU on detokenized text);
    ``beam_size: 1`` decodes greedily (faster), ``max_sentences`` decodes only the first N.
    """

    model_config = _STRICT

    decode: bool = True
    beam_size: PositiveInt | None = None  # None: decoding.beam_size.
    max_sentences: PositiveInt | None = None  # None: the whole split.


#: What ``training.batch_size: auto`` trains with where there is no device memory to probe
#: (a CPU: there a batch too large swaps rather than fails), in tokens: about the Multi30k
#: recipe's 128 sentences (configs/multi30k_de_en.yaml), a step of a few tenths of a second on
#: a small model. OpenNMT-tf's default for one GPU is 3072.
AUTO_BATCH_TOKENS_CPU = 2048


class TrainingConfig(BaseModel):
    """The ``training:`` section. ``batch_size`` is global (split over replicas).

    ``batch_type: examples`` (default) counts examples per batch; ``batch_type: tokens`` makes
    ``batch_size`` a token budget (as OpenNMT-tf's ``batch_type: tokens``): each length bucket
    gets as many examples as fit, counting the padded length of the longer side, so short
    sentences come in large batches and long ones in small batches.

    ``batch_size: auto`` (with ``batch_type: tokens``) chooses the token budget when training
    starts: on GPUs the largest that trains without running out of device memory (a search with
    real updates on a worst-case batch, then a margin; OpenNMT-tf's ``batch_size: 0``, Marian's
    ``--mini-batch-fit``), on a CPU :data:`AUTO_BATCH_TOKENS_CPU`; see
    :mod:`transformer_tf.training.batch_size`. ``effective_batch_size`` (OpenNMT-tf's) is the
    global batch one update sees, in ``batch_type`` units: the gradient accumulation follows
    from it. The run directory's ``batch_size.json`` records what was chosen, and why; a resumed
    run keeps it.
    """

    model_config = _STRICT

    batch_size: int | Literal["auto"] = 64
    batch_type: Literal["examples", "tokens"] = "examples"
    # The batch of one update, in `batch_type` units: `gradient_accumulation` becomes
    # ceil(effective_batch_size / batch_size) (with `auto`, the searched batch is lowered so that
    # batch x accumulation is exactly this); None: one update per `gradient_accumulation` batches.
    effective_batch_size: PositiveInt | None = None
    epochs: PositiveInt | None = None  # Both None: 1 epoch. Both set: whichever ends first.
    steps: PositiveInt | None = None
    optimizer: Literal["adam", "adamw"] = "adam"
    learning_rate: Number = Field(1e-3, gt=0)
    weight_decay: Number = Field(0.0, ge=0)
    beta_1: Number = Field(0.9, ge=0, lt=1)
    beta_2: Number = Field(0.98, ge=0, lt=1)
    epsilon: Number = Field(1e-9, gt=0)
    schedule: Literal["constant", "inverse_sqrt", "cosine"] = "inverse_sqrt"
    warmup_steps: int = Field(1000, ge=0)
    label_smoothing: Number = Field(0.1, ge=0, lt=1)
    clip_norm: Annotated[Number, Field(gt=0)] | None = 1.0
    # An exponential moving average of the weights, updated after each update with
    # decay_t = min(ema_decay, (1 + t) / (10 + t)) (transformer_tf.training.ema); validation,
    # `best/`, evaluate, translate, score and export use the averages (`--raw-weights`: not).
    # None: off. Typical: 0.9999 (0.999 for short runs).
    ema_decay: Annotated[Number, Field(gt=0, lt=1)] | None = None
    # Fine-tuning (`train --init-from`): the updates of the weights that came from the source
    # run are multiplied by `pretrained_learning_rate_scale` (their learning rate, weight decay
    # included), and they stay as they are for the first `freeze_pretrained_steps` updates
    # while the new head learns. No effect on a run trained from scratch.
    pretrained_learning_rate_scale: Number = Field(1.0, gt=0)
    freeze_pretrained_steps: int = Field(0, ge=0)
    # Layer-wise learning-rate decay (ELECTRA, Clark et al. 2020): with L encoder layers, layer
    # i (0 = the lowest) learns at decay^(L - i) of the rate, the embedding at decay^(L + 1),
    # the rest (head, decoder) at the full rate. 1: off.
    layer_learning_rate_decay: Number = Field(1.0, gt=0, le=1)
    # One step is one update: `gradient_accumulation` micro-batches of `batch_size` summed
    # (fewer at the end of an epoch), so `steps`, `warmup_steps` and the `*_every` count updates.
    gradient_accumulation: int = Field(1, ge=1)
    # Updates per tf.function call, without a host sync between them; a call also ends at the next
    # log, checkpoint or validation step and at the end of the run, so those need not divide it.
    steps_per_loop: int = Field(10, ge=1)
    # `auto`: bfloat16 where the hardware computes it natively, float16 on GPUs that only have
    # float16 tensor cores, else float32 (transformer_tf.precision says which and why).
    mixed_precision: Literal["auto", "none", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: bool = False
    checkpoint_every: int = Field(500, gt=0)
    keep_checkpoints: int = Field(5, ge=1)
    eval_every: PositiveInt | None = None  # None: every epoch.
    log_every: int = Field(50, gt=0)
    early_stopping: EarlyStopping | None = None
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    seed: int = 42

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        # One message for the two forms (pydantic would report each member of the union).
        if value == "auto" or (type(value) is int and value > 0):
            return value
        if value is None or isinstance(value, bool):
            found = {None: "null", True: "true (bool)", False: "false (bool)"}[value]
        else:
            found = repr(value) + ("" if type(value) is int else f" ({type(value).__name__})")
        raise Invalid(expected="an integer > 0 or `auto`", found=found)

    @model_validator(mode="after")
    def _default_length(self) -> TrainingConfig:
        if self.epochs is None and self.steps is None:
            self.epochs = 1
        return self

    @model_validator(mode="after")
    def _check_batch(self) -> TrainingConfig:
        if self.batch_size == "auto" and self.batch_type != "tokens":
            raise Invalid(
                ("batch_size",),
                message="training.batch_size: `auto` searches a token budget, so it needs "
                f"training.batch_type: tokens (found `{self.batch_type}`); set "
                "training.batch_type: tokens, or give training.batch_size a number",
            )
        effective = self.effective_batch_size
        if effective is not None and self.gradient_accumulation > 1:
            raise Invalid(
                ("effective_batch_size",),
                message="training.effective_batch_size: the gradient accumulation follows from "
                f"it, so it cannot go with training.gradient_accumulation "
                f"({self.gradient_accumulation}); remove one of the two",
            )
        if effective is not None and self.batch_size != "auto" and effective < self.batch_size:
            raise Invalid(
                ("effective_batch_size",),
                message=f"training.effective_batch_size ({effective}) is smaller than "
                f"training.batch_size ({self.batch_size}): an update sees at least one batch; "
                "raise it, or lower training.batch_size",
            )
        return self


class DistributeConfig(BaseModel):
    """The ``distribute:`` section: the ``tf.distribute`` strategy."""

    model_config = _STRICT

    strategy: Literal["auto", "cpu", "gpu", "mirrored", "multi_worker", "tpu"] = "auto"
    tpu: str | None = None  # TPU name or grpc:// address.
    devices: list[NonEmptyStr] | None = None  # For `mirrored`; None: all GPUs.
    communication: Literal["auto", "ring", "nccl"] = "auto"


class DecodingConfig(BaseModel):
    """The ``decoding:`` section: beam search or sampling for translation.

    Sampling (OpenNMT-tf's convention) is on when ``beam_size`` is 1 and ``sampling_topk`` is
    not 1 or ``sampling_topp`` is below 1: each token is drawn from the model's distribution
    divided by ``sampling_temperature``, among the ``sampling_topk`` most probable tokens (0: the
    whole vocabulary) and within the top-p nucleus; ``seed`` makes it reproducible. The defaults
    are greedy (beam 1) or beam search.
    """

    model_config = _STRICT

    beam_size: int = Field(4, ge=1)
    length_penalty: Number = Field(0.6, ge=0)
    max_length: int = Field(128, gt=0)
    sampling_topk: int = Field(1, ge=0)
    sampling_topp: Number = Field(1.0, gt=0, le=1)
    sampling_temperature: Number = Field(1.0, gt=0)
    seed: int = Field(0, ge=0)

    @property
    def sampling(self) -> bool:
        """bool, whether the settings ask for sampling rather than greedy or beam search."""
        return self.sampling_topk != 1 or self.sampling_topp < 1

    @model_validator(mode="after")
    def _check_sampling(self) -> DecodingConfig:
        if self.sampling and self.beam_size != 1:
            key = "sampling_topk" if self.sampling_topk != 1 else "sampling_topp"
            raise Invalid(
                (key,),
                message=f"`decoding.{key}` ({getattr(self, key)}) asks for sampling, which "
                f"needs `decoding.beam_size: 1` (found {self.beam_size})",
            )
        return self


_SECTIONS = ("model", "training", "distribute", "decoding")


class Config(BaseModel):
    """A complete, validated run configuration: the sections every task has.

    Each task's config is a subclass that narrows ``task``, ``model`` and ``data`` and names
    its validation metrics (:class:`TranslationConfig`, :class:`ClassificationConfig`); a
    mapping becomes one of them by its ``task`` key (:data:`AnyConfig`). Use
    :func:`~transformer_tf.config.load_config` (a YAML file) or
    :func:`~transformer_tf.config.config_from_dict` rather than a constructor: they report
    errors with file, line and key path, and import plugins.
    """

    model_config = _STRICT

    #: The model built when ``model.name`` is not set.
    DEFAULT_MODEL: ClassVar[str] = ""
    #: The validation metrics, by name (``training.early_stopping.metric`` is one of them).
    VALIDATION_METRICS: ClassVar[tuple[str, ...]] = ("loss",)

    # Each task narrows `task`, `model` and `data`; declared here so that dumps keep this order.
    task: str
    name: str | None = None
    plugins: list[NonEmptyStr] = Field(default_factory=list)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: Any = None
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    distribute: DistributeConfig = Field(default_factory=DistributeConfig)
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)

    @classmethod
    def data_sources(cls) -> tuple[str, ...]:
        """The ``data.source`` values this task accepts; the first is the default, if any."""
        union = cls.model_fields["data"].annotation
        while get_origin(union) is Annotated:
            union = get_args(union)[0]
        members = get_args(union) or (union,)  # one source is no Union
        return tuple(get_args(m.model_fields["source"].annotation)[0] for m in members)

    @model_validator(mode="before")
    @classmethod
    def _fill_sections(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        for section in _SECTIONS:  # `training:` with every key commented out is None.
            if section in raw and raw[section] is None:
                raw[section] = {}
        if "data" in raw and raw["data"] is None:
            del raw["data"]
        return cls._task_defaults(raw)

    @classmethod
    def _task_defaults(cls, raw: dict) -> dict:
        """The raw mapping with the task's own defaults filled in, before validation."""
        return raw

    @model_validator(mode="after")
    def _check_task(self) -> Config:
        if self.model.name is None:
            self.model.name = self.DEFAULT_MODEL
        self._check_selection_metric()
        if self.training.batch_type == "tokens" and self.distribute.strategy == "tpu":
            # Token budgets give each length bucket its own batch size, so the batch dimension
            # is not static, which TPU input pipelines need.
            raise Invalid(
                ("training", "batch_type"),
                expected="`examples` with `distribute.strategy: tpu` (static batch shapes)",
                found="'tokens'",
            )
        return self

    def validation_metrics(self) -> tuple[str, ...]:
        """The metrics a validation of this config reports."""
        return self.VALIDATION_METRICS

    def _metric_hint(self, metric: str) -> str:
        """Why ``metric``, a metric of the task, is not among :meth:`validation_metrics`."""
        return ""

    def _check_selection_metric(self) -> None:
        """``training.early_stopping.metric`` must be a validation metric of this run."""
        stopping = self.training.early_stopping
        if stopping is None:
            return
        metrics = self.validation_metrics()
        if stopping.metric not in metrics:
            raise Invalid(
                ("training", "early_stopping", "metric"),
                expected=f"a validation metric of task {self.task!r}: "
                f"{', '.join(repr(m) for m in metrics)}{self._metric_hint(stopping.metric)}",
                found=repr(stopping.metric),
            )

    def to_yaml(self) -> str:
        """The fully resolved config as YAML; :func:`config_from_dict` of it gives an equal Config."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class TranslationConfig(Config):
    """A translation run: an encoder-decoder on parallel text (``task: translation``)."""

    DEFAULT_MODEL: ClassVar[str] = "seq2seq_transformer"
    VALIDATION_METRICS: ClassVar[tuple[str, ...]] = ("loss", "token_accuracy", *DECODING_METRICS)

    task: Literal["translation"]
    model: ModelConfig = Field(default_factory=ModelConfig)
    # `data` and `data.source` default to toy_translation (so that `--set data.seed=7` works
    # without a data section).
    data: TranslationDataConfig

    @classmethod
    def _task_defaults(cls, raw: dict) -> dict:
        data = raw.get("data", {})
        if isinstance(data, dict) and "source" not in data:
            raw["data"] = {"source": cls.data_sources()[0], **data}
        if isinstance(raw.get("model"), dict):
            raw["model"] = _without_classifier_keys(raw["model"])
        return raw

    @model_validator(mode="after")
    def _mixture_by_steps(self) -> TranslationConfig:
        # A weighted mixture is drawn from forever: an epoch of it means nothing.
        if not getattr(self.data, "mixture", False):
            return self
        if self.training.steps is None:
            raise Invalid(
                ("training", "steps"),
                message="training.steps: a weighted mixture of corpora (data.splits.train as a "
                "list) has no epochs, so it trains by steps: set training.steps",
            )
        if self.training.epochs is not None:
            raise Invalid(
                ("training", "epochs"),
                message="training.epochs: a weighted mixture of corpora (data.splits.train as a "
                "list) has no epochs; train by training.steps and remove training.epochs",
            )
        return self

    def validation_metrics(self) -> tuple[str, ...]:
        if self.training.validation.decode:
            return self.VALIDATION_METRICS
        return tuple(m for m in self.VALIDATION_METRICS if m not in DECODING_METRICS)

    def _metric_hint(self, metric: str) -> str:
        if metric in DECODING_METRICS:
            return " (decoding scores need training.validation.decode: true)"
        return ""


def _without_classifier_keys(model: dict) -> dict:
    """A translation config's ``model`` section without the classifier-only keys.

    Versions before these keys became classification-only wrote them, with their defaults, into
    every saved config.yaml, translation runs included: exactly the default is dropped silently
    so that those run directories still load; any other value is an error.
    """
    model = dict(model)
    for key, default in CLASSIFIER_MODEL_DEFAULTS.items():
        if key not in model:
            continue
        if model[key] == default and type(model[key]) is type(default):
            del model[key]
            continue
        raise Invalid(
            ("model", key),
            message=f"model.{key} applies to task 'classification' only (this config's "
            "task is 'translation')",
        )
    return model


class ClassificationConfig(Config):
    """A text classification run: an encoder and a classifier head (``task: classification``)."""

    DEFAULT_MODEL: ClassVar[str] = "transformer_classifier"
    VALIDATION_METRICS: ClassVar[tuple[str, ...]] = ("loss", "accuracy")

    task: Literal["classification"]
    model: ClassifierModelConfig = Field(default_factory=ClassifierModelConfig)
    data: ClassificationDataConfig


class _PretrainingConfig(Config):
    """What the pretraining tasks' configs share: their data comes from ``data.source:
    text`` by default, and a classifier's keys or another task's model are refused."""

    @classmethod
    def _task_defaults(cls, raw: dict) -> dict:
        data = raw.get("data", {})
        if isinstance(data, dict) and "source" not in data:
            raw["data"] = {"source": cls.data_sources()[0], **data}
        for key in CLASSIFIER_MODEL_DEFAULTS:
            if isinstance(raw.get("model"), dict) and key in raw["model"]:
                task = get_args(cls.model_fields["task"].annotation)[0]
                raise Invalid(
                    ("model", key),
                    message=f"model.{key} is a key of a classification head; task {task!r} "
                    "pretrains a model without one: remove it, and set it in the "
                    "classification config that fine-tunes this run (--init-from RUN)",
                )
        return raw

    @model_validator(mode="after")
    def _own_model(self) -> _PretrainingConfig:
        other = {
            c.DEFAULT_MODEL: t
            for t, c in TASK_CONFIGS.items()
            if c.DEFAULT_MODEL != self.DEFAULT_MODEL
        }
        if self.model.name in other:
            raise Invalid(
                ("model", "name"),
                message=f"model.name: `{self.model.name}` is the model of task "
                f"{other[self.model.name]!r}; task {self.task!r} trains "
                f"`{self.DEFAULT_MODEL}` (or a plugin's model of its kind); to train a "
                f"{other[self.model.name]} model from this run, train a "
                f"{other[self.model.name]} config with --init-from RUN",
            )
        return self


class MaskedLMConfig(_PretrainingConfig):
    """Masked-language-model pretraining of an encoder on plain text (``task: masked_lm``):
    BERT's objective, for a classifier to start from (``train --init-from``)."""

    DEFAULT_MODEL: ClassVar[str] = "transformer_masked_lm"
    VALIDATION_METRICS: ClassVar[tuple[str, ...]] = ("loss", "accuracy", "perplexity")

    task: Literal["masked_lm"]
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: TextData


class DenoisingConfig(_PretrainingConfig):
    """Denoising pretraining of an encoder-decoder on plain text (``task: denoising``): BART's
    text infilling, for a translation run to start from (``train --init-from``)."""

    DEFAULT_MODEL: ClassVar[str] = "seq2seq_transformer"
    VALIDATION_METRICS: ClassVar[tuple[str, ...]] = ("loss", "token_accuracy", "exact_match")

    task: Literal["denoising"]
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DenoisingData


#: Any task's config, chosen by its ``task`` key.
AnyConfig = Annotated[
    Union[TranslationConfig, ClassificationConfig, MaskedLMConfig, DenoisingConfig],  # noqa: UP007
    Field(discriminator="task"),
]
#: Validates a raw mapping into the config of its task.
CONFIG_ADAPTER: TypeAdapter = TypeAdapter(AnyConfig)
#: ``task`` -> its config class.
TASK_CONFIGS: dict[str, type[Config]] = {
    get_args(cls.model_fields["task"].annotation)[0]: cls
    for cls in (TranslationConfig, ClassificationConfig, MaskedLMConfig, DenoisingConfig)
}
#: The data sources each task accepts; the first one is the default when ``data`` is absent.
TASK_DATA_SOURCES: dict[str, tuple[str, ...]] = {
    task: cls.data_sources() for task, cls in TASK_CONFIGS.items()
}
