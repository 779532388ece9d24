"""Small generated data and configs shared by the end-to-end tests."""

from __future__ import annotations

import random
from pathlib import Path

import yaml

POSITIVE = ["great", "wonderful", "superb", "loved", "excellent", "amazing"]
NEGATIVE = ["awful", "terrible", "boring", "hated", "worst", "dull"]
FILLER = ["the", "movie", "was", "and", "a", "plot", "actors", "film", "it", "this", "story"]


def make_imdb_folder(root: Path, per_class: int = 60, seed: int = 0) -> Path:
    """An aclImdb-layout folder whose sentiment is carried by a few marker words."""
    rng = random.Random(seed)
    for split in ("train", "test"):
        for label, words in (("pos", POSITIVE), ("neg", NEGATIVE)):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                tokens = rng.choices(FILLER, k=rng.randint(5, 20)) + rng.choices(words, k=3)
                rng.shuffle(tokens)
                (folder / f"{i}_7.txt").write_text(" ".join(tokens) + ". <br /><br />Fine.")
    return root


def classification_config(data_path: Path, **training) -> dict:
    return {
        "task": "classification",
        "model": {"num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 32, "dropout": 0.0},
        "data": {
            "source": "directory",
            "path": str(data_path),
            "max_length": 48,
            "vocab_size": 100,
        },
        "training": {
            "batch_size": 16,
            "steps": 30,
            "learning_rate": 0.005,
            "warmup_steps": 5,
            "checkpoint_every": 10,
            "eval_every": 10,
            "log_every": 5,
            "seed": 7,
            **training,
        },
        "distribute": {"strategy": "cpu"},
    }


def translation_config(**sections) -> dict:
    config = {
        "task": "translation",
        "model": {"num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 64, "dropout": 0.0},
        "data": {
            "source": "toy_translation",
            "num_train": 400,
            "num_validation": 40,
            "num_test": 40,
            # The width these tiny-data assertions were written for (on 400 pairs, 2-token
            # buckets make many part-filled batches).
            "bucket_width": 8,
        },
        "training": {
            "batch_size": 32,
            "steps": 20,
            "learning_rate": 0.003,
            "warmup_steps": 5,
            "checkpoint_every": 10,
            "eval_every": 10,
            "log_every": 5,
            "seed": 3,
            # Validation scores the loss only: decoding costs each run a beam search's tracing
            # and its translations. The tests of validation decoding ask for it
            # (``training={"validation": {...}}`` replaces this).
            "validation": {"decode": False},
        },
        "decoding": {"beam_size": 2, "max_length": 40},
        "distribute": {"strategy": "cpu"},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def train_through_cli(root: Path, config: dict, name: str = "run") -> Path:
    """Write ``config`` to ``root/<name>.yaml``, train it with ``transformer-tf train`` (in this
    process) into ``root/<name>`` and return that run directory."""
    from transformer_tf.cli import main

    path = write_config(root / f"{name}.yaml", config)
    assert main(["train", str(path), "--run-dir", str(root / name), "--no-progress"]) == 0
    return root / name


def assert_evaluation_scores(scores: dict, run_dir, split: str, hypotheses: list[str]) -> None:
    """``evaluate``'s scores of a translation run, computed again by another road: the
    teacher-forced loss and token accuracy from the checkpoint's logits with NumPy, and exact
    match, BLEU and chrF of ``hypotheses`` (the same decoding, from ``translate``) with
    sacreBLEU directly."""
    import numpy as np
    import pytest
    import sacrebleu

    from transformer_tf.assembly import load_run

    run = load_run(run_dir)
    loss_sum, correct, tokens = 0.0, 0, 0
    for inputs, labels in run.task.dataset(split, training=False):
        logits = run.model(inputs, training=False).numpy().astype("float64")
        labels = labels.numpy()
        mask = labels != 0
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        picked = np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
        loss_sum -= picked[mask].sum()
        correct += int((logits.argmax(-1) == labels)[mask].sum())
        tokens += int(mask.sum())
    # abs: a model that has learned its task has a loss near 0 (2e-4), whose float32 sums are
    # off by a few 1e-9 from float64's.
    assert scores["loss"] == pytest.approx(loss_sum / tokens, rel=1e-5, abs=1e-7)
    assert scores["token_accuracy"] == pytest.approx(correct / tokens, abs=1e-9)
    references = [target for _, target in run.task.raw_splits[split]]
    assert len(hypotheses) == len(references)
    exact = sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(references)
    assert scores["exact_match"] == pytest.approx(exact, abs=1e-9)
    bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert scores["bleu"] == pytest.approx(bleu, abs=1e-9)
    chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
    assert scores["chrf"] == pytest.approx(chrf, abs=1e-9)


def random_decoder(seed: int, eos_bias: float, vocab: int = 24, **kwargs):
    """A random tiny ``Seq2SeqTransformer`` (2 layers, d_model 32, untied output) for the search
    tests, built, with the EOS logit's bias set to ``eos_bias``: positive ends outputs at varied
    lengths, ``-1e4`` never ends them."""
    import keras

    from transformer_tf.data.special_tokens import EOS_ID
    from transformer_tf.models import Seq2SeqTransformer

    keras.utils.set_random_seed(seed)
    options = dict(num_layers=2, d_model=32, num_heads=4, d_ff=64, dropout=0.0)
    model = Seq2SeqTransformer(vocab, vocab, tie_embeddings=False, **{**options, **kwargs})
    model.build()
    bias = model.output_projection.bias.numpy()
    bias[EOS_ID] = eos_bias
    model.output_projection.bias.assign(bias)
    return model


def random_sources(seed: int, vocab: int, batch: int = 6, length: int = 7, full_row: bool = False):
    """Random ``(batch, length)`` int32 sources of tokens >= 4, right-padded to random lengths
    (1 .. length); ``full_row``: the first row unpadded, so the batch is ``length`` long."""
    import numpy as np

    from transformer_tf.data.special_tokens import PAD_ID

    rng = np.random.default_rng(seed)
    source = rng.integers(4, vocab, size=(batch, length)).astype("int32")
    for row in range(batch):
        source[row, rng.integers(1, length + 1) :] = PAD_ID
    if full_row:
        source[0, :] = rng.integers(4, vocab, size=length)
    return source


def script_result(script: str, *args: str, prefix: str, timeout: int = 600):
    """Run ``script`` (Python source) in a fresh process with this checkout importable, and
    return the JSON it printed on the line starting with ``prefix`` (and a space). For what
    needs a TensorFlow of its own (virtual devices, several replicas)."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"{prefix} "))
    return json.loads(line[len(prefix) + 1 :])
