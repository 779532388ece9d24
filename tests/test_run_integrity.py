"""Run-directory integrity through the CLI: one trainer at a time, damaged checkpoints, failed
writes (injected: tests may run as root, which ignores permission bits) and preemption."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures import classification_config, write_config
from transformer_tf.assembly import load_run
from transformer_tf.cli import main
from transformer_tf.config import config_from_dict
from transformer_tf.run import RunDir
from transformer_tf.training.trainer import build_trainer, train

ROOT = Path(__file__).resolve().parents[1]
DATA = ".data-00000-of-00001"


@pytest.fixture(scope="module")
def imdb(shared_imdb):
    return shared_imdb


@pytest.fixture(scope="module")
def trained(classification_run):
    """A finished 30-step run of ``_config(imdb, keep_checkpoints=3)`` keeping checkpoints 10,
    20 and 30 (tests/conftest.py, shared with other files: copy it before damaging it)."""
    return classification_run


def _config(imdb, **training):
    return config_from_dict(classification_config(imdb, **training))


def _copy(run_dir, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _weights(model):
    return [w.numpy() for w in model.weights]


def _assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


# -- the lock -----------------------------------------------------------------------------------


def test_a_second_trainer_is_refused_while_readers_keep_working(imdb, trained, tmp_path, capsys):
    run_dir = _copy(trained, tmp_path)
    config = write_config(tmp_path / "clf.yaml", classification_config(imdb, keep_checkpoints=3))
    # A trainer holds the directory from build_trainer until train() returns.
    trainer = build_trainer(_config(imdb, steps=40, keep_checkpoints=3), run_dir)
    before = sorted(p.name for p in run_dir.iterdir())
    args = ["train", str(config), "--run-dir", str(run_dir), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"run directory {run_dir} is in use by process {os.getpid()} on host " in err
    assert socket.gethostname() in err and "(transformer-tf train)" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in run_dir.iterdir()) == before  # the refused one wrote nothing
    # Readers take no lock.
    out_json = tmp_path / "scores.json"
    assert main(["evaluate", str(run_dir), "--output-json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["step"] == 30
    assert trainer.train().step == 40
    # Released when train() returns: the next trainer may start (and finds nothing to do).
    assert main([*args, "--set", "training.steps=40"]) == 0
    assert "already complete at step 40" in capsys.readouterr().out


def test_two_starts_on_an_empty_directory_give_one_clear_refusal(imdb, tmp_path, capsys):
    run_dir = tmp_path / "fresh"
    config = write_config(tmp_path / "clf.yaml", classification_config(imdb))
    # The first start has taken the lock and not yet written anything else.
    with RunDir(run_dir).lock():
        assert main(["train", str(config), "--run-dir", str(run_dir), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "is in use by process" in err and "not a transformer_tf run" not in err
        assert [p.name for p in run_dir.iterdir()] == [".lock"]
    # Released: the lock file alone does not make the directory "not a run".
    assert RunDir(run_dir).check_compatible(_config(imdb)) is False


def test_a_lock_left_by_a_dead_process_is_taken_over(imdb, tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # What a trainer killed with SIGKILL leaves: its record, but no flock (the kernel dropped it).
    record = {"pid": 999999, "host": "elsewhere", "since": "2024-01-01T00:00:00", "command": "x"}
    (run_dir / ".lock").write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="transformer_tf.run"):
        result = train(_config(imdb, steps=10, eval_every=None), run_dir, show_progress=False)
    assert result.step == 10
    assert "taking over the lock left by process 999999 on host elsewhere" in caplog.text
    assert (run_dir / ".lock").read_text() == ""  # released


# -- damaged checkpoints ------------------------------------------------------------------------


def test_resume_skips_a_truncated_latest_checkpoint_and_matches(imdb, trained, tmp_path, caplog):
    # The uninterrupted run: `trained` is _config(imdb, steps=30) (keeping more checkpoints).
    full = load_run(trained)
    assert full.step == 30
    legs = tmp_path / "legs"
    train(_config(imdb, steps=20), legs, show_progress=False)
    _truncate(legs / "checkpoints" / f"ckpt-20{DATA}")
    with caplog.at_level(logging.WARNING, logger="transformer_tf.run"):
        trainer = build_trainer(_config(imdb, steps=30), legs, show_progress=False)
    assert f"checkpoint ckpt-20 is damaged: {legs}/checkpoints/ckpt-20{DATA} cannot be read" in (
        caplog.text
    )
    assert "using ckpt-10, the newest intact one" in caplog.text
    assert int(trainer.state.step.numpy()) == 10
    trainer.train()
    _assert_same_weights(_weights(trainer.model), _weights(full.model))
    assert RunDir(legs).find_checkpoint("20")  # rewritten whole by the resumed run


def test_evaluate_falls_back_from_a_damaged_latest_and_refuses_it_by_name(
    trained, tmp_path, capsys, caplog
):
    run_dir = _copy(trained, tmp_path)
    damaged = run_dir / "checkpoints" / f"ckpt-30{DATA}"
    _truncate(damaged)
    out_json = tmp_path / "scores.json"
    with caplog.at_level(logging.WARNING, logger="transformer_tf.run"):
        assert main(["evaluate", str(run_dir), "--output-json", str(out_json)]) == 0
    assert f"checkpoint ckpt-30 is damaged: {damaged} cannot be read" in caplog.text
    assert json.loads(out_json.read_text())["step"] == 20
    expected = load_run(run_dir, checkpoint="20")
    _assert_same_weights(_weights(load_run(run_dir).model), _weights(expected.model))
    capsys.readouterr()

    assert main(["evaluate", str(run_dir), "--checkpoint", "30"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint ckpt-30 cannot be used: {damaged} cannot be read" in err
    assert "Intact checkpoints: 10, 20" in err and "Traceback" not in err
    # A corrupted index is named as such.
    index = run_dir / "checkpoints" / "ckpt-20.index"
    index.write_bytes(b"x" * index.stat().st_size)
    assert main(["export", str(run_dir), str(tmp_path / "export"), "--checkpoint", "20"]) == 2
    err = capsys.readouterr().err
    assert f"{index} cannot be read (" in err and "Intact checkpoints: 10" in err
    assert load_run(run_dir).step == 10


def test_a_damaged_best_checkpoint_exits_2(trained, tmp_path, capsys):
    run_dir = _copy(trained, tmp_path)
    (best,) = (run_dir / "checkpoints" / "best").glob(f"best-*{DATA}")
    best.write_bytes(b"")
    assert main(["evaluate", str(run_dir), "--checkpoint", "best"]) == 2
    err = capsys.readouterr().err
    assert f"the best checkpoint cannot be used: {best} cannot be read" in err


# -- failed writes ------------------------------------------------------------------------------


def test_a_full_disk_at_a_checkpoint_exits_1_and_keeps_the_last_one(
    imdb, tmp_path, capsys, monkeypatch
):
    config = write_config(tmp_path / "clf.yaml", classification_config(imdb, eval_every=None))
    run_dir = tmp_path / "run"
    real_save = tf.train.CheckpointManager.save
    calls = []

    def save(manager, checkpoint_number=None, **kwargs):
        if Path(manager.directory).name != "checkpoints":  # the best checkpoint's manager
            return real_save(manager, checkpoint_number=checkpoint_number, **kwargs)
        calls.append(checkpoint_number)
        if checkpoint_number == 30:
            # What TensorFlow leaves when the disk fills mid-save: its temporary shard.
            partial = Path(manager.directory) / "ckpt-30_temp" / "part-00000-of-00001"
            partial.parent.mkdir()
            partial.write_bytes(b"half")
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
        return real_save(manager, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    args = ["train", str(config), "--run-dir", str(run_dir), "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"error: cannot write checkpoint ckpt-30 to {run_dir}/checkpoints: No space left on "
        f"device. The last complete checkpoint, step 20 ({run_dir}/checkpoints/ckpt-20), is "
        f"intact. Free space or fix permissions, then resume with: transformer-tf train "
        f"{config} --run-dir {run_dir}"
    ]
    assert calls == [10, 20, 30]
    state = tf.train.get_checkpoint_state(str(run_dir / "checkpoints"))
    assert state.model_checkpoint_path.endswith("ckpt-20")
    assert load_run(run_dir).step == 20
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if "30" in p.name) == []
    assert not (run_dir / "model.keras").exists()
    # With space again, the printed command resumes and completes.
    monkeypatch.setattr(tf.train.CheckpointManager, "save", real_save)
    assert main(args) == 0
    assert "completed at step 30" in capsys.readouterr().out


def test_a_failed_log_write_and_model_save_name_their_file(imdb, tmp_path, capsys, monkeypatch):
    import transformer_tf.run as run_module

    config = write_config(tmp_path / "clf.yaml", classification_config(imdb, eval_every=None))
    run_dir = tmp_path / "run"
    args = ["train", str(config), "--run-dir", str(run_dir), "--no-progress"]

    def full_log(path, *a, **k):
        if (
            Path(path).name == "train_log.jsonl"
            and (run_dir / "checkpoints/ckpt-10.index").exists()
        ):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return open(path, *a, **k)

    monkeypatch.setattr(run_module, "open", full_log, raising=False)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: cannot write a log record to {run_dir}/train_log.jsonl: No space left on "
        f"device. The last complete checkpoint, step 10 ({run_dir}/checkpoints/ckpt-10), is intact"
    )
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.undo()

    def read_only(model, path, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(keras.Model, "save", read_only)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: cannot write the final model to {run_dir}/model.keras: Read-only file system. "
        f"The last complete checkpoint, step 30"
    )
    assert not list(run_dir.glob("*.keras")) and load_run(run_dir).step == 30
    # With -v the traceback comes too, then the same line.
    assert main(["-v", *args]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "cannot write the final model" in err.splitlines()[-1]


def test_a_failed_export_leaves_nothing(trained, tmp_path, capsys, monkeypatch):
    def no_space(*a, **k):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", no_space)
    export_dir = tmp_path / "exports" / "model"
    assert main(["export", str(trained), str(export_dir)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot write the SavedModel to {export_dir}: No space left on device\n"
    assert list((tmp_path / "exports").iterdir()) == []


# -- preemption ---------------------------------------------------------------------------------


def test_sigterm_checkpoints_the_step_and_the_rerun_matches(imdb, tmp_path, capsys):
    steps = 300
    raw = classification_config(
        imdb, steps=steps, checkpoint_every=100, eval_every=None, log_every=10
    )
    config = write_config(tmp_path / "clf.yaml", raw)
    run_dir = tmp_path / "preempted"
    args = ["train", str(config), "--run-dir", str(run_dir), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "transformer_tf.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log_file = run_dir / "train_log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (log_file.exists() and log_file.read_text()):
        time.sleep(0.05)
    try:
        # A second trainer meanwhile is refused, naming the first.
        assert main(args) == 2
        assert f"is in use by process {process.pid} on host" in capsys.readouterr().err
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=240)
    assert process.returncode == 143, err
    (line,) = [line for line in err.splitlines() if line.startswith("stopped by SIGTERM")]
    stopped = int(line.split("at step ")[1].split(":")[0])
    assert 10 <= stopped < steps, line  # stopped mid-run, between periodic checkpoints
    assert line.endswith(
        f"checkpoint written ({run_dir}/checkpoints/ckpt-{stopped}); rerun the same command to "
        "resume"
    )
    assert RunDir(run_dir).latest_checkpoint().endswith(f"ckpt-{stopped}")
    assert not (run_dir / "model.keras").exists()

    assert main(args) == 0
    assert f"completed at step {steps}" in capsys.readouterr().out
    train(config_from_dict(raw), tmp_path / "clean", show_progress=False)
    _assert_same_weights(
        _weights(load_run(run_dir).model), _weights(load_run(tmp_path / "clean").model)
    )
    # No step lost or repeated: each logged step appears once.
    logged = [json.loads(line)["step"] for line in log_file.read_text().splitlines()]
    assert logged == list(range(10, steps + 1, 10))
