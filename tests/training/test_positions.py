"""Positions applied by self-attention (``relative``, ``rotary``) train toy tasks to the exact
match of the sinusoidal model.

Neither puts positions into cross-attention: the decoder finds a source word by what the
encoder stored in it. Two tasks show what that means:

- the copy task of test_mixed_precision.py (6 words, repeated): alignment by position only.
  Sinusoidal positions reach 100% in 200 steps on one layer; relative ones need two layers and
  500 steps (their value embeddings let the encoder learn where a word stands); rotary ones turn
  queries and keys only, store no position in the encoder's outputs, and reach 0.78 after 1,000
  steps (measured; docs/cli.md, *Positions*);
- the marker task: the words followed by ``x``, sorted. It needs each word's right neighbour (a
  model without positions cannot tell which words the markers follow) and no alignment: both
  reach 100% in 600 steps on two layers; the same model with sinusoidal positions measured
  0.275 (0.625 at learning rate 0.003, 0.5 on one layer): it never reached 100%.
"""

from __future__ import annotations

import random

import pytest

from tests.training.test_mixed_precision import _config, copy_task  # noqa: F401 (a fixture)
from transformer_tf.training.trainer import build_trainer

MARKER = "x"


@pytest.fixture(scope="module")
def marker_task(tmp_path_factory):
    """600 training and 40 validation sentences: 2-6 words of 8, some followed by ``x``; the
    target is the sorted set of the words an ``x`` follows."""
    root = tmp_path_factory.mktemp("marker")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(8)]
    files = {}
    for split, count in (("train", 600), ("validation", 40)):
        sources, targets = [], []
        for _ in range(count):
            sentence = rng.choices(words, k=rng.randint(2, 6))
            marked = set(rng.sample(range(len(sentence)), k=rng.randint(1, len(sentence))))
            sources.append(
                " ".join(f"{w} {MARKER}" if i in marked else w for i, w in enumerate(sentence))
            )
            targets.append(" ".join(sorted({sentence[i] for i in marked})))
        files[split] = {}
        for side, lines in (("source", sources), ("target", targets)):
            path = root / f"{split}.{side}"
            path.write_text("\n".join(lines) + "\n")
            files[split][side] = str(path)
    return files


def _train(files, tmp_path, steps, **model):
    trainer = build_trainer(_config(files, "none", False, steps=steps, **model), tmp_path / "run")
    assert len(trainer.model.encoder.blocks) == len(trainer.model.decoder.blocks) == 2
    mode = model["positional_encoding"]
    assert trainer.model.encoder.blocks[0].self_attention.position_mode == mode
    return trainer.train().validation[-1]["exact_match"]


def test_relative_positions_learn_the_copy_task_as_sinusoidal_ones_do(copy_task, tmp_path):  # noqa: F811
    exact_match = _train(
        copy_task,
        tmp_path,
        steps=500,
        num_layers=2,
        positional_encoding="relative",
        maximum_relative_position=4,
    )
    assert exact_match == 1.0


def test_rotary_positions_learn_the_marker_task(marker_task, tmp_path):
    exact_match = _train(
        marker_task, tmp_path, steps=600, num_layers=2, positional_encoding="rotary"
    )
    assert exact_match == 1.0
