"""tf.distribute for real on CPUs: 2 worker processes (MultiWorkerMirroredStrategy over local
ports), trained through the CLI, preempted, killed and restarted: one chain on one run.

A file of its own (tests/training/test_distributed.py has the mirrored replicas): `make test`
gives each file to one pytest worker, and these two are the suite's longest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from tests.fixtures import (
    translation_config,
    write_config,
)
from transformer_tf.run import RunDir, step_of

ROOT = Path(__file__).resolve().parents[2]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# A worker is `transformer-tf -v train CONFIG --run-dir RUN_DIR --no-progress`, and then prints a
# checksum of its final weights and a hash of its SentencePiece model, which the test compares
# across the two processes; the non-chief's build_tokenizers raises, so it can only have read
# the chief's vocabulary.
WORKER_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import numpy as np
    from transformer_tf import cli
    from transformer_tf.tasks import translation
    from transformer_tf.training.trainer import Trainer

    if json.loads(os.environ["TF_CONFIG"])["task"]["index"] != 0:
        def refuse(*args, **kwargs):
            raise AssertionError("a non-chief worker built a vocabulary")
        translation.tokenizers.build_tokenizers = refuse
    train = Trainer.train

    def train_and_report(self):
        result = train(self)
        total = sum(np.abs(w.numpy().astype("float64")).sum() for w in self.model.weights)
        print(f"final weights checksum: {total:.12e}", file=sys.stderr)
        proto = self.task.source_tokenizer.model_proto
        print(f"vocabulary sha256: {hashlib.sha256(proto).hexdigest()}", file=sys.stderr)
        return result

    Trainer.train = train_and_report
    config, run_dir = sys.argv[1:]
    sys.exit(cli.main(["-v", "train", config, "--run-dir", run_dir, "--no-progress"]))
    """
)


def _start_workers(config, run_dir, scratch):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TF_CONFIG": json.dumps(tf_config),
            "TMPDIR": str(scratch),
        }
        command = [sys.executable, "-c", WORKER_SCRIPT, str(config), str(run_dir)]
        processes.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )  # fmt: skip
    return processes


def _multi_worker_config(tmp_path, steps, checkpoint_every):
    """Two workers on sharded parallel text (each reads one shard per side) with a SentencePiece
    vocabulary, which the chief builds."""
    data = tmp_path / "data"
    if not data.is_dir():
        data.mkdir()
        rng = np.random.default_rng(0)
        words = ["the", "a", "cat", "dog", "sees", "eats", "big", "small", "red", "blue",
                 "house", "tree", "runs"]  # fmt: skip
        lines = [" ".join(rng.choice(words, rng.integers(2, 8))) for _ in range(300)]
        for k in range(2):
            (data / f"src.{k}").write_text("\n".join(lines[k::2]) + "\n", encoding="utf-8")
            (data / f"tgt.{k}").write_text("\n".join(lines[k::2]).upper() + "\n", encoding="utf-8")
    raw = translation_config(
        training={"steps": steps, "eval_every": None, "checkpoint_every": checkpoint_every}
    )
    raw["data"] = {
        "source": "parallel_text",
        "splits": {"train": {"source": [str(data / "src.0"), str(data / "src.1")],
                             "target": [str(data / "tgt.0"), str(data / "tgt.1")]}},
        "tokenizer": "sentencepiece",
        "vocab_size": 64,
        "max_length": 16,
    }  # fmt: skip
    raw["distribute"] = {"strategy": "multi_worker", "communication": "ring"}
    return write_config(tmp_path / "mw.yaml", raw)


def _launch(tmp_path, run_dir, scratch, steps, checkpoint_every):
    """Both workers started on a ``steps``-step run in ``run_dir`` (a new one, or one to
    resume): the two processes, chief first."""
    config = _multi_worker_config(tmp_path, steps=steps, checkpoint_every=checkpoint_every)
    return _start_workers(config, run_dir, scratch)


def _wait_for(condition, what):
    deadline = time.time() + 240
    while time.time() < deadline and not condition():
        time.sleep(0.1)
    assert condition(), f"{what} before the deadline"


def _latest_step(run_dir):
    """The step of the newest checkpoint the run's state file names (0: none yet)."""
    latest = RunDir(run_dir).latest_checkpoint()
    return 0 if latest is None else step_of(latest)


def _resumed(run_dir, step):
    return f"resumed from {run_dir}/checkpoints/ckpt-{step} at step {step}"


def test_two_workers_share_a_vocabulary_stop_together_and_resume_to_identical_weights(tmp_path):
    """One run of two workers on sharded parallel text with the chief's SentencePiece
    vocabulary, stopped twice, as a cluster's would be (one chain: each start of the two
    workers costs two TensorFlow start-ups and traces):

    1. SIGTERM to the non-chief: both workers checkpoint the same step and exit 143;
    2. both restarted resume from that step; then the non-chief is killed (-9): the chief
       stops with a clear error (exit 1), bounded in time, never hanging;
    3. both restarted resume from the chief's last periodic checkpoint and finish with
       identical weights and the vocabulary the chief wrote; only the chief's checkpoints are
       in the run directory, and the other worker cleaned up after itself.
    """
    run_dir = tmp_path / "run"
    scratch, last_scratch = tmp_path / "scratch", tmp_path / "last_scratch"
    scratch.mkdir()
    last_scratch.mkdir()
    log = run_dir / "train_log.jsonl"
    state = run_dir / "checkpoints" / "checkpoint"

    # 1. checkpoint_every 1000: any checkpoint so far is the preemption's, not a periodic one.
    chief, worker = _launch(tmp_path, run_dir, scratch, steps=400, checkpoint_every=1000)
    try:
        _wait_for(lambda: log.exists() and log.read_text().strip(), "no training step logged")
        worker.send_signal(signal.SIGTERM)  # the non-chief: the chief must hear of it
        outputs = [p.communicate(timeout=120)[1] for p in (chief, worker)]
    finally:
        chief.kill()
        worker.kill()
    assert chief.returncode == worker.returncode == 143, outputs
    assert "stopped by SIGTERM to another worker at step" in outputs[0]
    assert "stopped by SIGTERM at step" in outputs[1]
    steps = {int(re.search(r"at step (\d+)", err).group(1)) for err in outputs}
    assert len(steps) == 1  # both stopped at the same step
    (stopped,) = steps
    assert f"ckpt-{stopped}" in state.read_text() and 0 < stopped < 400
    assert "Traceback" not in outputs[0] + outputs[1]

    # 2. Both restarted continue from that step, losing none; now checkpointing every 5 steps.
    chief, worker = _launch(tmp_path, run_dir, scratch, steps=400, checkpoint_every=5)
    try:
        _wait_for(
            lambda: _latest_step(run_dir) > stopped,
            "no periodic checkpoint after the resume",
        )
        worker.kill()
        started = time.time()
        _, err = chief.communicate(timeout=120)  # bounded: never hangs
        stopped_after = time.time() - started
        _, worker_err = worker.communicate(timeout=120)
    finally:
        chief.kill()
        worker.kill()
    assert _resumed(run_dir, stopped) in err and _resumed(run_dir, stopped) in worker_err
    assert chief.returncode == 1
    assert "another worker stopped" in err and "Traceback" not in err
    assert stopped_after < 120
    saved = _latest_step(run_dir)
    assert saved > stopped

    # 3. Restarting both workers continues from the chief's last checkpoint. (A scratch
    # directory of its own: the worker killed in 2 could not clean up after itself.)
    processes = _launch(tmp_path, run_dir, last_scratch, steps=saved + 5, checkpoint_every=5)
    errors = []
    try:
        for process in processes:
            _, err = process.communicate(timeout=300)
            errors.append(err)
            assert process.returncode == 0, err[-3000:]
            assert _resumed(run_dir, saved) in err
    finally:
        for process in processes:
            process.kill()
    assert f"ckpt-{saved + 5}" in state.read_text()
    checksums = [re.search(r"final weights checksum: (\S+)", err).group(1) for err in errors]
    assert checksums[0] == checksums[1]
    hashes = [re.search(r"vocabulary sha256: (\w+)", err).group(1) for err in errors]
    written = hashlib.sha256((run_dir / "vocab" / "shared.model").read_bytes()).hexdigest()
    assert hashes == [written, written]
    # One set of checkpoints, the chief's: the preemption's, then every 5 steps.
    kept = {step_of(p.stem) for p in (run_dir / "checkpoints").glob("*.index")}
    assert saved + 5 in kept and all(s == stopped or s % 5 == 0 for s in kept), kept
    assert not [p for p in last_scratch.iterdir() if p.name.startswith("transformer_tf_worker")]
    assert (run_dir / "config.yaml").is_file()
