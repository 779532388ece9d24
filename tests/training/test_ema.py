"""``training.ema_decay``: the moving averages of the weights (training/ema.py), against the
formula computed by hand from the weights after each update; resumed, used by validation,
evaluate and score (``--raw-weights`` not), and refused out of range (on two mirrored replicas:
tests/training/test_distributed.py).

The formula: after update t = 1, 2, ...  decay_t = min(decay, (1 + t) / (10 + t)) and
average_t = decay_t * average_{t-1} + (1 - decay_t) * weight_t, average_0 = the initial weight.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures import (
    classification_config,
    make_imdb_folder,
    translation_config,
    write_config,
)
from tests.training.test_step import BIAS, KERNEL, make_update, weights
from transformer_tf.assembly import assemble, load_run
from transformer_tf.cli import main
from transformer_tf.config import config_from_dict
from transformer_tf.errors import ConfigError
from transformer_tf.evaluation.evaluator import Evaluator
from transformer_tf.run import RunDir
from transformer_tf.training.ema import ExponentialMovingAverage
from transformer_tf.training.trainer import build_trainer

ROOT = Path(__file__).resolve().parents[2]


def hand_averages(initial, updates, decay):
    """The averages after each of ``updates`` (lists of weight arrays), by the formula, in
    float32 with the same operations as the code."""
    averages = [np.asarray(w, np.float32) for w in initial]
    for t, weights_t in enumerate(updates, start=1):
        t32 = np.float32(t)
        d = np.minimum(np.float32(decay), (np.float32(1) + t32) / (np.float32(10) + t32))
        averages = [d * a + (np.float32(1) - d) * np.asarray(w, np.float32)
                    for a, w in zip(averages, weights_t, strict=True)]  # fmt: skip
    return averages


def test_decay_warms_up_to_the_configured_value():
    ema = ExponentialMovingAverage(None, [tf.Variable([1.0])], 0.2)
    got = [float(ema.decay_at(t)) for t in (1, 2, 3, 1000)]
    np.testing.assert_allclose(got, [2 / 11, 0.2, 0.2, 0.2], rtol=1e-7)
    ema = ExponentialMovingAverage(None, [tf.Variable([1.0])], 0.999)
    np.testing.assert_allclose(float(ema.decay_at(8)), 0.5, rtol=1e-7)
    np.testing.assert_allclose(float(ema.decay_at(80)), 0.9, rtol=1e-7)
    with pytest.raises(ValueError):
        ExponentialMovingAverage(None, [tf.Variable([1.0])], 1.0)


@pytest.mark.parametrize("name", ["default", "mirrored"])
def test_after_apply_hook_moves_the_averages_by_the_formula(name):
    strategy = (
        tf.distribute.get_strategy()
        if name == "default"
        else tf.distribute.MirroredStrategy(["/cpu:0"])
    )
    update = make_update(strategy)
    ema = ExponentialMovingAverage(strategy, update.variables, 0.2)
    update.after_apply.append(ema.update)
    apply = tf.function(lambda grads: update.apply(grads, tf.constant(True)))
    after = []
    for scale in (1.0, -0.5, 2.0):
        apply([tf.constant(KERNEL * scale), tf.constant(BIAS * scale)])
        after.append(weights(update))
    assert int(ema.num_updates.numpy()) == 3
    want = hand_averages([KERNEL, BIAS], after, 0.2)
    for got, expected in zip(ema.averages, want, strict=True):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    # Not the weights themselves, nor a plain mean.
    assert not np.allclose(ema.averages[0].numpy(), after[-1][0], rtol=1e-3)


def test_a_skipped_loss_scaled_update_leaves_the_averages():
    update = make_update(loss_scale=True)
    ema = ExponentialMovingAverage(None, update.variables, 0.5)
    update.after_apply.append(ema.update)
    apply = tf.function(lambda grads, finite: update.apply(grads, finite))
    bad = [tf.constant([[np.inf, 0.0], [0.0, 0.0]]), tf.constant([0.0, 0.0])]
    apply(bad, update.optimizer.check_finite(bad))
    assert int(ema.num_updates.numpy()) == 0
    np.testing.assert_array_equal(ema.averages[0].numpy(), KERNEL)


def test_averaged_weights_swaps_in_and_back_exactly():
    variable = tf.Variable([1.0, 2.0])
    ema = ExponentialMovingAverage(None, [variable], 0.5)
    ema.averages[0].assign([5.0, 6.0])
    with pytest.raises(RuntimeError), ema.averaged_weights():
        np.testing.assert_array_equal(variable.numpy(), [5.0, 6.0])
        raise RuntimeError("inside")
    np.testing.assert_array_equal(variable.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(ema.averages[0].numpy(), [5.0, 6.0])


# --- Training runs ---------------------------------------------------------------------------


def ema_config(**training):
    settings = {"validation": {"decode": False}, "eval_every": None, "ema_decay": 0.2}
    return config_from_dict(translation_config(training={**settings, **training}))


def trainable(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def checkpoint_averages(path):
    reader = tf.train.load_checkpoint(str(path))
    count = sum(
        1 for name in reader.get_variable_to_shape_map() if name.startswith("ema/averages/")
    )
    averages = [
        reader.get_tensor(f"ema/averages/{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(count)
    ]
    return averages, int(reader.get_tensor("ema/num_updates/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.fixture(scope="module")
def three_updates(tmp_path_factory):
    """A 3-step run checkpointing every step, validated at 3: its directory, trainer, initial
    weights and result (read only; the resume test compares its step-3 averages too)."""
    run_dir = tmp_path_factory.mktemp("three_updates")
    config = ema_config(steps=3, checkpoint_every=1, eval_every=3, steps_per_loop=1)
    trainer = build_trainer(config, run_dir, show_progress=False)
    initial = trainable(trainer.model)
    result = trainer.train()
    return run_dir, trainer, initial, result


def test_three_training_updates_give_the_formula_and_validation_uses_the_averages(three_updates):
    tmp_path, trainer, initial, result = three_updates
    run = RunDir(tmp_path)
    after = [trainable(load_run(run, checkpoint=str(t), raw_weights=True).model) for t in (1, 2, 3)]
    want = hand_averages(initial, after, 0.2)
    for got, expected in zip(trainer.ema.averages, want, strict=True):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    saved, num_updates = checkpoint_averages(run.checkpoint_path(3))
    assert num_updates == 3
    for got, expected in zip(saved, want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The model holds its raw weights again after validation and the final save...
    for got, expected in zip(trainable(trainer.model), after[-1], strict=True):
        np.testing.assert_array_equal(got, expected)
    # ... validation scored the averages: load_run's default loads them.
    averaged = load_run(run, checkpoint="3")
    assert averaged.weights == "averaged"
    for got, expected in zip(trainable(averaged.model), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    expected_loss = Evaluator(averaged.strategy, averaged.model, averaged.task).run("validation")
    assert result.validation[-1]["step"] == 3
    assert result.validation[-1]["loss"] == pytest.approx(expected_loss["loss"], rel=1e-6)
    raw = load_run(run, checkpoint="3", raw_weights=True)
    raw_loss = Evaluator(raw.strategy, raw.model, raw.task).run("validation")["loss"]
    assert raw_loss != pytest.approx(expected_loss["loss"], rel=1e-4)
    # model.keras, the final model, holds the averages.
    from transformer_tf.saving import load_keras_model

    final = load_keras_model(tmp_path)
    for got, expected in zip(trainable(final), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_resume_restores_the_averages(tmp_path, three_updates):
    # Two legs, 2 steps then 1, against the same config's straight 3-step run (three_updates:
    # checkpoints and validation only swap the averages in and back, exactly).
    build_trainer(
        ema_config(steps=2, checkpoint_every=2), tmp_path / "resumed", show_progress=False
    ).train()
    build_trainer(
        ema_config(steps=3, checkpoint_every=2), tmp_path / "resumed", show_progress=False
    ).train()
    resumed, resumed_t = checkpoint_averages(RunDir(tmp_path / "resumed").checkpoint_path(3))
    straight, straight_t = checkpoint_averages(RunDir(three_updates[0]).checkpoint_path(3))
    assert resumed_t == straight_t == 3
    for got, expected in zip(resumed, straight, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    # And the resumed run's first leg wrote the step-2 averages that the second leg started at.
    first_leg, t = checkpoint_averages(RunDir(tmp_path / "resumed").checkpoint_path(2))
    assert t == 2
    assert not np.allclose(first_leg[0], resumed[0])


def test_a_run_without_averages_resumes_with_them_and_its_checkpoints_still_load(tmp_path, caplog):
    no_ema = ema_config(steps=2, checkpoint_every=1, ema_decay=None)
    build_trainer(no_ema, tmp_path, show_progress=False).train()
    run = RunDir(tmp_path)
    at_2 = trainable(load_run(run, checkpoint="2").model)
    trainer = build_trainer(ema_config(steps=4, checkpoint_every=1), tmp_path, show_progress=False)
    trainer.train()
    after = [trainable(load_run(run, checkpoint=str(t), raw_weights=True).model) for t in (3, 4)]
    # The averages start at the resumed weights, t at 0.
    want = hand_averages(at_2, after, 0.2)
    saved, t = checkpoint_averages(run.checkpoint_path(4))
    assert t == 2
    for got, expected in zip(saved, want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The old checkpoint (no averages) loads, with its raw weights, under the new config.
    with caplog.at_level("WARNING"):
        old = load_run(run, checkpoint="2")
    assert old.weights == "raw"
    assert "holds no moving averages" in caplog.text
    for got, expected in zip(trainable(old.model), at_2, strict=True):
        np.testing.assert_array_equal(got, expected)


def _loss_by_hand_assignment(run_dir, weights_of):
    """The evaluator's test loss of a freshly built model whose trainable variables are set,
    by hand, to ``weights_of(reader)`` read from the latest checkpoint."""
    run = RunDir(run_dir)
    assembly = assemble(run.read_config(), run)
    reader = tf.train.load_checkpoint(run.latest_checkpoint())
    values = weights_of(reader, len(assembly.model.trainable_variables))
    for variable, value in zip(assembly.model.trainable_variables, values, strict=True):
        variable.assign(value)
    strategy = tf.distribute.get_strategy()
    return Evaluator(strategy, assembly.model, assembly.task).run("test")["loss"]


def test_evaluate_uses_the_averages_unless_raw_weights(tmp_path, capsys):
    imdb = make_imdb_folder(tmp_path / "imdb", per_class=30)
    raw = classification_config(imdb, steps=6, checkpoint_every=6, eval_every=None, ema_decay=0.5)
    config = write_config(tmp_path / "c.yaml", raw)
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run_dir), "--no-progress"]) == 0
    averaged_json, raw_json = tmp_path / "averaged.json", tmp_path / "raw.json"
    args = ["evaluate", str(run_dir), "--split", "test", "--output-json"]
    assert main([*args, str(averaged_json)]) == 0
    assert main([*args, str(raw_json), "--raw-weights"]) == 0
    capsys.readouterr()
    averaged = json.loads(averaged_json.read_text())
    raw_scores = json.loads(raw_json.read_text())
    assert (averaged["weights"], raw_scores["weights"]) == ("averaged", "raw")
    assert averaged["loss"] != pytest.approx(raw_scores["loss"], rel=1e-4)

    # Which weights: the trainable ones in the order the trainer averaged them.
    model = load_run(run_dir).model
    weight_index = {id(w): i for i, w in enumerate(model.weights)}
    trainable_index = [weight_index[id(v)] for v in model.trainable_variables]

    def averages(reader, count):
        return [
            reader.get_tensor(f"ema/averages/{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(count)
        ]

    def raw_weights(reader, count):
        return [reader.get_tensor(f"model_weights/{i}/.ATTRIBUTES/VARIABLE_VALUE")
                for i in trainable_index]  # fmt: skip

    assert averaged["loss"] == pytest.approx(_loss_by_hand_assignment(run_dir, averages), rel=1e-6)
    assert raw_scores["loss"] == pytest.approx(
        _loss_by_hand_assignment(run_dir, raw_weights), rel=1e-6
    )


def test_score_uses_the_averages_unless_raw_weights(three_updates, tmp_path, capsys):
    from transformer_tf.inference.scoring import score_texts

    run_dir = three_updates[0]  # 3 updates, decay 0.2: the averages are not the weights
    pairs = RunDir(run_dir).read_config()
    run = load_run(run_dir)
    sources, targets = zip(*run.task.raw_splits["validation"][:5], strict=True)
    (tmp_path / "src").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (tmp_path / "tgt").write_text("\n".join(targets) + "\n", encoding="utf-8")
    printed = {}
    for flags in ([], ["--raw-weights"]):
        args = ["score", str(run_dir), "--source", str(tmp_path / "src")]
        assert main([*args, "--target", str(tmp_path / "tgt"), *flags]) == 0
        lines = capsys.readouterr().out.splitlines()
        printed[bool(flags)] = [float(line.split(" ||| ")[0]) for line in lines]
    assert printed[False] != pytest.approx(printed[True], rel=1e-4)
    for raw_weights in (False, True):
        loaded = load_run(run_dir, raw_weights=raw_weights)
        want = score_texts(
            loaded.model,
            loaded.task.source_tokenizer,
            loaded.task.target_tokenizer,
            list(sources),
            list(targets),
            max_input_length=pairs.data.max_length,
        ).scores
        assert printed[raw_weights] == pytest.approx(list(want), abs=1e-5)


# --- Two mirrored replicas --------------------------------------------------------------------

# The comparison of one device with two mirrored replicas
# (test_two_mirrored_replicas_give_the_single_device_averages) is in
# tests/training/test_distributed.py: its seq2seq curve case keeps moving averages, in the one
# subprocess that runs every mirrored check.


# --- Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1.5, 0, 1, -0.1])
def test_ema_decay_out_of_range_is_a_config_error(value):
    raw = translation_config(training={"ema_decay": value})
    with pytest.raises(ConfigError) as excinfo:
        config_from_dict(raw)
    assert "training.ema_decay" in str(excinfo.value)


def test_ema_decay_out_of_range_exits_2_naming_the_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("task: translation\ntraining:\n  ema_decay: 1.5\n", encoding="utf-8")
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3" in err and "training.ema_decay" in err
    assert not (tmp_path / "run").exists()


def test_ema_decay_defaults_to_off():
    config = config_from_dict(translation_config())
    assert config.training.ema_decay is None
