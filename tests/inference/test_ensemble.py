"""Ensembles: probabilities averaged at every step, each member with its own cache."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures import (
    classification_config,
    make_imdb_folder,
    train_through_cli,
    translation_config,
    write_config,
)
from transformer_tf.assembly import load_run
from transformer_tf.cli import main
from transformer_tf.evaluation.evaluator import evaluate_run
from transformer_tf.inference import beam_search, greedy_search
from transformer_tf.inference.ensemble import ClassifierEnsemble, Ensemble
from transformer_tf.inference.options import DecodingOptions
from transformer_tf.inference.translate import translate

# `translate` loads each run once per set of arguments (tests/shared_runs.py): the same model
# object, whose traced decoder later commands reuse. No run is written after its training.
pytestmark = pytest.mark.usefixtures("load_each_run_once")


def _train(root, name, **training):
    # decoding.max_length 20 (not 40): shorter decodings of these barely trained models; what is
    # compared is a run alone with ensembles of it, not the quality of its translations.
    raw = translation_config(
        training={"steps": 10, "eval_every": 1000, "checkpoint_every": 5, **training},
        decoding={"max_length": 20},
    )
    raw["training"]["validation"] = {"decode": False}
    return train_through_cli(root, raw, name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    return _train(root, "a", seed=1), _train(root, "b", seed=2)


def _sources(run, count=8):
    return [s for s, _ in run.task.raw_splits["test"][:count]]


def test_an_ensemble_of_a_run_with_itself_translates_like_the_run(runs):
    run = load_run(runs[0])
    texts = _sources(run)
    options = DecodingOptions.from_config(run.config)
    source, target = run.task.source_tokenizer, run.task.target_tokenizer
    alone = translate(run.model, source, target, texts, options).texts
    doubled = translate(Ensemble([run.model, run.model]), source, target, texts, options).texts
    assert doubled == alone
    ids = run.task.source_tokenizer.encode_batch(texts)
    width = max(map(len, ids))
    source = tf.constant([row + [0] * (width - len(row)) for row in ids])
    expected = greedy_search(run.model, source, 12).numpy()
    np.testing.assert_array_equal(greedy_search(Ensemble([run.model] * 2), source, 12), expected)


def test_the_ensemble_averages_the_members_probabilities(runs):
    a, b = load_run(runs[0]), load_run(runs[1])
    inputs, _ = next(iter(a.task.dataset("test", training=False)))
    p_a = tf.nn.softmax(a.model(inputs, training=False))
    p_b = tf.nn.softmax(b.model(inputs, training=False))
    assert not np.allclose(p_a, p_b, atol=1e-3)  # two different models
    mixed = tf.exp(Ensemble([a.model, b.model])(inputs))
    np.testing.assert_allclose(mixed, (p_a + p_b) / 2, rtol=1e-5, atol=1e-7)


def test_cached_ensemble_beam_equals_uncached_ensemble_decoding(runs):
    a, b = load_run(runs[0]), load_run(runs[1])
    ensemble = Ensemble([a.model, b.model])
    ids = a.task.source_tokenizer.encode_batch(_sources(a, 5))
    width = max(map(len, ids))
    source = tf.constant([row + [0] * (width - len(row)) for row in ids])
    cached, cached_scores = beam_search(ensemble, source, 10, beam_size=3)
    # Uncached decoding by hand: the ensemble's teacher-forced log-probs of the beam's output
    # give back its scores (length penalty 0.6, GNMT's).
    encoder_outputs, mask = ensemble.encode(source)
    target = np.concatenate([np.full((5, 1), 2), cached.numpy()], axis=1)[:, :-1]  # BOS first
    log_probs = ensemble.decode(tf.constant(target, tf.int32), encoder_outputs, mask).numpy()
    for row, hypothesis in enumerate(cached.numpy()):
        length = next((i + 1 for i, t in enumerate(hypothesis) if t == 3), len(hypothesis))
        total = sum(log_probs[row, i, hypothesis[i]] for i in range(length))
        penalty = ((5.0 + length) / 6.0) ** 0.6
        assert total / penalty == pytest.approx(float(cached_scores[row]), abs=2e-4)


def test_evaluate_with_an_ensemble(runs, capsys):
    alone = evaluate_run(runs[0], split="test")
    doubled = evaluate_run(runs[0], split="test", ensemble=[str(runs[0])])
    assert doubled["bleu"] == alone["bleu"] and doubled["exact_match"] == alone["exact_match"]
    assert doubled["loss"] == pytest.approx(alone["loss"], rel=1e-5)
    assert doubled["ensemble"] == [alone["checkpoint"]] * 2
    # A checkpoint of another run is a member too.
    mixed = evaluate_run(runs[0], split="test", ensemble=[str(runs[1] / "checkpoints" / "ckpt-5")])
    assert mixed["ensemble"][1] == str(runs[1] / "checkpoints" / "ckpt-5")
    assert mixed["loss"] != pytest.approx(alone["loss"], rel=1e-3)


def test_bad_members_exit_2(runs, tmp_path, capsys):
    assert main(["evaluate", str(runs[0]), "--ensemble", str(tmp_path)]) == 2
    assert f"--ensemble {tmp_path}: is neither a run directory" in capsys.readouterr().err
    other = runs[0]  # a run of the usual vocabulary (this file trained it as _train(..., seed=1))
    # A smaller corpus gives the toy task a smaller vocabulary.
    raw = translation_config(training={"steps": 2, "eval_every": 1000})
    raw["data"]["num_train"] = 30
    raw["training"]["validation"] = {"decode": False}
    config = write_config(tmp_path / "small_vocab.yaml", raw)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "v"), "--no-progress"]) == 0
    assert main(["evaluate", str(other), "--ensemble", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert f"--ensemble {tmp_path / 'v'}: its source vocabulary" in err
    assert "Traceback" not in err


def test_translate_with_an_ensemble_through_the_cli(runs, capsys):
    run = load_run(runs[0])
    texts = _sources(run, 4)
    assert main(["translate", str(runs[0]), *texts]) == 0
    alone = capsys.readouterr().out
    assert main(["translate", str(runs[0]), *texts, "--ensemble", str(runs[0])]) == 0
    assert capsys.readouterr().out == alone
    assert main(["translate", str(runs[0]), *texts, "--ensemble", str(runs[1])]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


# --- Classification -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifier_ensemble")
    data = make_imdb_folder(root / "data", per_class=20)
    paths = []
    for name, seed, vocab_size in (("a", 1, 100), ("b", 2, 100), ("small", 1, 16)):
        raw = classification_config(data, steps=6, eval_every=1000, checkpoint_every=6, seed=seed)
        raw["data"]["vocab_size"] = vocab_size
        train_through_cli(root, raw, name)
        paths.append(root / name)
    return paths


def test_a_classifier_ensemble_averages_the_members_probabilities(classifier_runs):
    a, b = (load_run(path) for path in classifier_runs[:2])
    ids = tf.constant([[5, 6, 7, 0], [8, 9, 10, 11]], tf.int32)
    probabilities = tf.nn.softmax(ClassifierEnsemble([a.model, b.model])(ids)).numpy()
    expected = (tf.nn.softmax(a.model(ids)) + tf.nn.softmax(b.model(ids))).numpy() / 2
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)


def test_evaluate_a_classification_ensemble(classifier_runs, runs, capsys):
    first, second, small = classifier_runs
    alone = evaluate_run(first, split="test")
    doubled = evaluate_run(first, split="test", ensemble=[str(first)])
    assert doubled["accuracy"] == alone["accuracy"]
    assert doubled["loss"] == pytest.approx(alone["loss"], rel=1e-5)
    pair = evaluate_run(first, split="test", ensemble=[str(second / "checkpoints" / "best")])
    assert pair["ensemble"] == [
        alone["checkpoint"],
        str(second / "checkpoints" / "best" / "best-6"),
    ]
    assert pair["loss"] != pytest.approx(alone["loss"], rel=1e-4)
    # Runs of another task, or another vocabulary, are refused with exit 2.
    assert main(["evaluate", str(first), "--ensemble", str(runs[0])]) == 2
    err = capsys.readouterr().err
    assert f"--ensemble {runs[0]}: a translation run, but {first} is a classification run" in err
    assert "Traceback" not in err
    assert main(["evaluate", str(first), "--ensemble", str(small)]) == 2
    err = capsys.readouterr().err
    assert f"--ensemble {small}: its review vocabulary" in err and "Traceback" not in err
