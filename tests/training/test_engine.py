"""The training engine through its Python API: checkpoints, resume, determinism, NaN stop."""

from __future__ import annotations

import json
import math
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import classification_config
from transformer_tf.assembly import load_run
from transformer_tf.config import config_from_dict
from transformer_tf.distribute import distribute_dataset
from transformer_tf.errors import TrainingDivergedError, UserError
from transformer_tf.evaluation.evaluator import evaluate_run
from transformer_tf.models import TransformerClassifier
from transformer_tf.run import RunDir
from transformer_tf.training.trainer import _EpochsAhead, build_trainer, train


@pytest.fixture(scope="module")
def imdb(shared_imdb):
    return shared_imdb


def _config(imdb, **training):
    return config_from_dict(classification_config(imdb, **training))


def _losses(run_dir):
    lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    return [(entry["step"], entry["loss"]) for entry in map(json.loads, lines)]


@pytest.fixture(scope="module")
def keep_two(imdb, tmp_path_factory):
    """classification_run's config (tests/conftest.py) keeping two checkpoints instead of
    three: the run directory and the result of ``train``."""
    run_dir = tmp_path_factory.mktemp("keep_two") / "run"
    return run_dir, train(_config(imdb, keep_checkpoints=2), run_dir, show_progress=False)


def test_train_checkpoints_learns_and_evaluates(keep_two):
    run_dir, result = keep_two
    assert result.step == 30 and result.stop_reason == "completed"
    assert RunDir(run_dir).checkpoint_steps() == [20, 30]  # keeps the last two
    assert (run_dir / "checkpoints" / "best").is_dir()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "model.keras").is_file()
    assert list((run_dir / "logs" / "train").iterdir()), "no TensorBoard events"
    last = result.validation[-1]
    assert last["accuracy"] > 0.9
    # evaluate reloads the run from its directory alone and reproduces the validation numbers.
    scores = evaluate_run(run_dir, split="validation")
    assert scores["step"] == 30
    assert scores["accuracy"] == pytest.approx(last["accuracy"])
    assert scores["loss"] == pytest.approx(last["loss"], rel=1e-5)
    assert evaluate_run(run_dir, split="test")["accuracy"] > 0.85


def test_same_seed_same_loss_curve(keep_two, classification_run):
    # Two runs of the same config and seed (how many checkpoints each keeps changes nothing
    # they compute): the same curve, and the same validations.
    run_dir, result = keep_two
    a, b = _losses(run_dir), _losses(classification_run)
    assert [s for s, _ in a] == [5, 10, 15, 20, 25, 30]
    np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=1e-6)
    lines = (classification_run / "validation_log.jsonl").read_text().splitlines()
    other = [json.loads(line) for line in lines]
    assert [v["step"] for v in result.validation] == [v["step"] for v in other] == [10, 20, 30]
    np.testing.assert_allclose(
        [v["loss"] for v in result.validation], [v["loss"] for v in other], rtol=1e-6
    )


def test_resume_continues_at_the_right_step_and_matches(imdb, classification_run, tmp_path):
    full = _config(imdb, steps=30)
    # The uninterrupted run: classification_run (tests/conftest.py) is this config, keeping
    # three checkpoints.
    # The same run in two legs: stop at 20, then rerun with the full step budget.
    first = _config(imdb, steps=20)
    train(first, tmp_path / "legs", show_progress=False)
    trainer = build_trainer(full, tmp_path / "legs", show_progress=False)
    assert int(trainer.state.step.numpy()) == 20
    assert int(trainer.optimizer.iterations.numpy()) == 20  # schedule continues at step 20
    trainer.train()
    full_losses = dict(_losses(classification_run))
    leg_losses = dict(_losses(tmp_path / "legs"))
    assert leg_losses[30] == pytest.approx(full_losses[30], rel=1e-5)
    assert leg_losses[25] == pytest.approx(full_losses[25], rel=1e-5)


def test_refuses_a_run_dir_of_another_model(imdb, classification_run, tmp_path):
    shutil.copytree(classification_run, tmp_path / "run")  # a trained run of the default model
    other = config_from_dict(
        {**classification_config(imdb), "model": {"d_model": 64, "num_heads": 2, "num_layers": 1}}
    )
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    with pytest.raises(UserError, match=r"model\.d_model.*differ"):
        build_trainer(other, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before


def test_average_last_checkpoints_is_the_mean_of_their_weights(classification_run):
    run_dir = classification_run  # 30 steps, checkpoints 10, 20 and 30 kept
    weights = []
    for step in (10, 20, 30):
        run = load_run(run_dir, checkpoint=str(step))
        weights.append([w.numpy() for w in run.model.weights])
    averaged = load_run(run_dir, average_last=3)
    assert averaged.checkpoint == "average of steps 10, 20, 30"
    for i, weight in enumerate(averaged.model.weights):
        expected = np.mean([w[i] for w in weights], axis=0)
        np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="needs 4 checkpoints"):
        load_run(run_dir, average_last=4)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(imdb, tmp_path):
    run_dir = tmp_path / "run"
    config = _config(imdb, steps=60, eval_every=None, clip_norm=None, warmup_steps=0)
    trainer = build_trainer(config, run_dir, show_progress=False)
    original = trainer.task.loss
    # From the 15th step on (after 14 optimizer updates) the loss is NaN.
    trainer.task.loss = lambda labels, logits, smoothing: _nan_after(
        original(labels, logits, smoothing), trainer.optimizer.iterations, 14
    )
    with pytest.raises(TrainingDivergedError, match=r"at step 15.*checkpoint \(step 10\) is kept"):
        trainer.train()
    assert RunDir(run_dir).checkpoint_steps() == [10]
    assert load_run(run_dir).step == 10


def _nan_after(loss_and_count, iterations, after):
    import tensorflow as tf

    loss, count = loss_and_count
    poison = tf.where(iterations >= after, tf.constant(math.nan), tf.constant(0.0))
    return loss + poison, count


def test_jit_compiled_step_follows_the_plain_step(tmp_path):
    from tests.fixtures import translation_config

    raw = translation_config(training={"steps": 10, "eval_every": None, "log_every": 5})
    raw["training"]["jit_compile"] = True
    jit_config = config_from_dict(raw)
    jitted = build_trainer(jit_config, tmp_path / "jit", show_progress=False)
    raw["training"]["jit_compile"] = False
    plain = build_trainer(config_from_dict(raw), tmp_path / "plain", show_progress=False)
    plain.task.config = jit_config  # the same static-shape batches, without XLA
    for trainer in (jitted, plain):
        trainer.train()
    batch = next(iter(jitted.task.dataset("train", training=True)))
    assert batch[0]["source"].shape[1] % 8 == 0 and batch[0]["target"].shape[1] % 8 == 0
    assert batch[0]["source"].shape[0] == 32  # only full batches
    # XLA fuses and reorders float math: the same curve up to rounding.
    np.testing.assert_allclose(
        [v for _, v in _losses(tmp_path / "jit")],
        [v for _, v in _losses(tmp_path / "plain")],
        rtol=1e-4,
    )


def test_token_budget_batches_train_and_evaluate(tmp_path):
    from tests.fixtures import translation_config
    from transformer_tf.inference.options import examples_per_batch

    # One validation, at the end, and without decoding: the test compares its loss with
    # evaluate's (which decodes, for the BLEU below).
    raw = translation_config(
        training={"batch_size": 320, "batch_type": "tokens", "steps": 30, "eval_every": 30,
                  "validation": {"decode": False}}
    )  # fmt: skip
    config = config_from_dict(raw)
    trainer = build_trainer(config, tmp_path / "run", show_progress=False)
    sizes = {
        (labels.shape[0], labels.shape[1])
        for _, labels in trainer.task.dataset("train", training=True)
    }
    assert all(rows * length <= 320 for rows, length in sizes)
    assert len({rows for rows, _ in sizes}) > 2  # the batch size follows the length
    result = trainer.train()
    losses = [v for _, v in _losses(tmp_path / "run")]
    assert result.step == 30 and losses[-1] < losses[0] - 0.5
    assert examples_per_batch(config) == 320 // config.data.max_length
    scores = evaluate_run(tmp_path / "run", split="validation")
    assert scores["loss"] == pytest.approx(result.validation[-1]["loss"], rel=1e-5)
    assert 0.0 <= scores["bleu"] <= 100.0


def test_early_stopping_on_a_named_metric(imdb, tmp_path):
    # min_delta 2.0 on accuracy (at most 1.0) means no evaluation after the first can improve.
    stopping = {"metric": "accuracy", "mode": "max", "patience": 2, "min_delta": 2.0}
    result = train(
        _config(imdb, steps=100, eval_every=5, early_stopping=stopping),
        tmp_path / "run",
        show_progress=False,
    )
    assert result.step == 15  # evaluations at 5 (best), 10 and 15 (two without improvement)
    assert result.stop_reason.startswith("early stopping: validation accuracy")
    assert RunDir(tmp_path / "run").checkpoint_steps()[-1] == 15
    assert load_run(tmp_path / "run", checkpoint="best").step == 5


def test_unknown_early_stopping_metric_is_a_config_error_before_training(imdb, tmp_path):
    # A classification run has no BLEU: refused when the config loads, not hours in.
    stopping = {"metric": "bleu", "mode": "max"}
    with pytest.raises(UserError) as info:
        _config(imdb, steps=10, eval_every=5, early_stopping=stopping)
    assert str(info.value) == (
        "<config>: training.early_stopping.metric: expected a validation metric of task "
        "'classification': 'loss', 'accuracy', found 'bleu'"
    )


def test_gradient_accumulation_updates_every_n_batches(imdb, tmp_path):
    import tensorflow as tf

    trainer = build_trainer(
        _config(imdb, steps=4, eval_every=None, gradient_accumulation=2, log_every=1),
        tmp_path / "run",
        show_progress=False,
    )
    dataset = trainer.task.dataset("train", training=True).take(5)
    iterator = iter(distribute_dataset(trainer.strategy, dataset))
    loop = trainer.make_train_loop()

    def moved(a, b):
        return any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    # One update per call: two batches each, then the last (odd) batch alone, then nothing left.
    calls = []
    for _ in range(4):
        before = [w.numpy().copy() for w in trainer.model.trainable_weights]
        out = loop(iterator, tf.constant(1, tf.int32))
        after = [w.numpy().copy() for w in trainer.model.trainable_weights]
        calls.append((int(out["steps"]), int(out["batches"]), bool(out["end_of_input"])))
        assert moved(before, after) == (int(out["steps"]) == 1)
    assert calls == [(1, 2, False), (1, 2, False), (1, 1, True), (0, 0, True)]
    assert int(trainer.optimizer.iterations.numpy()) == 3  # the schedule counts updates


def test_the_last_epoch_is_validated_and_can_be_best(imdb, tmp_path):
    result = train(
        _config(imdb, steps=None, epochs=2, eval_every=None), tmp_path / "run", show_progress=False
    )
    batches = result.step // 2
    assert [v["step"] for v in result.validation] == [batches, 2 * batches]
    lines = (tmp_path / "run" / "validation_log.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_imdb_config_trains_end_to_end_through_mocked_tfds(tmp_path):
    """configs/imdb.yaml's default source (tensorflow-datasets), with tfds mocked: no network."""
    import tensorflow_datasets as tfds

    from transformer_tf.config import load_config

    overrides = [
        "training.epochs=null",
        "training.steps=4",
        "training.batch_size=8",
        "training.eval_every=2",
        "data.vocab_size=64",
        "data.max_length=32",
        f"data.data_dir={tmp_path / 'tfds'}",
    ]
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "imdb.yaml", overrides)
    assert config.data.source == "tfds" and config.data.name == "imdb_reviews"
    with tfds.testing.mock_data(num_examples=40):
        result = train(config, tmp_path / "run", show_progress=False)
        scores = evaluate_run(tmp_path / "run", split="test")
    assert result.step == 4 and [v["step"] for v in result.validation] == [2, 4]
    assert scores["split"] == "test" and 0.0 <= scores["accuracy"] <= 1.0
    assert (tmp_path / "run" / "vocab" / "vocab.txt").is_file()


def test_finished_epoch_iterators_are_freed_off_the_main_thread():
    # Freeing a tf.data iterator can block for up to a minute (it joins tf.data's threads):
    # on the main thread that was the epoch-boundary stall.
    freed = []

    class Iterator:
        def __init__(self, epoch):
            self.epoch = epoch

        def __del__(self):
            freed.append((self.epoch, threading.current_thread().name))

    ahead = _EpochsAhead(lambda epoch, skip: Iterator(epoch), background=True)
    current = [ahead.take(0, 0)]
    ahead.start(1)
    ahead.release(current)
    current = [ahead.take(1, 0)]
    ahead.start(2)  # built ahead, never taken: freed by close
    ahead.release(current)
    ahead.pending[1].result()  # built (close cancels a build not yet begun)
    ahead.close()
    assert [epoch for epoch, _ in freed] == [0, 1, 2]
    assert all(name.startswith("release") for _, name in freed), freed


def test_naive_bayes_ratios_come_from_the_training_reviews_and_travel_in_the_checkpoint(
    imdb, tmp_path
):
    raw = classification_config(imdb, steps=10, eval_every=None)
    raw["model"]["naive_bayes"] = True
    trainer = build_trainer(config_from_dict(raw), tmp_path / "run", show_progress=False)
    task, model = trainer.task, trainer.model
    # The counts by hand: the distinct ids of each training review (all shorter than
    # data.max_length, so none is truncated), per label.
    counts = np.zeros((task.tokenizer.vocab_size, 2), np.int64)
    for text, label in zip(*task.splits["train"], strict=True):
        for token in set(task.tokenizer.encode(text)):
            counts[token, label] += 1
    reference = TransformerClassifier.from_config(model.get_config())
    reference.build()
    reference.adapt_naive_bayes(counts)
    expected = reference.naive_bayes_ratios.numpy()
    np.testing.assert_array_equal(model.naive_bayes_ratios.numpy(), expected)
    assert np.abs(expected).max() > 0.5  # the marker words are strongly one-sided
    trainer.train()
    trained_weights = model.naive_bayes_weights.numpy()
    assert np.abs(trained_weights).max() > 0  # the per-token weights are trained
    # Evaluation loads the model from the checkpoint alone: ratios and weights come back.
    loaded = load_run(tmp_path / "run").model
    np.testing.assert_array_equal(loaded.naive_bayes_ratios.numpy(), expected)
    np.testing.assert_array_equal(loaded.naive_bayes_weights.numpy(), trained_weights)
