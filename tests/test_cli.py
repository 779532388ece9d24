"""The command line: exit codes, messages without tracebacks, train -> evaluate, kill -9 resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import classification_config, make_imdb_folder, write_config
from transformer_tf.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "transformer_tf.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def imdb(tmp_path_factory):
    return make_imdb_folder(tmp_path_factory.mktemp("imdb"))


def test_bad_config_exits_2_with_file_line_and_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: classification\nmodel:\n  d_modle: 64\n", encoding="utf-8")
    result = run_cli("train", path, "--run-dir", tmp_path / "run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}:3: unknown key `model.d_modle`; did you mean `model.d_model`?" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a bad config


@pytest.mark.parametrize(
    "text,overrides,expected",
    [
        (
            "task: translation\nmodel:\n  d_model: 30\n",
            [],
            "`model.d_model` (30) must be divisible by `model.num_heads` (4)",
        ),
        (
            "task: translation\ntraining:\n  batch_size: -3\n",
            [],
            "training.batch_size: expected an integer > 0 or `auto`, found -3",
        ),
        (
            "task: translation\ntraining:\n  batch_size: auto\n",
            [],
            "c.yaml:3: training.batch_size: `auto` searches a token budget, so it needs "
            "training.batch_type: tokens (found `examples`); set training.batch_type: tokens, or "
            "give training.batch_size a number",
        ),
        (
            "task: translation\ntraining:\n  effective_batch_size: 256\n  gradient_accumulation: 2\n",
            [],
            "c.yaml:3: training.effective_batch_size: the gradient accumulation follows from it",
        ),
        ("task: translation\nmodel: [1, 2\n", [], "invalid YAML"),
        ("- just\n- a list\n", [], "mapping"),
        (
            "task: translation\n",
            ["training.batch_size=abc"],
            "override `--set training.batch_size=abc`",
        ),
        ("task: translation\nmodel:\n  dropout: 1.5\n", [], "model.dropout"),
        (
            "task: translation\ndata:\n  source: parallel_text\n  splits:\n    train: {source: nope.de, target: nope.en}\n",
            [],
            "data.splits.train.source",
        ),
        (
            "task: translation\nmodel:\n  feed_forward: my_layers.Gated\n",
            [],
            "registered feed_forward names: position_wise",
        ),
    ],
)
def test_config_errors_in_process(tmp_path, capsys, text, overrides, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    args = ["train", str(path), "--run-dir", str(tmp_path / "run")]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 2
    assert expected in capsys.readouterr().err


def test_missing_config_and_run_dir_are_user_errors(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_train_evaluate_with_overrides_and_json(imdb, tmp_path, capsys):
    config = write_config(tmp_path / "clf.yaml", classification_config(imdb, steps=100))
    run_dir = tmp_path / "run"
    code = main(
        ["train", str(config), "--run-dir", str(run_dir), "--no-progress",
         "--set", "training.steps=20", "--set", "training.eval_every=null"]
    )  # fmt: skip
    assert code == 0
    assert "completed at step 20" in capsys.readouterr().out
    out_json = tmp_path / "scores.json"
    assert main(["evaluate", str(run_dir), "--split", "test", "--output-json", str(out_json)]) == 0
    table = capsys.readouterr().out
    scores = json.loads(out_json.read_text())
    assert scores["split"] == "test" and scores["step"] == 20
    # The same numbers computed here from the checkpoint's predictions, by hand.
    accuracy, loss = _accuracy_and_loss_by_hand(run_dir, "test")
    assert scores["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert scores["loss"] == pytest.approx(loss, rel=1e-5)
    assert f"accuracy    {scores['accuracy']:.4f}" in table
    # The saved config records the override, so the run directory alone reproduces the run.
    assert "steps: 20" in (run_dir / "config.yaml").read_text()
    # The task says which commands its runs support: translate is refused, naming the run.
    assert main(["translate", str(run_dir), "a review"]) == 2
    assert (
        f"{run_dir} is a classification run; translate is not a command for classification "
        "runs (they support: train, evaluate, export)"
    ) in capsys.readouterr().err
    # Resuming the finished run with a larger budget continues from step 20.
    assert (
        main(
            [
                "train",
                str(config),
                "--run-dir",
                str(run_dir),
                "--no-progress",
                "--set",
                "training.steps=30",
            ]
        )
        == 0
    )
    assert "completed at step 30" in capsys.readouterr().out


def _accuracy_and_loss_by_hand(run_dir, split):
    """Accuracy and mean unsmoothed cross-entropy of a run's latest checkpoint on ``split``,
    from the model's logits with NumPy (not through the evaluator)."""
    import numpy as np

    from transformer_tf.assembly import load_run

    run = load_run(run_dir)
    correct, total, loss_sum = 0, 0, 0.0
    for inputs, labels in run.task.dataset(split, training=False):
        logits = run.model(inputs, training=False).numpy().astype("float64")
        labels = labels.numpy()
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        loss_sum -= log_probs[np.arange(len(labels)), labels].sum()
        correct += int((logits.argmax(-1) == labels).sum())
        total += len(labels)
    return correct / total, loss_sum / total


def test_kill_9_loses_only_steps_since_the_last_checkpoint(imdb, tmp_path, capsys):
    config = classification_config(
        imdb, steps=60, checkpoint_every=10, eval_every=None, log_every=10
    )
    path = write_config(tmp_path / "clf.yaml", config)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "transformer_tf.cli", "train", str(path), "--run-dir", str(killed_dir), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    state = killed_dir / "checkpoints" / "checkpoint"
    deadline = time.time() + 240
    while time.time() < deadline and not (state.exists() and "ckpt-20" in state.read_text()):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert state.exists(), "no checkpoint before the deadline"

    # The kill is what needs a process of its own; the resume and the uninterrupted run to
    # compare with go through the same command in this one.
    capsys.readouterr()
    assert main(["train", str(path), "--run-dir", str(killed_dir), "--no-progress"]) == 0
    assert "completed at step 60" in capsys.readouterr().out
    assert main(["train", str(path), "--run-dir", str(tmp_path / "clean"), "--no-progress"]) == 0

    def final_loss(run_dir):
        entries = [
            json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()
        ]
        return [e["loss"] for e in entries if e["step"] == 60][-1]

    assert final_loss(killed_dir) == pytest.approx(final_loss(tmp_path / "clean"), rel=1e-5)
