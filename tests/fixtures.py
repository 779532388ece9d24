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
