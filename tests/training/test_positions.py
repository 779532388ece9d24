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

Each task's run is trained once, through the CLI, and then also serves the checks of
``evaluate``, ``translate`` and the exports with these positions.
"""

from __future__ import annotations

import json
import random

import pytest

from tests.fixtures import assert_evaluation_scores, train_through_cli
from tests.training.test_mixed_precision import copy_task, raw_config  # noqa: F401 (a fixture)
from transformer_tf.assembly import load_run
from transformer_tf.cli import main

# `translate` and the tests load each run once per set of arguments (tests/shared_runs.py); no
# run is written after its training.
pytestmark = pytest.mark.usefixtures("load_each_run_once")

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


@pytest.fixture(scope="module")
def relative_run(copy_task, tmp_path_factory):  # noqa: F811
    """Relative positions (2 layers) trained 500 steps on the copy task, through the CLI."""
    raw = raw_config(copy_task, "none", False, steps=500, num_layers=2,
                     positional_encoding="relative", maximum_relative_position=4)  # fmt: skip
    return train_through_cli(tmp_path_factory.mktemp("relative"), raw)


@pytest.fixture(scope="module")
def rotary_run(marker_task, tmp_path_factory):
    """Rotary positions (2 layers) trained 600 steps on the marker task, through the CLI."""
    raw = raw_config(marker_task, "none", False, steps=600, num_layers=2,
                     positional_encoding="rotary")  # fmt: skip
    return train_through_cli(tmp_path_factory.mktemp("rotary"), raw)


def _last_validation(run_dir):
    return json.loads((run_dir / "validation_log.jsonl").read_text().splitlines()[-1])


def _assert_positions(run_dir, mode):
    run = load_run(run_dir)
    assert run.config.model.positional_encoding == mode
    assert len(run.model.encoder.blocks) == len(run.model.decoder.blocks) == 2
    for block in (run.model.encoder.blocks[0], run.model.decoder.blocks[0]):
        assert block.self_attention.position_mode == mode
    return run


def test_relative_positions_learn_the_copy_task_as_sinusoidal_ones_do(relative_run):
    _assert_positions(relative_run, "relative")
    validation = _last_validation(relative_run)
    assert validation["step"] == 500 and validation["exact_match"] == 1.0


def test_rotary_positions_learn_the_marker_task(rotary_run):
    _assert_positions(rotary_run, "rotary")
    validation = _last_validation(rotary_run)
    assert validation["step"] == 600 and validation["exact_match"] == 1.0


@pytest.mark.parametrize("mode", ["relative", "rotary"])
def test_evaluate_translate_and_the_exports_with_positions_in_self_attention(
    request, tmp_path, capsys, mode
):
    """evaluate (beam search through the cache), translate and the SavedModel export agree on
    a run with positions applied by self-attention; the CTranslate2 export refuses the run and
    writes nothing."""
    import tensorflow as tf

    from transformer_tf.inference.export import export_run

    run_dir = request.getfixturevalue(f"{mode}_run")
    run = _assert_positions(run_dir, mode)
    out = tmp_path / "scores.json"
    args = ["--beam-size", "2"]
    command = ["evaluate", str(run_dir), "--split", "validation", *args, "--output-json", str(out)]
    assert main(command) == 0
    sources = [source for source, _ in run.task.raw_splits["validation"]]
    capsys.readouterr()
    assert main(["translate", str(run_dir), *args, *sources]) == 0
    hypotheses = capsys.readouterr().out.splitlines()
    assert_evaluation_scores(json.loads(out.read_text()), run_dir, "validation", hypotheses)

    serve = tf.saved_model.load(str(export_run(run_dir, tmp_path / "export", beam_size=2)))
    texts = serve.signatures["serving_default"](text=tf.constant(sources[:8]))["translation"]
    assert [t.decode() for t in texts.numpy().tolist()] == hypotheses[:8]

    capsys.readouterr()
    export_dir = tmp_path / "ct2"
    assert main(["export", str(run_dir), str(export_dir), "--format", "ctranslate2"]) == 2
    err = capsys.readouterr().err
    assert (
        f"cannot convert this run to CTranslate2: model.positional_encoding `{mode}` ({mode} "
        "positions in self-attention are not converted; sinusoidal and learned convert). Use "
        "the SavedModel export"
    ) in err
    assert not export_dir.exists()
