"""Tests of transformer_tf.config and transformer_tf.plugins: schema, defaults, error messages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from transformer_tf.config import (
    TASK_DATA_SOURCES,
    ClassificationConfig,
    ParallelTextData,
    TranslationConfig,
    check_registered_names,
    config_from_dict,
    load_config,
    model_affecting_differences,
    save_config,
)
from transformer_tf.errors import ConfigError, UserError
from transformer_tf.plugins import PluginError, import_plugins

PLUGIN_PREFIX = "tt_plugin_"


def write(directory: Path, text: str, name: str = "config.yaml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def config_error(path: Path, overrides=()) -> str:
    """The message of the ConfigError that loading ``path`` with ``overrides`` raises."""
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, overrides)
    return str(excinfo.value)


def error_lines(excinfo: pytest.ExceptionInfo) -> list[str]:
    return str(excinfo.value).splitlines()


def line_for(excinfo: pytest.ExceptionInfo, fragment: str) -> str:
    """The one message line that contains ``fragment``."""
    matches = [line for line in error_lines(excinfo) if fragment in line]
    assert len(matches) == 1, (fragment, str(excinfo.value))
    return matches[0]


def parallel_files(directory: Path) -> None:
    for name in ("train.src", "train.tgt", "valid.src", "valid.tgt"):
        (directory / name).write_text("a b c\n", encoding="utf-8")


@pytest.fixture
def fake_registries(monkeypatch):
    """Empty, test-private registries in place of the global ones (restored afterwards)."""
    from transformer_tf import registry

    for slot in registry.SLOTS:
        monkeypatch.setitem(registry.REGISTRIES, slot, registry.Registry(slot))
    return registry.REGISTRIES


@pytest.fixture
def clean_plugin_modules():
    yield
    for name in [n for n in sys.modules if n.startswith(PLUGIN_PREFIX)]:
        del sys.modules[name]


def plugin_source(log: Path, extra: str = "") -> str:
    return textwrap.dedent(
        f"""
        from transformer_tf.registry import REGISTRIES

        with open({str(log)!r}, "a") as log:
            log.write("executed\\n")


        class GatedFeedForward:
            pass


        REGISTRIES["feed_forward"].add("gated", GatedFeedForward)
        {extra}
        """
    )


# --------------------------------------------------------------------------------------------
# Defaults.


def test_translation_defaults(tmp_path):
    config = load_config(write(tmp_path, "task: translation\n"))
    assert config.model.name == "seq2seq_transformer"
    assert config.data.source == "toy_translation"
    assert (config.data.num_train, config.data.tokenizer) == (20000, "word")
    assert config.model.num_encoder_layers == config.model.num_decoder_layers == 2
    assert config.training.epochs == 1 and config.training.steps is None
    assert config.training.clip_norm == 1.0 and config.training.early_stopping is None
    assert config.distribute.strategy == "auto" and config.decoding.beam_size == 4
    assert config.plugins == [] and config.name is None


def test_classification_defaults_and_explicit_values(tmp_path):
    (tmp_path / "reviews").mkdir()
    config = load_config(
        write(
            tmp_path,
            """
            task: classification
            model:
              num_layers: 3
              num_decoder_layers: 1
            data:
              source: directory
              path: reviews
            training:
              steps: 100
            """,
        )
    )
    assert config.model.name == "transformer_classifier"
    assert (config.model.num_encoder_layers, config.model.num_decoder_layers) == (3, 1)
    assert config.data.path == str(tmp_path / "reviews")
    assert (config.data.vocab_size, config.data.ngrams, config.data.lowercase) == (20000, 1, True)
    assert config.training.steps == 100 and config.training.epochs is None


def test_both_epochs_and_steps_are_kept(tmp_path):
    config = config_from_dict({"task": "translation", "training": {"epochs": 3, "steps": 10}})
    assert (config.training.epochs, config.training.steps) == (3, 10)


def test_empty_sections_mean_defaults(tmp_path):
    config = load_config(write(tmp_path, "task: translation\ntraining:\nmodel:\ndata:\n"))
    assert config.training.batch_size == 64 and config.data.source == "toy_translation"


def test_yaml_1_1_exponent_strings_are_numbers_but_other_strings_are_not(tmp_path):
    config = config_from_dict(
        {"task": "translation", "training": {"learning_rate": "5e-4", "epsilon": "1e-8"}}
    )
    assert config.training.learning_rate == 5e-4 and config.training.epsilon == 1e-8
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(
            {"task": "translation", "training": {"batch_size": "32", "jit_compile": 1}}
        )
    assert "training.batch_size: expected an integer > 0 or `auto`, found '32' (str)" in str(
        excinfo.value
    )
    assert "training.jit_compile: expected true or false, found 1 (int)" in str(excinfo.value)


def test_direct_constructor_validates_too():
    config = TranslationConfig(task="translation", model={"d_model": 64, "num_heads": 8})
    assert config.model.name == "seq2seq_transformer" and config.data.source == "toy_translation"
    with pytest.raises(ValueError, match="must be divisible"):
        TranslationConfig(task="translation", model={"d_model": 30})


def test_each_task_has_its_config_class_and_sections():
    translation = config_from_dict({"task": "translation"})
    classification = config_from_dict(
        {"task": "classification", "data": {"source": "tfds"}, "model": {"num_classes": 3}}
    )
    assert type(translation) is TranslationConfig and type(classification) is ClassificationConfig
    assert classification.model.num_classes == 3
    assert TASK_DATA_SOURCES == {
        "translation": ("toy_translation", "parallel_text", "tfds", "none"),
        "classification": ("tfds", "directory"),
        "masked_lm": ("text",),
        "denoising": ("text",),
    }


# --------------------------------------------------------------------------------------------
# Errors: file and YAML.


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert str(excinfo.value) == f"{path}: config file not found (looked for {path})"
    assert excinfo.value.file == str(path)


def test_invalid_yaml_reports_line_and_column(tmp_path):
    path = write(tmp_path, "task: translation\nmodel:\n  d_model: [1, 2\n  num_heads: 4\n")
    message = config_error(path)
    message = message
    assert message.startswith(f"{path}:4:")
    assert "invalid YAML" in message and "line 3" in message


def test_unsafe_yaml_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path, f"task: !!python/object/apply:os.system ['touch {marker}']\n")
    message = config_error(path)
    assert f"{path}:1:" in message and "invalid YAML" in message
    assert not marker.exists()


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- task\n- translation\n")
    message = config_error(path)
    assert message.startswith(f"{path}:1: expected a mapping")
    assert "found a list ['task', 'translation']" in message
    with pytest.raises(ConfigError, match="<config>: expected a mapping at the top level"):
        config_from_dict(["task"])


def test_duplicate_keys_are_errors(tmp_path):
    path = write(tmp_path, "task: translation\nmodel:\n  d_model: 64\n  d_model: 32\n")
    message = config_error(path)
    assert message == (
        f"{path}:4: duplicate key `model.d_model` (also at line 3); each key may appear only once"
    )


# --------------------------------------------------------------------------------------------
# Errors: schema.


def test_out_of_range_message_format(tmp_path):
    path = write(
        tmp_path,
        """
        task: translation
        training:
          learning_rate: 0.001
          batch_size: -3
        """,
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert (
        str(excinfo.value)
        == f"{path}:4: training.batch_size: expected an integer > 0 or `auto`, found -3"
    )
    assert excinfo.value.key == "training.batch_size"
    assert isinstance(excinfo.value, UserError)


def test_out_of_range_intervals(tmp_path):
    path = write(
        tmp_path,
        """
        task: classification
        model:
          dropout: 1.5
          num_classes: 1
        data:
          source: tfds
          ngrams: 4
          validation_fraction: 0
        """,
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert f"{path}:3: model.dropout: expected a number in [0, 1), found 1.5" in error_lines(
        excinfo
    )
    assert f"{path}:4: model.num_classes: expected an integer >= 2, found 1" in error_lines(excinfo)
    assert f"{path}:7: data.ngrams: expected an integer in [1, 3], found 4" in error_lines(excinfo)
    assert (
        f"{path}:8: data.validation_fraction: expected a number in (0, 1), found 0"
        in error_lines(excinfo)
    )


def test_wrong_type(tmp_path):
    path = write(
        tmp_path,
        """
        task: translation
        training:
          batch_size: abc
          epochs: 2.5
          early_stopping: true
        """,
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert line_for(excinfo, "training.batch_size") == (
        f"{path}:3: training.batch_size: expected an integer > 0 or `auto`, found 'abc' (str)"
    )
    assert line_for(excinfo, "training.epochs") == (
        f"{path}:4: training.epochs: expected an integer > 0 or null, found 2.5 (float)"
    )
    assert line_for(excinfo, "training.early_stopping") == (
        f"{path}:5: training.early_stopping: expected a mapping or null, found true (bool)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "task: translation\nmodel: 5\n",
            "{path}:2: model: expected a mapping, found 5 (int)",
            id="section_of_wrong_type",
        ),
        pytest.param(
            "task: translation\nmodel:\n  activation: tanh\n",
            "{path}:3: model.activation: expected one of 'relu', 'gelu', 'swish', found 'tanh'",
            id="bad_literal",
        ),
        pytest.param(
            "name: run\n",
            "{path}: task: missing required key (expected one of 'translation', 'classification', 'masked_lm', 'denoising')",
            id="missing_required_task_has_no_line_but_names_the_file",
        ),
        pytest.param(
            "task: translation\nmodel:\n  d_model: 30\n  num_heads: 4\n",
            "{path}:3: `model.d_model` (30) must be divisible by `model.num_heads` (4)",
            id="d_model_divisible_by_num_heads",
        ),
        pytest.param(
            'task: translation\ndistribute:\n  devices:\n    - "/gpu:0"\n    - ""\n',
            "{path}:5: distribute.devices[1]: expected a non-empty string, found ''",
            id="list_item_errors_point_at_the_item",
        ),
        # The data sources are a union discriminated by the task and `data.source`.
        pytest.param(
            "task: classification\ndata:\n  source: tfd\n",
            "{path}:3: data.source: expected one of 'tfds', 'directory' for task "
            "'classification', found 'tfd'",
            id="unknown_data_source",
        ),
        pytest.param(
            "task: translation\ndata:\n  source: directory\n  path: .\n",
            "{path}:3: data.source: expected one of 'toy_translation', 'parallel_text', 'tfds', "
            "'none' for task 'translation', found 'directory'",
            id="data_source_must_fit_the_task",
        ),
    ],
)
def test_schema_error_message(tmp_path, text, expected):
    """The whole message of a config with one schema error (``{path}``: the config file)."""
    path = write(tmp_path, text)
    assert config_error(path) == expected.format(path=path)


def test_unknown_key_did_you_mean(tmp_path):
    path = write(tmp_path, "task: translation\nmodel:\n  num_heads: 4\n  d_modle: 64\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert str(excinfo.value) == (
        f"{path}:4: unknown key `model.d_modle`; did you mean `model.d_model`?"
    )
    assert excinfo.value.key == "model.d_modle"


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path):
    path = write(tmp_path, "task: translation\ndecoding:\n  nucleus: 0.7\ntrainng: {}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert line_for(excinfo, "decoding.nucleus") == (
        f"{path}:3: unknown key `decoding.nucleus`; valid keys of `decoding`: "
        "beam_size, length_penalty, max_length, sampling_topk, sampling_topp, "
        "sampling_temperature, seed"
    )
    assert line_for(excinfo, "trainng") == (
        f"{path}:4: unknown key `trainng`; did you mean `training`?"
    )


def test_classification_requires_data(tmp_path):
    path = write(tmp_path, "task: classification\n")
    message = config_error(path)
    assert message.startswith(f"{path}: data: missing required key")
    assert "`source: tfds` or `source: directory`" in message


def test_every_error_is_listed_at_once_in_schema_order(tmp_path):
    path = write(
        tmp_path,
        """
        task: translation
        model:
          num_heads: 0
          activation: tanh
        training:
          batch_size: 0
          warmup_steps: -1
        decoding:
          beam_size: 0
        """,
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert error_lines(excinfo) == [
        f"{path}:3: model.num_heads: expected an integer > 0, found 0",
        f"{path}:4: model.activation: expected one of 'relu', 'gelu', 'swish', found 'tanh'",
        f"{path}:6: training.batch_size: expected an integer > 0 or `auto`, found 0",
        f"{path}:7: training.warmup_steps: expected an integer >= 0, found -1",
        f"{path}:9: decoding.beam_size: expected an integer >= 1, found 0",
    ]


# --------------------------------------------------------------------------------------------
# Errors: data sources (discriminated union) and data paths.


def test_missing_data_source(tmp_path):
    # Translation: a data section without `source` means the default source.
    path = write(tmp_path, "task: translation\ndata:\n  num_train: 10\n")
    assert load_config(path).data.num_train == 10
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, ["data.splits={}"])
    assert "unknown key `data.splits` for data source 'toy_translation'; `splits` is a key of " in (
        str(excinfo.value)
    )
    # Classification: `source` is required, reported at the `data:` line.
    path = write(tmp_path, "task: classification\ndata:\n  ngrams: 2\n")
    assert config_error(path) == (
        f"{path}:2: data.source: missing required key (expected one of 'tfds', 'directory' for "
        "task 'classification')"
    )


def test_token_batches_are_refused_on_tpu(tmp_path):
    path = write(
        tmp_path,
        "task: translation\ntraining:\n  batch_type: tokens\ndistribute:\n  strategy: tpu\n",
    )
    message = config_error(path)
    assert message == (
        f"{path}:3: training.batch_type: expected `examples` with `distribute.strategy: tpu` "
        "(static batch shapes), found 'tokens'"
    )
    config = load_config(path, ["distribute.strategy=cpu"])
    assert config.training.batch_type == "tokens"


def test_batch_size_auto_needs_token_batches(tmp_path):
    path = write(tmp_path, "task: translation\ntraining:\n  batch_size: auto\n")
    assert config_error(path) == (
        f"{path}:3: training.batch_size: `auto` searches a token budget, so it needs "
        "training.batch_type: tokens (found `examples`); set training.batch_type: tokens, or "
        "give training.batch_size a number"
    )
    config = load_config(path, ["training.batch_type=tokens"])
    assert config.training.batch_size == "auto"
    assert config.training.effective_batch_size is None
    # Classification counts examples by default: the same rule.
    message = config_error(path, ["task=classification", "data={source: directory, path: .}"])
    assert message.endswith(
        "training.batch_size: `auto` searches a token budget, so it needs "
        "training.batch_type: tokens (found `examples`); set training.batch_type: tokens, or "
        "give training.batch_size a number"
    )


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("-3", "-3"),
        ("0", "0"),
        ("Auto", "'Auto' (str)"),
        ("2.5", "2.5 (float)"),
        ("null", "null"),
        ("true", "true (bool)"),
    ],
)
def test_batch_size_is_a_positive_integer_or_auto(tmp_path, value, found):
    path = write(tmp_path, f"task: translation\ntraining:\n  batch_size: {value}\n")
    assert config_error(path) == (
        f"{path}:3: training.batch_size: expected an integer > 0 or `auto`, found {found}"
    )


def test_effective_batch_size_goes_with_a_number_or_auto_but_not_with_accumulation(tmp_path):
    path = write(
        tmp_path,
        "task: translation\ntraining:\n  batch_type: tokens\n  batch_size: auto\n"
        "  effective_batch_size: 4096\n",
    )
    training = load_config(path).training
    assert (training.batch_size, training.effective_batch_size) == ("auto", 4096)
    assert load_config(path, ["training.batch_size=1500"]).training.batch_size == 1500
    assert config_error(path, ["training.gradient_accumulation=2"]) == (
        f"{path}:5: training.effective_batch_size: the gradient accumulation follows from it, "
        "so it cannot go with "
        "training.gradient_accumulation (2); remove one of the two"
    )
    assert config_error(path, ["training.batch_size=5000"]) == (
        f"{path}:5: training.effective_batch_size (4096) is smaller than training.batch_size "
        "(5000): an update sees at least one batch; raise it, or lower training.batch_size"
    )
    assert config_error(path, ["training.effective_batch_size=0"]) == (
        "override `--set training.effective_batch_size=0`: training.effective_batch_size: "
        "expected an integer > 0 or null, found 0"
    )


def test_errors_inside_a_data_source_do_not_show_the_union_tag(tmp_path):
    path = write(
        tmp_path,
        """
        task: translation
        data:
          source: toy_translation
          num_train: 0
          vocab_size: 100
          tokenizr: word
        """,
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert error_lines(excinfo) == [
        f"{path}:4: data.num_train: expected an integer > 0, found 0",
        f"{path}:5: unknown key `data.vocab_size` for data source 'toy_translation'; "
        "`vocab_size` is a key of data source 'parallel_text', 'tfds', 'directory', 'text'",
        f"{path}:6: unknown key `data.tokenizr`; did you mean `data.tokenizer`?",
    ]


def test_parallel_text_paths_are_resolved_against_the_config_directory(tmp_path, monkeypatch):
    config_dir = tmp_path / "configs"
    parallel_files(tmp_path)
    path = write(
        config_dir,
        """
        task: translation
        data:
          source: parallel_text
          splits:
            train: {source: ../train.src, target: ../train.tgt}
            valid: {source: ../valid.src, target: ../valid.tgt}
        """,
    )
    monkeypatch.chdir(tmp_path / "configs")
    config = load_config(path)
    assert isinstance(config.data, ParallelTextData)
    assert config.data.splits["train"].source == str(tmp_path / "train.src")
    assert config.data.splits["valid"].target == str(tmp_path / "valid.tgt")
    assert config.data.tokenizer == "sentencepiece" and config.data.vocab_size == 8000


def test_relative_data_paths_fall_back_to_the_current_directory(tmp_path, monkeypatch):
    parallel_files(tmp_path)
    path = write(
        tmp_path / "configs",
        """
        task: translation
        data:
          source: parallel_text
          splits: {train: {source: train.src, target: train.tgt}}
        """,
    )
    monkeypatch.chdir(tmp_path)
    assert load_config(path).data.splits["train"].target == str(tmp_path / "train.tgt")


def test_missing_data_file(tmp_path):
    parallel_files(tmp_path)
    path = write(
        tmp_path,
        """
        task: translation
        data:
          source: parallel_text
          splits:
            train:
              source: train.src
              target: missing.tgt
        """,
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    message = str(excinfo.value)
    assert message.startswith(
        f"{path}:7: data.splits.train.target: expected an existing file, found 'missing.tgt'"
    )
    assert str(tmp_path / "missing.tgt") in message
    assert excinfo.value.key == "data.splits.train.target"


def test_train_split_and_split_keys_are_required(tmp_path):
    parallel_files(tmp_path)
    path = write(
        tmp_path,
        """
        task: translation
        data:
          source: parallel_text
          splits:
            valid:
              source: valid.src
        """,
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert line_for(excinfo, "data.splits.valid.target") == (
        f"{path}:5: data.splits.valid.target: missing required key (expected a string or a "
        "list of strings)"
    )
    path.write_text(path.read_text() + "      target: valid.tgt\n")
    assert config_error(path) == (
        f"{path}:4: data.splits.train: missing required key (expected a mapping with `source` "
        "and `target` files; splits found: 'valid')"
    )


def test_missing_data_directory(tmp_path):
    (tmp_path / "a_file").write_text("x")
    path = write(tmp_path, "task: classification\ndata:\n  source: directory\n  path: nowhere\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert str(excinfo.value).startswith(
        f"{path}:4: data.path: expected an existing directory, found 'nowhere' (no such directory:"
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, ["data.path=a_file"])
    assert "data.path: expected an existing directory, found 'a_file' (not a directory" in str(
        excinfo.value
    )


# --------------------------------------------------------------------------------------------
# Overrides.


def test_overrides_are_typed_by_yaml_and_validated_by_the_schema(tmp_path):
    path = write(tmp_path, "task: translation\ntraining:\n  batch_size: 8\n")
    config = load_config(
        path,
        [
            "training.batch_size=32",
            "training.jit_compile=true",
            "training.clip_norm=null",
            "distribute.devices=[/gpu:0, /gpu:1]",
            "training.early_stopping.patience=2",  # Creates the intermediate mapping.
            "name = my run",
        ],
    )
    assert config.training.batch_size == 32 and isinstance(config.training.batch_size, int)
    assert config.training.jit_compile is True and config.training.clip_norm is None
    assert config.distribute.devices == ["/gpu:0", "/gpu:1"]
    assert config.training.early_stopping.patience == 2
    assert config.name == "my run"


@pytest.mark.parametrize(
    ("text", "override", "expected"),
    [
        pytest.param(
            "task: translation\ntraining:\n  batch_size: 8\n",
            "training.batch_size=abc",
            "override `--set training.batch_size=abc`: training.batch_size: expected an integer "
            "> 0 or `auto`, found 'abc' (str)",
            id="bad_value_is_located_at_the_override",
        ),
        pytest.param(
            "task: translation\n",
            "model.d_modle=3",
            "override `--set model.d_modle=3`: unknown key `model.d_modle`; did you mean "
            "`model.d_model`?",
            id="unknown_key_did_you_mean",
        ),
        pytest.param(
            "task: translation\nmodel:\n  d_model: 64\n",
            "model={d_model: 64, num_heads: 0}",
            "override `--set model={d_model: 64, num_heads: 0}`: model.num_heads: expected an "
            "integer > 0, found 0",
            # An override of a whole section owns the errors below it.
            id="whole_section_owns_the_errors_below_it",
        ),
    ],
)
def test_override_errors_are_located_at_the_override(tmp_path, text, override, expected):
    path = write(tmp_path, text)
    assert config_error(path, [override]) == expected


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.batch_size", "expected `key.path=value`"),
        ("=3", "expected `key.path=value`"),
        ("training..batch_size=3", "expected a dotted key path"),
        ("model.d_model.x=1", "cannot set `model.d_model.x`: `model.d_model` is 64 (int)"),
        ("training.batch_size=[1", "is not valid YAML"),
    ],
)
def test_malformed_overrides(tmp_path, override, expected):
    path = write(tmp_path, "task: translation\nmodel:\n  d_model: 64\n")
    message = config_error(path, [override])
    assert message.startswith(f"override `--set {override}`: ")
    assert expected in message


def test_config_from_dict_applies_overrides_without_mutating_its_input():
    raw = {"task": "translation", "training": {"batch_size": 8}}
    config = config_from_dict(raw, overrides=["training.batch_size=16"])
    assert config.training.batch_size == 16 and raw["training"]["batch_size"] == 8
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict({"task": "translation", "model": {"d_model": -1}}, source="run/config")
    assert str(excinfo.value) == "run/config: model.d_model: expected an integer > 0, found -1"


# --------------------------------------------------------------------------------------------
# Round trip.


def test_to_yaml_round_trip(tmp_path):
    parallel_files(tmp_path)
    path = write(
        tmp_path,
        """
        task: translation
        name: demo
        model:
          d_model: 64
          num_heads: 8
          normalize_first: true
        data:
          source: parallel_text
          tokenizer: word
          splits:
            train: {source: train.src, target: train.tgt}
        training:
          learning_rate: 5e-4
          early_stopping: {metric: bleu, mode: max}
        distribute: {strategy: mirrored, devices: ["/gpu:0"]}
        """,
    )
    config = load_config(path)
    text = config.to_yaml()
    dumped = yaml.safe_load(text)
    assert dumped["model"]["name"] == "seq2seq_transformer"
    assert dumped["model"]["num_encoder_layers"] == 2
    assert dumped["data"]["splits"]["train"]["source"] == str(tmp_path / "train.src")
    assert dumped["training"]["learning_rate"] == 5e-4
    assert list(dumped)[:3] == ["task", "name", "plugins"]
    assert config_from_dict(dumped) == config

    saved = tmp_path / "run" / "config.yaml"
    save_config(config, saved)
    assert saved.read_text() == text
    assert load_config(saved) == config


def test_round_trip_of_defaults_for_both_tasks(tmp_path):
    (tmp_path / "texts").mkdir()
    for raw in (
        {"task": "translation"},
        {"task": "classification", "data": {"source": "tfds"}},
        {"task": "classification", "data": {"source": "directory", "path": str(tmp_path)}},
    ):
        config = config_from_dict(raw)
        assert config_from_dict(yaml.safe_load(config.to_yaml())) == config


# --------------------------------------------------------------------------------------------
# Classification-only model keys.


def test_classifier_keys_are_left_out_of_translation_configs():
    translation = config_from_dict({"task": "translation"})
    keys = ("pooling", "num_classes", "token_dropout", "naive_bayes")
    assert not any(hasattr(translation.model, key) for key in keys)
    dumped = yaml.safe_load(translation.to_yaml())["model"]
    assert not set(keys) & set(dumped)
    assert not set(keys) & set(translation.model.model_dump())
    classification = config_from_dict({"task": "classification", "data": {"source": "tfds"}})
    assert [getattr(classification.model, key) for key in keys] == ["mean", 2, 0.0, False]
    dumped = yaml.safe_load(classification.to_yaml())["model"]
    assert [dumped[key] for key in keys] == ["mean", 2, 0.0, False]


def test_classifier_keys_in_a_translation_config_are_errors(tmp_path):
    path = write(
        tmp_path,
        """
        task: translation
        model:
          d_model: 64
          pooling: cls
        """,
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert str(excinfo.value) == (
        f"{path}:4: model.pooling applies to task 'classification' only (this config's task "
        "is 'translation')"
    )
    assert excinfo.value.key == "model.pooling"
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, ["model.pooling=mean", "model.num_classes=3"])
    assert str(excinfo.value) == (
        "override `--set model.num_classes=3`: model.num_classes applies to task "
        "'classification' only (this config's task is 'translation')"
    )


def test_translation_run_configs_of_older_versions_still_load(tmp_path):
    # Older versions wrote the classifier keys, with their defaults, into every saved config.
    old = yaml.safe_load(config_from_dict({"task": "translation"}).to_yaml())
    old["model"].update(pooling="mean", num_classes=2)
    path = write(tmp_path, yaml.safe_dump(old, sort_keys=False))
    config = load_config(path)
    assert config == config_from_dict({"task": "translation"})
    assert not hasattr(config.model, "pooling") and not hasattr(config.model, "num_classes")
    assert model_affecting_differences(config, config_from_dict({"task": "translation"})) == []


def test_block_fields_follow_the_block_argument_definitions():
    from transformer_tf.block_args import BLOCK_ARG_SPECS

    model = config_from_dict({"task": "translation"}).model
    assert {spec.name: spec.default for spec in BLOCK_ARG_SPECS} == {
        "d_model": 128,
        "num_heads": 4,
        "d_ff": 512,
        "dropout": 0.1,
        "attention_dropout": 0.0,
        "ffn_dropout": 0.0,
        "activation": "relu",
        "normalize_first": False,
        "layer_norm_epsilon": 1e-6,
        "attention": "multi_head",
        "feed_forward": "position_wise",
        "normalization": "layer_norm",
        "positional_encoding": "sinusoidal",
        "maximum_relative_position": None,
    }
    for spec in BLOCK_ARG_SPECS:
        assert getattr(model, spec.name) == spec.default
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(
            {
                "task": "translation",
                "model": {
                    "num_heads": 0,
                    "ffn_dropout": -0.5,
                    "layer_norm_epsilon": 0,
                    "normalize_first": "yes",
                    "attention": 3,
                },
            }
        )
    assert error_lines(excinfo) == [
        "<config>: model.num_heads: expected an integer > 0, found 0",
        "<config>: model.ffn_dropout: expected a number in [0, 1), found -0.5",
        "<config>: model.normalize_first: expected true or false, found 'yes' (str)",
        "<config>: model.layer_norm_epsilon: expected a number > 0, found 0",
        "<config>: model.attention: expected a string, found 3 (int)",
    ]


# --------------------------------------------------------------------------------------------
# model_affecting_differences.


def test_model_affecting_differences(tmp_path):
    base = {"task": "translation", "training": {"batch_size": 8}}
    old = config_from_dict(base)
    assert model_affecting_differences(old, config_from_dict(base)) == []
    harmless = config_from_dict(
        base,
        overrides=["training.batch_size=64", "training.steps=5", "decoding.beam_size=1", "name=x"],
    )
    assert model_affecting_differences(old, harmless) == []
    changed = config_from_dict(
        base,
        overrides=["model.d_model=256", "model.dropout=0.2", "data.seed=7", "data.max_length=8"],
    )
    assert model_affecting_differences(old, changed) == [
        "model.d_model",
        "model.dropout",
        "data.seed",
    ]
    other_task = config_from_dict({"task": "classification", "data": {"source": "tfds"}})
    differences = model_affecting_differences(old, other_task)
    assert differences[:2] == ["task", "model.name"]
    assert {"data.source", "data.vocab_size", "data.num_train"} <= set(differences)


# --------------------------------------------------------------------------------------------
# Registered names and plugins.


def test_registered_names_are_checked_against_the_registry(tmp_path, fake_registries):
    fake_registries["feed_forward"].add("position_wise", object)
    fake_registries["feed_forward"].add("gated", type("Gated", (), {}))
    path = write(tmp_path, "task: translation\nmodel:\n  d_model: 64\n  feed_forward: gatd\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}:4: model.feed_forward: unknown feed_forward `gatd`")
    assert "gated, position_wise" in message and "Did you mean `gated`?" in message
    assert excinfo.value.key == "model.feed_forward"
    # The default model.name is checked too, at its nearest parent (`model:`, line 2).
    fake_registries["model"].add("other_model", object)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, ["model.feed_forward=gated"])
    assert str(excinfo.value).startswith(
        f"{path}:2: model.name: unknown model `seq2seq_transformer`"
    )


def test_empty_registry_slots_are_skipped(tmp_path, fake_registries):
    config = config_from_dict({"task": "translation", "model": {"attention": "anything"}})
    check_registered_names(config)  # Every slot empty: nothing to check against.
    fake_registries["attention"].add("multi_head", object)
    with pytest.raises(ConfigError) as excinfo:
        check_registered_names(config)
    assert str(excinfo.value).startswith("<config>: model.attention: unknown attention `anything`")


def test_defaults_are_registered_by_the_package():
    import transformer_tf.layers  # noqa: F401
    import transformer_tf.models  # noqa: F401

    for raw in ({"task": "translation"}, {"task": "classification", "data": {"source": "tfds"}}):
        check_registered_names(config_from_dict(raw))


def test_plugin_file_relative_to_the_config_registers_a_name(
    tmp_path, monkeypatch, fake_registries, clean_plugin_modules
):
    stem = f"{PLUGIN_PREFIX}{uuid.uuid4().hex[:8]}"
    log = tmp_path / "log.txt"
    plugin = write(tmp_path / "configs" / "plugins", plugin_source(log), name=f"{stem}.py")
    path = write(
        tmp_path / "configs",
        f"""
        task: translation
        plugins: [plugins/{stem}.py]
        model:
          feed_forward: gated
        """,
    )
    monkeypatch.chdir(tmp_path)  # Not the config's directory.
    config = load_config(path)
    assert config.plugins == [str(plugin)]
    assert fake_registries["feed_forward"].get("gated").__module__ == stem
    assert sys.modules[stem].__file__ == str(plugin)
    # Loading again (and loading the saved, resolved config) does not re-execute the plugin.
    assert load_config(path) == config
    assert config_from_dict(yaml.safe_load(config.to_yaml())) == config
    assert log.read_text().count("executed") == 1


def test_plugin_by_dotted_module_name(tmp_path, monkeypatch, fake_registries, clean_plugin_modules):
    package = f"{PLUGIN_PREFIX}pkg_{uuid.uuid4().hex[:8]}"
    write(tmp_path / "src" / package, "", name="__init__.py")
    write(tmp_path / "src" / package, plugin_source(tmp_path / "log.txt"), name="layers.py")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    config = config_from_dict(
        {
            "task": "translation",
            "plugins": [f"{package}.layers"],
            "model": {"feed_forward": "gated"},
        }
    )
    assert config.plugins == [f"{package}.layers"]
    assert fake_registries["feed_forward"].get("gated").__module__ == f"{package}.layers"


def test_missing_plugins(tmp_path, fake_registries):
    path = write(tmp_path, "task: translation\nplugins:\n  - nowhere/my_layers.py\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    message = str(excinfo.value)
    assert message.startswith(
        f"{path}:3: plugins[0]: plugin file 'nowhere/my_layers.py' not found (looked for "
    )
    assert str(tmp_path / "nowhere" / "my_layers.py") in message
    assert excinfo.value.key == "plugins[0]"
    module = f"{PLUGIN_PREFIX}absent_{uuid.uuid4().hex[:8]}"
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, [f"plugins=[{module}]"])
    assert str(excinfo.value).startswith(
        f"override `--set plugins=[{module}]`: plugins[0]: plugin module `{module}` not found"
    )


def test_plugin_that_raises(tmp_path, fake_registries, clean_plugin_modules):
    stem = f"{PLUGIN_PREFIX}{uuid.uuid4().hex[:8]}"
    write(tmp_path, "import json\nraise RuntimeError('boom: no GPU')\n", name=f"{stem}.py")
    with pytest.raises(UserError) as excinfo:
        import_plugins([f"{stem}.py"], tmp_path)
    assert isinstance(excinfo.value, PluginError) and excinfo.value.key == "plugins[0]"
    assert f"plugins[0]: plugin '{stem}.py'" in str(excinfo.value)
    assert "failed to import: RuntimeError: boom: no GPU" in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, RuntimeError)
    assert stem not in sys.modules
    path = write(tmp_path, f"task: translation\nplugins: [{stem}.py]\n")
    with pytest.raises(UserError, match=f"{path}:2: plugins\\[0\\]: .*boom: no GPU"):
        load_config(path)


def test_plugin_file_cannot_shadow_another_module(tmp_path):
    import json  # noqa: F401  (make sure `json` is loaded)

    write(tmp_path, "x = 1\n", name="json.py")
    with pytest.raises(PluginError, match="a different module `json` is already loaded"):
        import_plugins(["json.py"], tmp_path)


def test_import_plugins_resolves_entries(tmp_path, fake_registries, clean_plugin_modules):
    stem = f"{PLUGIN_PREFIX}{uuid.uuid4().hex[:8]}"
    plugin = write(tmp_path, plugin_source(tmp_path / "log.txt"), name=f"{stem}.py")
    assert import_plugins([str(plugin), "textwrap"], None) == [str(plugin), "textwrap"]
    assert import_plugins([f"{stem}.py"], tmp_path) == [str(plugin)]
    assert (tmp_path / "log.txt").read_text().count("executed") == 1
    with pytest.raises(PluginError, match=r"plugins\[0\]: 'not a module!' is neither"):
        import_plugins(["not a module!"], None)


def test_config_module_does_not_import_tensorflow():
    # The real package __init__ may import the layers; load config.py with a bare package.
    package_dir = Path(__file__).resolve().parents[1] / "transformer_tf"
    code = textwrap.dedent(
        f"""
        import sys, types
        package = types.ModuleType("transformer_tf")
        package.__path__ = [{str(package_dir)!r}]
        sys.modules["transformer_tf"] = package
        from transformer_tf.config import config_from_dict
        config = config_from_dict({{"task": "translation"}})
        assert config.model.name == "seq2seq_transformer"
        heavy = [name for name in ("tensorflow", "keras") if name in sys.modules]
        assert not heavy, heavy
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------------------------
# Relative and rotary positions.


def test_relative_positions_fill_in_the_maximum_distance():
    config = config_from_dict({"task": "translation", "model": {"positional_encoding": "relative"}})
    assert config.model.maximum_relative_position == 20
    config = config_from_dict(
        {
            "task": "translation",
            "model": {"positional_encoding": "relative", "maximum_relative_position": 8},
        }
    )
    assert config.model.maximum_relative_position == 8
    assert "maximum_relative_position: 8" in config.to_yaml()
    config = config_from_dict({"task": "translation", "model": {"positional_encoding": "rotary"}})
    assert config.model.maximum_relative_position is None


ONLY_WITH_RELATIVE = (
    "<config>: `model.maximum_relative_position` is only used with "
    "`model.positional_encoding: relative` (found `sinusoidal`); remove it or set the positional "
    "encoding"
)


@pytest.mark.parametrize(
    "model,line",
    [
        (
            {"positional_encoding": "relative", "maximum_relative_position": 0},
            "<config>: model.maximum_relative_position: expected an integer >= 1 or null, found 0",
        ),
        (
            {"positional_encoding": "sinusoidal", "maximum_relative_position": 4},
            ONLY_WITH_RELATIVE,
        ),
        (
            {"maximum_relative_position": 4},
            ONLY_WITH_RELATIVE,
        ),
        (
            {"positional_encoding": "rotary", "d_model": 12, "num_heads": 4},
            "<config>: `model.positional_encoding: rotary` rotates pairs of channels: the head size "
            "`model.d_model / model.num_heads` (12 / 4 = 3) must be even",
        ),
    ],
)
def test_bad_position_settings_name_the_key(model, line):
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict({"task": "translation", "model": model})
    assert error_lines(excinfo) == [line]
