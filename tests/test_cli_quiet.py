"""The command is quiet and quick: no TensorFlow for --help and config errors, no C++ start-up
lines unless -v. Every check runs the command in a fresh interpreter, with TF_CPP_MIN_LOG_LEVEL
unset (the Makefile exports it), so that nothing was imported or silenced beforehand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: TensorFlow's native start-up lines on stderr (oneDNN, CUDA probes, absl, CPU features).
STARTUP_LINES = (
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "All log messages before absl::InitializeLog() is called",
    "failed call to cuInit",
    "This TensorFlow binary is optimized",
)


def _env() -> dict[str, str]:
    # As a user's shell has it: TensorFlow's log level unset and oneDNN on (tests/conftest.py
    # turns it off), so that its start-up line is there to be silenced.
    unset = ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _python(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=timeout,
    )


def _imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines: ``import time: self | cumulative | name``."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime_stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def _heavy(modules) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in ("tensorflow", "keras"))


def _startup_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(p in line for p in STARTUP_LINES)]


def test_help_of_the_command_and_of_a_subcommand_import_no_tensorflow():
    for args in (["--help"], ["train", "--help"], ["evaluate", "--help"]):
        result = _python("-X", "importtime", "-m", "transformer_tf.cli", *args)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith("usage: transformer-tf")
        modules = _imported_modules(result.stderr)
        # The import log is read right (the -m module itself runs, it is not imported).
        assert {"transformer_tf", "argparse"} <= modules
        assert _heavy(modules) == []
        assert _startup_lines(result.stderr) == []


def test_console_script_defers_the_builtins_and_loads_them_on_first_use():
    # The console script imports transformer_tf.cli with sys.argv[0] = .../bin/transformer-tf.
    code = textwrap.dedent(
        """
        import json, sys
        sys.argv = ["/somewhere/bin/transformer-tf", "train", "--help"]
        from transformer_tf.cli import main
        try:
            main()
        except SystemExit as stop:
            code = stop.code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        import transformer_tf
        register = transformer_tf.register  # PEP 562: loads the built-ins
        from transformer_tf.registry import REGISTRIES
        print(json.dumps({
            "code": code,
            "heavy_after_help": heavy,
            "register_is_the_registry_one": register is sys.modules["transformer_tf.registry"].register,
            "attention": REGISTRIES["attention"].names(),
            "models": sorted(REGISTRIES["model"].names()),
            "layers_module": transformer_tf.layers.__name__,
        }))
        """
    )
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {
        "code": 0,
        "heavy_after_help": [],
        "register_is_the_registry_one": True,
        "attention": ["multi_head"],
        "models": ["seq2seq_transformer", "transformer_classifier", "transformer_masked_lm"],
        "layers_module": "transformer_tf.layers",
    }


def test_a_library_import_still_registers_every_builtin():
    code = (
        "import json, sys, transformer_tf\n"
        "from transformer_tf.registry import REGISTRIES\n"
        "print(json.dumps([sorted(REGISTRIES['model'].names()), 'keras' in sys.modules]))\n"
    )
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == [
        ["seq2seq_transformer", "transformer_classifier", "transformer_masked_lm"],
        True,
    ]


def test_a_config_error_exits_2_without_importing_tensorflow(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: translation\ntraining:\n  batch_size: -3\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    result = _python(
        "-X", "importtime", "-m", "transformer_tf.cli", "train", path, "--run-dir", run_dir
    )
    assert result.returncode == 2
    assert f"error: {path}:3: training.batch_size: expected an integer > 0 or `auto`, found -3" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    modules = _imported_modules(result.stderr)
    assert "transformer_tf.config" in modules  # The config was read and validated.
    assert _heavy(modules) == []
    assert not run_dir.exists()


def test_an_unknown_registered_name_is_reported_after_the_builtins_load(tmp_path):
    # The plugin writes to stderr both ways and imports TensorFlow: its own lines survive the
    # filtering of stderr, in order, and TensorFlow's start-up lines do not.
    (tmp_path / "chatty_plugin.py").write_text(
        "import os, sys\n"
        "print('plugin: on sys.stderr', file=sys.stderr)\n"
        "os.write(2, b'plugin: on fd 2\\n')\n"
        "import tensorflow\n",
        encoding="utf-8",
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        "task: translation\nplugins: [chatty_plugin.py]\nmodel:\n  attention: foo\n",
        encoding="utf-8",
    )
    result = _python("-m", "transformer_tf.cli", "train", path, "--run-dir", tmp_path / "run")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines() == [
        "plugin: on sys.stderr",
        "plugin: on fd 2",
        f"error: {path}:4: model.attention: unknown attention `foo`; registered attention "
        "names: multi_head.",
    ]


def test_train_is_quiet_and_evaluate_with_v_shows_tensorflow_lines(tmp_path):
    run_dir = tmp_path / "run"
    train = _python(
        "-m", "transformer_tf.cli", "train", "configs/tiny.yaml", "--run-dir", run_dir,
        "--no-progress", "--set", "training.steps=2", "--set", "training.eval_every=null",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    assert "completed at step 2" in train.stdout
    assert _startup_lines(train.stderr) == []
    assert train.stderr == ""

    # Greedy and short: what is checked is the output around the scores, not the decoding.
    evaluate = _python(
        "-m", "transformer_tf.cli", "-v", "evaluate", run_dir,
        "--beam-size", "1", "--set", "decoding.max_length=5",
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert json.loads((run_dir / "eval_validation.json").read_text())["step"] == 2
    # -v hides nothing: the lines the quiet run dropped are there.
    assert _startup_lines(evaluate.stderr)
    assert "All log messages before absl::InitializeLog() is called" in evaluate.stderr
