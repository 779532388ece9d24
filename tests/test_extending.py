"""User layers as plugins: examples/custom_layer end to end, reload in a fresh process, errors.

The example (a GEGLU feed-forward and RMSNorm in ``my_layers.py``) is copied to a temporary
directory once per module and trained there through the CLI, in process; the registrations it
makes are undone at the end of the module so that other test files in the same worker see only
the built-in names. Reloads run in fresh subprocesses, where nothing is imported beforehand.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from tests.fixtures import assert_evaluation_scores
from transformer_tf.cli import main
from transformer_tf.errors import UnknownNameError
from transformer_tf.registry import REGISTRIES, Registry, get_registry

# `translate` and the tests load the trained example run once per set of arguments
# (tests/shared_runs.py): the same model object, whose traced decoders later commands and
# translations reuse. The run is written only by its fixture, before any load.
pytestmark = pytest.mark.usefixtures("load_each_run_once")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_layer"
D_MODEL, D_FF = 32, 64  # examples/custom_layer/config.yaml
TEXTS = [
    "the tree fetches the eighty one songs without this door",
    "my sixty two green tables will fetch you through the cold tree",
]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """A private copy of examples/custom_layer; the plugin's registrations are undone after.

    The registries are replaced by copies for the module, so that the names the plugin adds do
    not reach other test files run later by the same worker (they check the built-in names).
    """
    keras_objects = dict(keras.saving.get_custom_objects())
    modules = set(sys.modules)
    with pytest.MonkeyPatch.context() as patch:
        for slot, registry in list(REGISTRIES.items()):
            copy = Registry(slot)
            for name in registry.names():
                copy.add(name, registry.get(name))
            patch.setitem(REGISTRIES, slot, copy)
        directory = tmp_path_factory.mktemp("extending") / "custom_layer"
        shutil.copytree(EXAMPLE, directory, ignore=shutil.ignore_patterns("__pycache__"))
        yield directory
    keras.saving.get_custom_objects().clear()
    keras.saving.get_custom_objects().update(keras_objects)
    for name in ("my_layers", "clashing_layers"):
        if name not in modules:
            sys.modules.pop(name, None)


def _cli(*args) -> tuple[int, str, str]:
    """``transformer-tf ARGS`` in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run(example):
    """Train the example for 10 steps, then resume it to 20 with a larger budget."""
    run_dir = example.parent / "run"
    config = example / "config.yaml"
    first = _cli(
        "train", config, "--run-dir", run_dir, "--no-progress", "--set", "training.steps=10"
    )
    second = _cli("train", config, "--run-dir", run_dir, "--no-progress")  # steps: 20
    return {"dir": run_dir, "first": first, "second": second}


def _fresh_python(script: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``script`` in a new interpreter that has imported nothing (not the plugin)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=180,
    )


# --------------------------------------------------------------------------------------------
# Training, resuming, evaluating, translating.


def test_train_resume_and_run_directory_records_the_plugin(run, example):
    code, out, err = run["first"]
    assert code == 0, err
    assert "completed at step 10" in out
    code, out, err = run["second"]
    assert code == 0, err
    assert "completed at step 20" in out  # resumed from step 10, not restarted

    def logged_steps(name):
        return [json.loads(line)["step"] for line in (run["dir"] / name).read_text().splitlines()]

    # Appended logs: a restart from step 0 would have logged steps 5 and 10 twice.
    assert logged_steps("train_log.jsonl") == [5, 10, 15, 20]
    assert logged_steps("validation_log.jsonl") == [10, 20]
    # The resolved config records the plugin by absolute path: a reload from any directory
    # finds it. The relative entry of the example was resolved against the config's directory.
    saved = yaml.safe_load((run["dir"] / "config.yaml").read_text())
    assert saved["plugins"] == [str((example / "my_layers.py").resolve())]
    assert saved["model"]["feed_forward"] == "my_layers.GatedFeedForward"
    assert saved["model"]["normalization"] == "my_layers.RMSNorm"


def test_the_custom_layers_are_really_used(run):
    from transformer_tf.assembly import load_run

    model = load_run(run["dir"]).model
    my_layers = sys.modules["my_layers"]
    blocks = [*model.encoder.blocks, *model.decoder.blocks]
    glu_params = 2 * (D_MODEL * D_FF + D_FF) + D_FF * D_MODEL + D_MODEL
    for block in blocks:
        assert isinstance(block.feed_forward_layer, my_layers.GatedFeedForward)
        assert block.feed_forward_layer.activation == "gelu"  # model.activation reaches the gate
        assert block.feed_forward_layer.count_params() == glu_params
    # Every normalization position of a pre-norm model: 2 per encoder block, 3 per decoder
    # block, and the final norm of each stack.
    norms = [model.encoder.final_norm, model.decoder.final_norm]
    for block in blocks:
        norms += [block.self_attention_norm, block.feed_forward_norm]
    norms += [block.cross_attention_norm for block in model.decoder.blocks]
    assert len(norms) == 7
    for norm in norms:
        assert isinstance(norm, my_layers.RMSNorm)
        assert norm.epsilon == 1e-6  # model.layer_norm_epsilon
        assert norm.count_params() == D_MODEL  # one scale per feature, no bias


def translations_of(run_dir, texts: list[str]) -> list[str]:
    """The Python API's translations (the config's decoding), for the CLI's to equal."""
    from transformer_tf.assembly import load_run
    from transformer_tf.inference.options import DecodingOptions
    from transformer_tf.inference.translate import translate

    run = load_run(run_dir)
    options = DecodingOptions.from_config(run.config)
    return translate(
        run.model, run.task.source_tokenizer, run.task.target_tokenizer, texts, options
    ).texts


def test_evaluate_and_translate(run, tmp_path):
    scores_file = tmp_path / "scores.json"
    code, out, err = _cli("evaluate", run["dir"], "--split", "test", "--output-json", scores_file)
    assert code == 0, err
    scores = json.loads(scores_file.read_text())
    assert scores["step"] == 20
    # The scores by another road (the plugin model's logits with NumPy, sacreBLEU on the
    # translations `translate` writes for the test sources).
    from transformer_tf.assembly import load_run

    sources = [source for source, _ in load_run(run["dir"]).task.raw_splits["test"]]
    source_file, translations = tmp_path / "test.src", tmp_path / "out.txt"
    source_file.write_text("\n".join(sources) + "\n", encoding="utf-8")
    code, out, err = _cli("translate", run["dir"], "--input", source_file, "--output", translations)
    assert code == 0, err
    assert_evaluation_scores(scores, run["dir"], "test", translations.read_text().splitlines())
    code, out, err = _cli("translate", run["dir"], *TEXTS)
    assert code == 0, err
    assert out.splitlines() == translations_of(run["dir"], TEXTS)


# --------------------------------------------------------------------------------------------
# Reloading model.keras.

_RELOAD_SCRIPT = """
    import sys
    import numpy as np
    from transformer_tf.saving import load_keras_model

    assert "my_layers" not in sys.modules
    model = load_keras_model(sys.argv[1])
    inputs = dict(np.load(sys.argv[2]))
    np.save(sys.argv[3], np.asarray(model(inputs, training=False)))
    print(type(model.encoder.blocks[0].feed_forward_layer).__module__)
"""


def _fixed_inputs() -> dict[str, np.ndarray]:
    # Ids >= 4 are words (0-3 are PAD, UNK, BOS, EOS); trailing zeros are padding.
    return {
        "source": np.array([[5, 9, 14, 7, 3, 0], [11, 6, 3, 0, 0, 0]], "int32"),
        "target": np.array([[2, 8, 12, 5, 0], [2, 10, 4, 0, 0]], "int32"),
    }


def test_model_keras_reloads_in_a_fresh_process_with_the_same_outputs(run, tmp_path):
    from transformer_tf.assembly import load_run
    from transformer_tf.saving import load_keras_model

    inputs = _fixed_inputs()
    np.savez(tmp_path / "inputs.npz", **inputs)
    # The reference: the final training checkpoint, restored in this process.
    expected = np.asarray(load_run(run["dir"]).model(inputs, training=False))
    result = _fresh_python(
        _RELOAD_SCRIPT, run["dir"], tmp_path / "inputs.npz", tmp_path / "logits.npy", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["my_layers"]  # the plugin's class, imported by the loader
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-5, atol=1e-5)
    # In process (plugin already imported) and by file name, too.
    reloaded = load_keras_model(run["dir"] / "model.keras")
    np.testing.assert_allclose(reloaded(inputs, training=False), expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Name errors through the CLI.


def test_unknown_feed_forward_name_exits_2_listing_the_registered_names(example, tmp_path):
    code, _, err = _cli(
        "train", example / "config.yaml", "--run-dir", tmp_path / "run",
        "--set", "model.feed_forward=my_layers.GatedFFN",
    )  # fmt: skip
    assert code == 2
    assert "Traceback" not in err
    assert (
        "model.feed_forward: unknown feed_forward `my_layers.GatedFFN`; registered feed_forward "
        "names: my_layers.GatedFeedForward, position_wise. Did you mean "
        "`my_layers.GatedFeedForward`?"
    ) in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(UnknownNameError, match="registered normalization names: layer_norm, my"):
        get_registry("normalization").get("my_layers.RMSnorm")


def test_two_classes_under_one_name_is_an_error(example, tmp_path):
    (example / "clashing_layers.py").write_text(
        textwrap.dedent(
            """
            import keras
            import transformer_tf

            @transformer_tf.register("feed_forward", name="my_layers.GatedFeedForward")
            class GatedFeedForward(keras.layers.Layer):
                pass
            """
        )
    )
    config = yaml.safe_load((example / "config.yaml").read_text())
    config["plugins"] = ["my_layers.py", "clashing_layers.py"]
    path = example / "clash.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, err = _cli("train", path, "--run-dir", tmp_path / "run")
    assert code == 2
    assert "Traceback" not in err
    assert "plugins[1]" in err
    assert (
        "cannot register clashing_layers.GatedFeedForward as feed_forward "
        "`my_layers.GatedFeedForward`: that name is already taken by my_layers.GatedFeedForward"
    ) in err
    # The clash left the first registration in place.
    assert get_registry("feed_forward").get("my_layers.GatedFeedForward").__module__ == "my_layers"


# --------------------------------------------------------------------------------------------
# Without the plugin: the export serves, the reloads say what is missing.

# One fresh interpreter for both checks without the plugin (its file moved away): first the
# SavedModel serves with TensorFlow alone, then transformer_tf's loaders say what is missing.
_WITHOUT_PLUGIN_SCRIPT = """
    import json
    import sys
    import tensorflow as tf

    export_dir, texts, moved_to, *paths = sys.argv[1:]
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    outputs = serve(text=tf.constant(json.loads(texts), tf.string))["translation"].numpy()
    served = {
        "translations": [text.decode("utf-8") for text in outputs.tolist()],
        "imported": sorted({"transformer_tf", "my_layers"} & set(sys.modules)),
    }

    from transformer_tf.errors import UserError
    from transformer_tf.saving import load_keras_model

    messages = {}
    for path in paths:
        try:
            load_keras_model(path)
            messages[path] = None
        except UserError as error:
            messages[path] = str(error)
    # The recorded file is gone, but a module of the same name is importable: it is used.
    sys.path.insert(0, moved_to)
    model = load_keras_model(paths[0])
    messages["fallback"] = type(model.encoder.blocks[0].feed_forward_layer).__module__
    print(json.dumps({"served": served, "messages": messages}))
"""


@pytest.fixture(scope="module")
def without_the_plugin(run, example, tmp_path_factory):
    """The run's SavedModel export (``transformer-tf export``), and a folder ``alone`` with
    only its model.keras and a Keras model that serializes the plugin class itself (so Keras,
    not the registry, is the one that cannot find it); then, with the plugin file moved away,
    :data:`_WITHOUT_PLUGIN_SCRIPT`'s report on them in a fresh interpreter."""
    tmp_path = tmp_path_factory.mktemp("without_the_plugin")
    code, _, err = _cli("export", run["dir"], tmp_path / "export")
    assert code == 0, err
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run["dir"] / "model.keras", alone / "model.keras")
    my_layers = sys.modules["my_layers"]
    direct = keras.Sequential([keras.Input((3, D_MODEL)), my_layers.GatedFeedForward(D_MODEL, 8)])
    direct.save(alone / "direct.keras")

    plugin = example / "my_layers.py"
    moved = example.parent / "elsewhere" / "my_layers.py"
    moved.parent.mkdir()
    plugin.rename(moved)
    try:
        result = _fresh_python(
            _WITHOUT_PLUGIN_SCRIPT,
            tmp_path / "export",
            json.dumps(TEXTS),
            moved.parent,
            run["dir"],
            alone / "model.keras",
            alone / "direct.keras",
            cwd=tmp_path,
        )
    finally:
        moved.rename(plugin)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return {"alone": alone, "plugin": plugin, **json.loads(result.stdout.strip().splitlines()[-1])}


def test_reload_without_the_plugin_names_the_missing_module(run, without_the_plugin):
    messages, alone, plugin = (without_the_plugin[k] for k in ("messages", "alone", "plugin"))
    gone = messages[str(run["dir"])]
    assert "needs the plugin module `my_layers`" in gone
    assert f"recorded in {run['dir'] / 'config.yaml'} as plugins[0] = '{plugin}'" in gone
    assert "not found" in gone

    unregistered = messages[str(alone / "model.keras")]
    assert "feed_forward `my_layers.GatedFeedForward`" in unregistered
    assert "normalization `my_layers.RMSNorm`" in unregistered
    assert "`my_layers`" in unregistered and "No config.yaml" in unregistered

    unlocated = messages[str(alone / "direct.keras")]
    assert "could not locate class `GatedFeedForward`" in unlocated
    assert "registered as `my_layers>GatedFeedForward`" in unlocated
    assert "`import my_layers`" in unlocated

    assert messages["fallback"] == "my_layers"


def test_export_serves_without_the_plugin(run, without_the_plugin):
    from transformer_tf.assembly import load_run
    from transformer_tf.inference.options import DecodingOptions
    from transformer_tf.inference.translate import translate

    loaded = load_run(run["dir"])
    config = loaded.config
    options = DecodingOptions(
        max_input_length=config.data.max_length,
        max_output_length=config.decoding.max_length,
        beam_size=config.decoding.beam_size,
        length_penalty=config.decoding.length_penalty,
    )
    expected = translate(
        loaded.model, loaded.task.source_tokenizer, loaded.task.target_tokenizer, TEXTS, options
    ).texts
    # The SavedModel is a graph: it serves with TensorFlow alone, the plugin file gone.
    served = without_the_plugin["served"]
    assert served["imported"] == []
    assert served["translations"] == expected
