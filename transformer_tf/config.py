"""The run configuration: YAML -> a typed, strict, fully validated :class:`Config`.

A config file is read with ``yaml.safe_load`` (never an unsafe loader), ``--set key.path=value``
overrides are applied to the raw mapping, and the result is validated by strict pydantic models
(unknown keys, wrong types and out-of-range values are errors; nothing is coerced from strings,
except numbers such as ``1e-3`` that YAML 1.1 reads as strings). Then the plugins listed under
``plugins:`` are imported and the registry names in ``model:`` are checked.

Every problem is reported as one :class:`~transformer_tf.errors.ConfigError` listing all errors
found, one per line, each naming the file, the line of the key (or of its nearest parent present
in the file), the dotted key path, what was expected and what was found::

    configs/x.yaml:12: training.batch_size: expected an integer > 0, found -3
    configs/x.yaml:4: unknown key `model.d_modle`; did you mean `model.d_model`?
    override `--set training.batch_size=abc`: training.batch_size: expected an integer > 0, found 'abc' (str)

This module imports neither TensorFlow nor Keras, so a config is validated before any TensorFlow
work starts.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from transformer_tf.errors import ConfigError
from transformer_tf.plugins import PluginError, import_plugins

__all__ = [
    "Config",
    "DataConfig",
    "DecodingConfig",
    "DirectoryData",
    "DistributeConfig",
    "EarlyStopping",
    "ModelConfig",
    "ParallelTextData",
    "SplitFiles",
    "TASK_DATA_SOURCES",
    "TfdsData",
    "ToyTranslationData",
    "TrainingConfig",
    "check_registered_names",
    "config_from_dict",
    "load_config",
    "model_affecting_differences",
    "save_config",
]

#: The data sources each task accepts; the first one is the default when ``data`` is absent.
TASK_DATA_SOURCES: dict[str, tuple[str, ...]] = {
    "translation": ("toy_translation", "parallel_text"),
    "classification": ("tfds", "directory"),
}

DEFAULT_MODEL_NAMES: dict[str, str] = {
    "translation": "seq2seq_transformer",
    "classification": "transformer_classifier",
}

#: The modules that register the built-in classes; names are checked only once they are imported.
_BUILTIN_MODULES = frozenset({"transformer_tf.layers", "transformer_tf.models"})

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

# Data fields that change the vocabulary or the tokenization (see model_affecting_differences).
_VOCABULARY_DATA_FIELDS = (
    "source",
    "tokenizer",
    "vocab_size",
    "shared_vocab",
    "lowercase",
    "ngrams",
    "seed",
    "num_train",
)

_MISSING: Any = object()


class _Invalid(ValueError):
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


class ModelConfig(BaseModel):
    """The ``model:`` section: architecture hyperparameters and registered part names."""

    model_config = _STRICT

    name: str | None = None  # Filled by Config: DEFAULT_MODEL_NAMES[task].
    num_layers: int = Field(2, gt=0)
    num_encoder_layers: PositiveInt | None = None  # Defaults to num_layers.
    num_decoder_layers: PositiveInt | None = None  # Defaults to num_layers.
    d_model: int = Field(128, gt=0)
    num_heads: int = Field(4, gt=0)
    d_ff: int = Field(512, gt=0)
    dropout: Number = Field(0.1, ge=0, lt=1)
    attention_dropout: Number = Field(0.0, ge=0, lt=1)
    ffn_dropout: Number = Field(0.0, ge=0, lt=1)
    activation: Literal["relu", "gelu"] = "relu"
    normalize_first: bool = False
    layer_norm_epsilon: Number = Field(1e-6, gt=0)
    positional_encoding: str = "sinusoidal"
    max_length: int = Field(512, gt=0)  # Number of positions.
    attention: str = "multi_head"
    feed_forward: str = "position_wise"
    normalization: str = "layer_norm"
    encoder_layer: str = "transformer"
    decoder_layer: str = "transformer"
    share_embeddings: bool = False
    tie_embeddings: bool = True
    pooling: Literal["mean", "cls"] = "mean"
    num_classes: int = Field(2, ge=2)

    @model_validator(mode="after")
    def _resolve(self) -> ModelConfig:
        if self.num_encoder_layers is None:
            self.num_encoder_layers = self.num_layers
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        if self.d_model % self.num_heads:
            raise _Invalid(
                ("d_model",),
                message=f"`model.d_model` ({self.d_model}) must be divisible by "
                f"`model.num_heads` ({self.num_heads})",
            )
        return self


def _existing_path(value: str, info: ValidationInfo, kind: Literal["file", "directory"]) -> str:
    """The absolute path of an existing file/directory; relative to the config's directory first."""
    if not value.strip():
        raise _Invalid(expected=f"the path of an existing {kind}", found="an empty string")
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
    raise _Invalid(expected=f"an existing {kind}", found=found)


class SplitFiles(BaseModel):
    """One split of a parallel corpus: a source-language and a target-language text file."""

    model_config = _STRICT

    source: str
    target: str

    @field_validator("source", "target")
    @classmethod
    def _file_exists(cls, value: str, info: ValidationInfo) -> str:
        return _existing_path(value, info, "file")


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


class ParallelTextData(BaseModel):
    """Line-aligned source/target text files per split; ``train`` is required."""

    model_config = _STRICT

    source: Literal["parallel_text"]
    splits: dict[str, SplitFiles]
    tokenizer: Literal["sentencepiece", "word"] = "sentencepiece"
    vocab_size: int = Field(8000, ge=16)
    shared_vocab: bool = True
    max_length: int = Field(128, gt=0)
    lowercase: bool = False

    @model_validator(mode="after")
    def _has_train_split(self) -> ParallelTextData:
        if "train" not in self.splits:
            found = ", ".join(repr(name) for name in self.splits) or "none"
            raise _Invalid(
                ("splits", "train"),
                missing=True,
                expected="a mapping with `source` and `target` files",
                found=f"splits found: {found}",
            )
        return self


class TfdsData(BaseModel):
    """A TensorFlow Datasets text classification dataset (``imdb_reviews`` by default)."""

    model_config = _STRICT

    source: Literal["tfds"]
    name: str = "imdb_reviews"
    data_dir: str | None = None
    validation_fraction: Number = Field(0.1, gt=0, lt=1)
    split_seed: int = 1234
    max_length: int = Field(256, gt=0)
    vocab_size: int = Field(20000, ge=16)
    ngrams: int = Field(1, ge=1, le=3)
    lowercase: bool = True
    # Which tokens of a longer review to keep: the first max_length, the last, or the first
    # quarter and the last three quarters (reviews often conclude at the end).
    truncation: Literal["head", "tail", "head_tail"] = "head"


class DirectoryData(BaseModel):
    """Text classification from a directory with one sub-directory of text files per class."""

    model_config = _STRICT

    source: Literal["directory"]
    path: str
    validation_fraction: Number = Field(0.1, gt=0, lt=1)
    split_seed: int = 1234
    max_length: int = Field(256, gt=0)
    vocab_size: int = Field(20000, ge=16)
    ngrams: int = Field(1, ge=1, le=3)
    lowercase: bool = True
    # Which tokens of a longer review to keep: the first max_length, the last, or the first
    # quarter and the last three quarters (reviews often conclude at the end).
    truncation: Literal["head", "tail", "head_tail"] = "head"

    @field_validator("path")
    @classmethod
    def _directory_exists(cls, value: str, info: ValidationInfo) -> str:
        return _existing_path(value, info, "directory")


DataConfig = Annotated[
    Union[ToyTranslationData, ParallelTextData, TfdsData, DirectoryData],  # noqa: UP007
    Field(discriminator="source"),
]


class EarlyStopping(BaseModel):
    """Stop when ``metric`` has not improved by ``min_delta`` for ``patience`` evaluations."""

    model_config = _STRICT

    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(3, ge=1)
    min_delta: Number = 0.0


class TrainingConfig(BaseModel):
    """The ``training:`` section. ``batch_size`` is global (split over replicas).

    ``batch_type: examples`` (default) counts examples per batch; ``batch_type: tokens`` makes
    ``batch_size`` a token budget (as OpenNMT-tf's ``batch_type: tokens``): each length bucket
    gets as many examples as fit, counting the padded length of the longer side, so short
    sentences come in large batches and long ones in small batches.
    """

    model_config = _STRICT

    batch_size: int = Field(64, gt=0)
    batch_type: Literal["examples", "tokens"] = "examples"
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
    gradient_accumulation: int = Field(1, ge=1)
    mixed_precision: Literal["none", "mixed_float16", "mixed_bfloat16"] = "none"
    jit_compile: bool = False
    checkpoint_every: int = Field(500, gt=0)
    keep_checkpoints: int = Field(5, ge=1)
    eval_every: PositiveInt | None = None  # None: every epoch.
    log_every: int = Field(50, gt=0)
    early_stopping: EarlyStopping | None = None
    seed: int = 42

    @model_validator(mode="after")
    def _default_length(self) -> TrainingConfig:
        if self.epochs is None and self.steps is None:
            self.epochs = 1
        return self


class DistributeConfig(BaseModel):
    """The ``distribute:`` section: the ``tf.distribute`` strategy."""

    model_config = _STRICT

    strategy: Literal["auto", "cpu", "gpu", "mirrored", "multi_worker", "tpu"] = "auto"
    tpu: str | None = None  # TPU name or grpc:// address.
    devices: list[NonEmptyStr] | None = None  # For `mirrored`; None: all GPUs.
    communication: Literal["auto", "ring", "nccl"] = "auto"


class DecodingConfig(BaseModel):
    """The ``decoding:`` section: beam search for translation."""

    model_config = _STRICT

    beam_size: int = Field(4, ge=1)
    length_penalty: Number = Field(0.6, ge=0)
    max_length: int = Field(128, gt=0)


_SECTIONS = ("model", "training", "distribute", "decoding")


class Config(BaseModel):
    """A complete, validated run configuration.

    Use :func:`load_config` (a YAML file) or :func:`config_from_dict` rather than the
    constructor: they report errors with file, line and key path, and import plugins.
    """

    model_config = _STRICT

    task: Literal["translation", "classification"]
    name: str | None = None
    plugins: list[NonEmptyStr] = Field(default_factory=list)
    model: ModelConfig = Field(default_factory=ModelConfig)
    # For translation, `data` and `data.source` default to toy_translation (so `--set data.seed=7`
    # works without a data section); for classification both are required.
    data: DataConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    distribute: DistributeConfig = Field(default_factory=DistributeConfig)
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)

    @model_validator(mode="before")
    @classmethod
    def _fill_sections(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        for section in _SECTIONS:  # `training:` with every key commented out is None.
            if section in raw and raw[section] is None:
                raw[section] = {}
        if raw.get("data", _MISSING) is None:
            del raw["data"]
        if raw.get("task") != "classification":  # Translation's data source has a default.
            data = raw.get("data", {})
            if isinstance(data, dict) and "source" not in data:
                raw["data"] = {"source": TASK_DATA_SOURCES["translation"][0], **data}
        return raw

    @model_validator(mode="after")
    def _check_task(self) -> Config:
        if self.model.name is None:
            self.model.name = DEFAULT_MODEL_NAMES[self.task]
        allowed = TASK_DATA_SOURCES[self.task]
        if self.data.source not in allowed:
            raise _Invalid(
                ("data", "source"),
                expected=f"one of {_choices(allowed)} for task {self.task!r}",
                found=repr(self.data.source),
            )
        if self.training.batch_type == "tokens" and self.distribute.strategy == "tpu":
            # Token budgets give each length bucket its own batch size, so the batch dimension
            # is not static, which TPU input pipelines need.
            raise _Invalid(
                ("training", "batch_type"),
                expected="`examples` with `distribute.strategy: tpu` (static batch shapes)",
                found="'tokens'",
            )
        return self

    def to_yaml(self) -> str:
        """The fully resolved config as YAML; :func:`config_from_dict` of it gives an equal Config."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------------------------
# Public API.


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Read, override, validate a YAML config, import its plugins and check registered names.

    Args:
        path: str or PathLike, the YAML file.
        overrides: strings ``key.path=value``; each value is parsed as YAML (``32`` is an int,
            ``true`` a bool, ``[a, b]`` a list, ``null`` None) and set before validation.

    Returns:
        Config, with every default filled in and plugin entries resolved.

    Raises:
        ConfigError: listing every problem found (file, line, key path, expected, found).
        UserError: a plugin that failed to import (as a ConfigError naming ``plugins[i]``).
    """
    name = os.fspath(path)
    file = Path(name).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        _raise([f"{name}: config file not found (looked for {os.path.abspath(file)})"], name)
    except IsADirectoryError:
        _raise([f"{name}: expected a YAML config file, found a directory"], name)
    except UnicodeDecodeError as error:
        _raise([f"{name}: expected a UTF-8 YAML file, found undecodable bytes ({error})"], name)
    except OSError as error:
        _raise([f"{name}: cannot read the config file: {error.strerror or error}"], name)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        _raise([_yaml_error_message(name, error)], name)
    lines, duplicates = _key_lines(text)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _raise(
            [
                f"{name}:1: expected a mapping of keys (task:, model:, data:, ...) at the top "
                f"level, found {_found(raw, with_type=True)}"
            ],
            name,
        )
    locator = _Locator(name, lines)
    issues = [(path, f"{locator.where(path)}: {text}") for path, text in duplicates]
    return _build(raw, locator, overrides, base_dir=file.resolve().parent, issues=issues)


def config_from_dict(
    raw: Mapping[str, Any] | None,
    *,
    source: str = "<config>",
    overrides: Sequence[str] = (),
    base_dir: str | os.PathLike | None = None,
) -> Config:
    """Validate an already-parsed config mapping (as :func:`load_config` does after reading).

    Args:
        raw: mapping, the config as ``yaml.safe_load`` returns it (not modified).
        source: str, names the origin in error messages (no line numbers are available).
        overrides: ``key.path=value`` strings, as for :func:`load_config`.
        base_dir: directory that relative plugin and data paths are looked up in first (then the
            current directory).
    """
    raw = {} if raw is None else copy.deepcopy(raw)
    if not isinstance(raw, dict):
        _raise(
            [f"{source}: expected a mapping at the top level, found {_found(raw, True)}"], source
        )
    return _build(
        raw,
        _Locator(source, {}),
        overrides,
        base_dir=Path(base_dir).resolve() if base_dir is not None else None,
        issues=[],
    )


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write ``config.to_yaml()`` to ``path`` (atomically; parent directories are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(config.to_yaml(), encoding="utf-8")
    os.replace(tmp, path)


def check_registered_names(
    config: Config,
    path: str | os.PathLike | None = None,
    *,
    overrides: Sequence[str] = (),
    registries: Mapping[str, Any] | None = None,
) -> None:
    """Check that every registry name in ``config.model`` is registered in its slot.

    ``model.name`` is looked up in the ``model`` slot, ``model.attention`` in ``attention``, and
    so on (see ``REGISTERED_MODEL_FIELDS``).

    This function imports neither TensorFlow nor the layers: the caller must have imported
    ``transformer_tf.layers`` and ``transformer_tf.models`` (and the plugins) first. A slot with
    no names registered at all is skipped silently, as is everything when those two modules
    have not been imported (and no ``registries`` are given), so that a config can be validated
    in isolation, before any TensorFlow import.

    Args:
        config: Config.
        path: the config file it came from, for the line numbers in messages (optional).
        overrides: the overrides applied to it, to name them in messages (optional).
        registries: slot -> Registry; defaults to ``transformer_tf.registry.REGISTRIES``.

    Raises:
        ConfigError: one line per unknown name, with the registered names of the slot.
    """
    name = os.fspath(path) if path is not None else "<config>"
    lines: dict[tuple, int] = {}
    if path is not None:
        try:
            lines, _ = _key_lines(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            lines = {}
    locator = _Locator(name, lines, _override_paths(overrides))
    _raise_issues(_unregistered_names(config, locator, registries), name)


def model_affecting_differences(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ between two configs and change the model or its vocab.

    Compared: ``task``, ``plugins``, every ``model.*`` key, and the data keys that change the
    vocabulary or tokenization (``data.source``, ``data.tokenizer``, ``data.vocab_size``,
    ``data.shared_vocab``, ``data.lowercase``, ``data.ngrams``, and the toy task's ``data.seed``
    and ``data.num_train``). A key present in only one of the two configs counts as different.
    """
    differences = []
    if old.task != new.task:
        differences.append("task")
    if list(old.plugins) != list(new.plugins):
        differences.append("plugins")
    for field in ModelConfig.model_fields:
        if getattr(old.model, field) != getattr(new.model, field):
            differences.append(f"model.{field}")
    for field in _VOCABULARY_DATA_FIELDS:
        if getattr(old.data, field, _MISSING) != getattr(new.data, field, _MISSING):
            differences.append(f"data.{field}")
    return differences


# --------------------------------------------------------------------------------------------
# Validation pipeline.


def _build(
    raw: dict,
    locator: _Locator,
    overrides: Sequence[str],
    *,
    base_dir: Path | None,
    issues: list[tuple[tuple, str]],
) -> Config:
    locator.overrides = _apply_overrides(raw, overrides, locator.name)
    config = None
    try:
        config = Config.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as error:
        issues = issues + _translate_errors(error, raw, locator)
    _raise_issues(issues, locator.name)
    assert config is not None
    try:
        config.plugins = import_plugins(config.plugins, base_dir)
    except PluginError as error:
        _raise(
            [f"{locator.where(('plugins', error.index))}: {error}"],
            locator.name,
            key=error.key,
            chain=error,
        )
    _raise_issues(_unregistered_names(config, locator, None), locator.name)
    return config


def _unregistered_names(
    config: Config, locator: _Locator, registries: Mapping[str, Any] | None
) -> list[tuple[tuple, str]]:
    if registries is None:
        module = sys.modules.get("transformer_tf.registry")
        # Without the built-ins (not imported yet, as in the command before a config is valid)
        # only a plugin's names could be registered: validate in isolation; the caller checks
        # the names with check_registered_names once it has imported the built-ins.
        if module is None or not _BUILTIN_MODULES.issubset(sys.modules):
            return []
        registries = module.REGISTRIES
    issues = []  # (key path, message line)
    for field, slot in REGISTERED_MODEL_FIELDS.items():
        registry = registries.get(slot)
        if registry is None or not registry.names():
            continue  # An empty slot: the layers were not imported; skip (see docstring).
        value = getattr(config.model, field)
        if value in registry:
            continue
        try:
            registry.get(value)
            continue
        except Exception as error:  # UnknownNameError, with the list of registered names.
            detail = str(error)
        path = ("model", field)
        issues.append((path, f"{locator.where(path)}: model.{field}: {detail}"))
    return issues


def _raise_issues(issues: list[tuple[tuple, str]], file: str) -> None:
    """Raise a ConfigError for ``(key path, message line)`` issues, if there are any."""
    if issues:
        lines = list(dict.fromkeys(line for _, line in issues))
        _raise(lines, file, key=_dotted(issues[0][0]) or None)


def _raise(
    issues: list[str], file: str, *, key: str | None = None, chain: BaseException | None = None
) -> None:
    """Raise one ConfigError listing every issue (one line each)."""
    error = ConfigError("\n".join(issues))
    error.file = file  # Set after construction: the lines already name the file and the key.
    error.key = key
    error.issues = list(issues)
    raise error from chain


# --------------------------------------------------------------------------------------------
# YAML: line numbers of keys, syntax errors.


class _Locator:
    """Maps key paths to "file:line", or to the override that set them."""

    def __init__(
        self, name: str, lines: dict[tuple, int], overrides: dict[tuple, str] | None = None
    ):
        self.name = name
        self.lines = lines
        self.overrides = overrides or {}

    def where(self, path: tuple) -> str:
        prefixes = [tuple(path[:end]) for end in range(len(path), 0, -1)]
        for prefix in prefixes:  # An override replaced everything below its key.
            if prefix in self.overrides:
                return f"override `--set {self.overrides[prefix]}`"
        for prefix in prefixes:  # The key's line, else its nearest parent's.
            if prefix in self.lines:
                return f"{self.name}:{self.lines[prefix]}"
        return self.name


def _key_lines(text: str) -> tuple[dict[tuple, int], list[tuple[tuple, str]]]:
    """Key path -> 1-based line of the key, and the duplicate keys found (path, message)."""
    lines: dict[tuple, int] = {}
    duplicates: list[tuple[tuple, str]] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines, duplicates

    def walk(node: yaml.Node, path: tuple, ancestors: frozenset) -> None:
        if id(node) in ancestors:  # A recursive alias.
            return
        ancestors = ancestors | {id(node)}
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            merged: list[yaml.Node] = []
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merged.extend(
                        value_node.value
                        if isinstance(value_node, yaml.SequenceNode)
                        else [value_node]
                    )
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in seen:
                    duplicates.append(
                        (
                            path + (key,),
                            f"duplicate key `{_dotted(path + (key,))}` (also at line "
                            f"{seen[key]}); each key may appear only once",
                        )
                    )
                seen[key] = line
                lines[path + (key,)] = line
                walk(value_node, path + (key,), ancestors)
            for source in merged:  # `<<: *anchor`: explicit keys win over merged ones.
                if isinstance(source, yaml.MappingNode):
                    for key_node, value_node in source.value:
                        if isinstance(key_node, yaml.ScalarNode) and key_node.value not in seen:
                            seen[key_node.value] = key_node.start_mark.line + 1
                            lines[path + (key_node.value,)] = seen[key_node.value]
                            walk(value_node, path + (key_node.value,), ancestors)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[path + (index,)] = item.start_mark.line + 1
                walk(item, path + (index,), ancestors)

    if root is not None:
        walk(root, (), frozenset())
    return lines, duplicates


def _yaml_error_message(name: str, error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return f"{name}: invalid YAML: {error}"
    problem = getattr(error, "problem", None) or "syntax error"
    text = f"{name}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}"
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context:
        where = f" at line {context_mark.line + 1}" if context_mark is not None else ""
        text += f" ({context}{where})"
    return text


# --------------------------------------------------------------------------------------------
# Overrides.


def _override_paths(overrides: Sequence[str]) -> dict[tuple, str]:
    paths = {}
    for text in overrides:
        key, sep, _ = text.partition("=")
        if sep and key.strip():
            paths[tuple(part.strip() for part in key.strip().split("."))] = text
    return paths


def _apply_overrides(raw: dict, overrides: Sequence[str], name: str) -> dict[tuple, str]:
    """Set each ``key.path=value`` into ``raw``; returns key path -> override text."""
    if isinstance(overrides, str):
        overrides = [overrides]
    applied: dict[tuple, str] = {}
    for text in overrides:
        where = f"override `--set {text}`"
        key, sep, value_text = str(text).partition("=")
        key = key.strip()
        if not sep or not key:
            _raise([f"{where}: expected `key.path=value` (e.g. `training.batch_size=32`)"], name)
        parts = [part.strip() for part in key.split(".")]
        if not all(parts):
            _raise(
                [f"{where}: expected a dotted key path, found {key!r} (an empty part)"],
                name,
                key=key,
            )
        try:
            value = yaml.safe_load(value_text)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error)
            _raise(
                [f"{where}: the value {value_text!r} is not valid YAML: {problem}"], name, key=key
            )
        node: Any = raw
        path: list[str | int] = []
        for position, part in enumerate(parts):
            last = position == len(parts) - 1
            if isinstance(node, dict):
                path.append(part)
                if last:
                    node[part] = value
                elif node.get(part) is None:
                    node[part] = {}
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                path.append(int(part))
                if last:
                    node[int(part)] = value
                node = node[int(part)]
            else:
                _raise(
                    [
                        f"{where}: cannot set `{key}`: `{_dotted(tuple(path))}` is "
                        f"{_found(node, with_type=True)}, not a mapping"
                    ],
                    name,
                    key=key,
                )
        applied[tuple(path)] = str(text)
    return applied


# --------------------------------------------------------------------------------------------
# pydantic errors -> messages.

_TYPE_ERRORS_WITHOUT_TYPE = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "multiple_of",
    "finite_number",
    "string_too_short",
    "string_too_long",
    "too_short",
    "too_long",
}


def _translate_errors(
    error: ValidationError, raw: dict, locator: _Locator
) -> list[tuple[tuple, str]]:
    issues = []
    for item in error.errors(include_url=False):
        path, text = _translate(item, raw)
        issues.append((path, f"{locator.where(path)}: {text}"))
    return issues


def _translate(item: dict, raw: dict) -> tuple[tuple, str]:
    kind, ctx = item["type"], item.get("ctx") or {}
    value = item.get("input", _MISSING)
    path, annotation, metadata, section = _resolve_loc(item["loc"])
    dotted = _dotted(path)

    invalid = ctx.get("error")
    if kind == "value_error" and isinstance(invalid, _Invalid):
        path = path + invalid.path
        if invalid.message is not None:
            return path, invalid.message
        return path, f"{_dotted(path)}: {invalid.describe()}"
    if kind == "extra_forbidden" and section is not None:
        return path, _unknown_key_message(path, section)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        path = path + ("source",)
        expected = _data_sources_for(raw)
        if kind == "union_tag_not_found":
            return path, f"{_dotted(path)}: missing required key (expected {expected})"
        return path, f"{_dotted(path)}: expected {expected}, found {ctx.get('tag')!r}"
    if path and path[-1] == "[key]":
        path = path[:-1]
        return path, f"{_dotted(path)}: expected string keys, found the key {_found(value, True)}"
    if not path:
        return path, f"expected a mapping at the top level, found {_found(value, True)}"
    expected = _describe(annotation, metadata) if annotation is not None else None
    if kind == "missing":
        if path == ("data",):
            sources = " or ".join(f"`source: {s}`" for s in TASK_DATA_SOURCES["classification"])
            return path, (
                f"data: missing required key (task 'classification' needs a `data:` section "
                f"with {sources})"
            )
        return path, f"{dotted}: missing required key" + (
            f" (expected {expected})" if expected else ""
        )
    if expected is None:
        return path, f"{dotted}: {item['msg']}"
    with_type = kind not in _TYPE_ERRORS_WITHOUT_TYPE and not (
        kind == "literal_error" and isinstance(value, str)
    )
    return path, f"{dotted}: expected {expected}, found {_found(value, with_type)}"


def _resolve_loc(loc: tuple) -> tuple[tuple, Any, list, type[BaseModel] | None]:
    """Walk a pydantic loc through the schema: (key path, annotation, field metadata, section).

    The discriminated union's tag (``('data', 'tfds', 'name')``) is dropped from the key path.
    ``section`` is the model the last key was looked up in (for unknown keys).
    """
    annotation: Any = Config
    metadata: list = []
    path: list = []
    section = None
    for element in loc:
        base, _ = _strip(annotation)
        variants = _data_variants(base)
        if isinstance(base, type) and issubclass(base, BaseModel):
            section = base
            path.append(element)
            field = base.model_fields.get(element) if isinstance(element, str) else None
            annotation, metadata = (field.annotation, list(field.metadata)) if field else (None, [])
        elif variants and element in variants:
            annotation, metadata = variants[element], []
        elif get_origin(base) is dict:
            path.append(element if element == "[key]" else str(element))
            key_type, value_type = get_args(base)
            annotation = key_type if element == "[key]" else value_type
            metadata = []
        elif get_origin(base) is list:
            path.append(element)
            annotation, metadata = get_args(base)[0], []
        else:
            path.append(element)
            annotation, metadata = None, []
    return tuple(path), annotation, metadata, section


def _strip(annotation: Any) -> tuple[Any, list]:
    """Remove ``Annotated`` (collecting its metadata) and ``Optional``."""
    metadata: list = []
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *extra = get_args(annotation)
            metadata.extend(extra)
            continue
        if _is_union(annotation):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation, metadata


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _data_variants(annotation: Any) -> dict[str, type[BaseModel]]:
    """tag -> model for the ``data`` union (or any union of models with a ``source`` literal)."""
    if not _is_union(annotation):
        return {}
    variants = {}
    for arg in get_args(annotation):
        if not (isinstance(arg, type) and issubclass(arg, BaseModel)):
            return {}
        field = arg.model_fields.get("source")
        if field is None or get_origin(field.annotation) is not Literal:
            return {}
        variants[get_args(field.annotation)[0]] = arg
    return variants


def _describe(annotation: Any, metadata: Sequence = ()) -> str:
    """What a value of ``annotation`` looks like: "an integer > 0", "one of 'relu', 'gelu'"."""
    metadata = list(metadata)
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        metadata.extend(extra)
    if _is_union(annotation):
        args = get_args(annotation)
        members = [a for a in args if a is not type(None)]
        variants = _data_variants(_strip(annotation)[0])
        if variants:
            text = f"a mapping with `source:` one of {_choices(variants)}"
        else:
            text = " or ".join(_describe(a, metadata) for a in members)
        return f"{text} or null" if len(members) < len(args) else text
    if get_origin(annotation) is Literal:
        return f"one of {_choices(get_args(annotation))}"
    bounds = _bounds(metadata)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer" + bounds["range"]
    if annotation is float:
        return "a number" + bounds["range"]
    if annotation is str:
        return "a non-empty string" if bounds["min_length"] else "a string"
    if get_origin(annotation) is list:
        item = _describe(get_args(annotation)[0])
        return "a list of " + re.sub(r"^(an?|one) ", "", item).replace("string", "strings")
    if get_origin(annotation) is dict:
        return f"a mapping from names to {_describe(get_args(annotation)[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        required = [name for name, f in annotation.model_fields.items() if f.is_required()]
        if required:
            return "a mapping with " + " and ".join(f"`{name}`" for name in required)
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(metadata: Sequence) -> dict[str, Any]:
    items: list = []
    for entry in metadata:
        items.extend(entry.metadata if isinstance(entry, FieldInfo) else [entry])
    low = high = None
    min_length = 0
    for entry in items:
        if isinstance(entry, annotated_types.Gt):
            low = ("(", ">", entry.gt)
        elif isinstance(entry, annotated_types.Ge):
            low = ("[", ">=", entry.ge)
        elif isinstance(entry, annotated_types.Lt):
            high = (")", "<", entry.lt)
        elif isinstance(entry, annotated_types.Le):
            high = ("]", "<=", entry.le)
        elif isinstance(entry, annotated_types.MinLen):
            min_length = entry.min_length
    if low and high:
        text = f" in {low[0]}{_number(low[2])}, {_number(high[2])}{high[0]}"
    elif low or high:
        bracket, op, bound = low or high
        text = f" {op} {_number(bound)}"
    else:
        text = ""
    return {"range": text, "min_length": min_length}


def _unknown_key_message(path: tuple, section: type[BaseModel]) -> str:
    key, parent = path[-1], path[:-1]
    valid = list(section.model_fields)
    text = f"unknown key `{_dotted(path)}`"
    variants = _data_variants(Config.model_fields["data"].annotation)
    if section in variants.values():
        this = get_args(section.model_fields["source"].annotation)[0]
        others = [tag for tag, cls in variants.items() if key in cls.model_fields]
        if others:
            return (
                f"{text} for data source {this!r}; `{key}` is a key of data source "
                f"{_choices(others)}"
            )
    close = difflib.get_close_matches(str(key), valid, n=1)
    if close:
        return f"{text}; did you mean `{_dotted(parent + (close[0],))}`?"
    where = f" of `{_dotted(parent)}`" if parent else ""
    return f"{text}; valid keys{where}: {', '.join(valid)}"


def _data_sources_for(raw: dict) -> str:
    task = raw.get("task") if isinstance(raw, dict) else None
    if task in TASK_DATA_SOURCES:
        return f"one of {_choices(TASK_DATA_SOURCES[task])} for task {task!r}"
    return f"one of {_choices([s for sources in TASK_DATA_SOURCES.values() for s in sources])}"


# --------------------------------------------------------------------------------------------
# Small formatting helpers.


def _dotted(path: Sequence) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) and not isinstance(part, bool) else f".{part}"
    return text.lstrip(".")


def _choices(values: Sequence) -> str:
    return ", ".join(repr(v) for v in values)


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _found(value: Any, with_type: bool = False) -> str:
    """A value as shown after "found": ``-3``, ``'abc' (str)``, ``null``, ``a list [1, 2]``."""
    if value is _MISSING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return f"a mapping {_short(value)}"
    if isinstance(value, list):
        return f"a list {_short(value)}"
    text = ("true" if value else "false") if isinstance(value, bool) else _short(value)
    return f"{text} ({_type_name(value)})" if with_type else text


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
