"""The update (training/step.py): accumulation equals one batch of the union, one all-reduce of
one copy of the gradients per update, the same Adam/AdamW update as Keras' ``apply``, loss
scaling, and ``steps_per_loop`` giving the curve of one update per call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures import translation_config
from transformer_tf.config import config_from_dict
from transformer_tf.distribute import distribute_dataset
from transformer_tf.training.trainer import build_trainer

ROOT = Path(__file__).resolve().parents[2]
TWO_CPUS = {"strategy": "mirrored", "devices": ["/cpu:0", "/cpu:1"]}


def _trainer(run_dir, distribute=None, **training):
    raw = translation_config(
        training={"steps": 4, "eval_every": None, **training},
        distribute=distribute or {"strategy": "cpu"},
    )
    return build_trainer(config_from_dict(raw), run_dir, show_progress=False)


def _weights(trainer):
    return [w.numpy().copy() for w in trainer.model.trainable_weights]


def _run(trainer, batches, max_steps):
    """Run the compiled loop on hand-made batches; returns its outputs as numbers."""
    dataset = tf.data.Dataset.from_tensors(batches[0])
    for batch in batches[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(batch))
    iterator = iter(distribute_dataset(trainer.strategy, dataset))
    loop = trainer.make_train_loop()
    out = loop(iterator, tf.constant(max_steps, tf.int32))
    return {name: value.numpy().item() for name, value in out.items()}


def _split(batch, rows):
    inputs, labels = batch
    return {k: v[:rows] for k, v in inputs.items()}, labels[:rows]


def _rest(batch, rows):
    inputs, labels = batch
    return {k: v[rows:] for k, v in inputs.items()}, labels[rows:]


def accumulation_vs_union(out_dir, distribute=None) -> dict:
    """Weights after one update of 2 accumulated micro-batches (3 and 9 sentences, so different
    token counts) and after one update of their union, from the same initial weights; and the
    reductions traced into the accumulating loop (:func:`record_reductions`)."""
    # epsilon 1: Adam's first update is then about linear in the gradient rather than its sign,
    # and a clip norm below the gradient's norm makes the clip act: both would show a
    # per-micro-batch normalisation or clip.
    settings = dict(distribute=distribute, epsilon=1.0, clip_norm=0.05, optimizer="adamw",
                    weight_decay=0.1, learning_rate=0.1, warmup_steps=0)  # fmt: skip
    union = _trainer(Path(out_dir) / "union", **settings)
    batch = next(iter(union.task.dataset("train", training=True)))
    batch = _split(batch, 12)
    first, second = _split(batch, 3), _rest(batch, 3)
    tokens = [int(tf.reduce_sum(tf.cast(b[1] != 0, tf.int32))) for b in (first, second)]
    accumulated = _trainer(Path(out_dir) / "acc", gradient_accumulation=2, **settings)
    initial = _weights(accumulated)
    reductions = record_reductions(accumulated)
    assert all(np.array_equal(a, b) for a, b in zip(initial, _weights(union), strict=True))
    out_acc = _run(accumulated, [first, second], 1)
    out_union = _run(union, [batch], 1)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(_weights(union), initial, strict=True))
    return {
        "tokens": tokens,
        "out_acc": out_acc,
        "out_union": out_union,
        "moved": moved,
        "max_rel_diff": max(
            float(np.abs(a - b).max() / (np.abs(b - i).max() + 1e-12))
            for a, b, i in zip(_weights(accumulated), _weights(union), initial, strict=True)
        ),
        "allclose": all(
            np.allclose(a, b, rtol=1e-5, atol=1e-7)
            for a, b in zip(_weights(accumulated), _weights(union), strict=True)
        ),
        "iterations": [int(t.optimizer.iterations.numpy()) for t in (accumulated, union)],
        "reductions": reductions,
    }


def record_reductions(trainer) -> dict:
    """Record the cross-device reductions traced into ``trainer``'s loop: call it before the
    loop is made (``trainer.train()`` or ``make_train_loop``); the returned dict then holds one
    record per call, ``[name, values, bytes]``, in ``calls`` (only those of the loop's first
    call, which traces it: not the evaluator's), and the model's ``gradient_bytes`` and
    ``variables``."""
    extended = trainer.strategy.extended
    result = {
        "calls": [],
        "gradient_bytes": sum(
            int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size
            for v in trainer.model.trainable_variables
        ),
        "variables": len(trainer.model.trainable_variables),
    }
    tracing = [False]

    def recording(name):
        original = getattr(extended, name)

        def wrapper(reduce_op, pairs, *args, **kwargs):
            if tracing[0]:
                values = [v for v, _ in pairs] if name == "batch_reduce_to" else [pairs]
                local = [trainer.strategy.experimental_local_results(v)[0] for v in values]
                if all(v.shape.is_fully_defined() for v in local):
                    nbytes = sum(v.shape.num_elements() * v.dtype.size for v in local)
                else:
                    nbytes = str([v.shape.as_list() for v in local])
                result["calls"].append([name, len(values), nbytes])
            return original(reduce_op, pairs, *args, **kwargs)

        setattr(extended, name, wrapper)

    recording("batch_reduce_to")
    recording("reduce_to")
    make = trainer.make_train_loop

    def make_recorded():
        loop = make()

        def first_call_recorded(*args):
            # The first call traces the loop (only the first loop made is recorded).
            tracing[0] = not result["calls"] and loop.experimental_get_tracing_count() == 0
            try:
                return loop(*args)
            finally:
                tracing[0] = False

        return first_call_recorded

    trainer.make_train_loop = make_recorded
    return result


def _assert_union(result):
    assert result["tokens"][0] != result["tokens"][1]
    assert result["moved"] > 1e-4  # the update did something to compare
    assert result["allclose"], result["max_rel_diff"]
    assert result["iterations"] == [1, 1]  # one update each
    acc, union = result["out_acc"], result["out_union"]
    assert (acc["steps"], acc["batches"], union["steps"], union["batches"]) == (1, 2, 1, 1)
    assert acc["count"] == union["count"] == sum(result["tokens"])
    assert acc["loss_sum"] == pytest.approx(union["loss_sum"], rel=1e-5)


def test_accumulated_micro_batches_equal_one_batch_of_their_union(tmp_path):
    _assert_union(accumulation_vs_union(tmp_path))


# On two replicas, accumulation_vs_union and count_reductions run in the one mirrored subprocess
# of tests/training/test_distributed.py (test_accumulated_micro_batches_equal_their_union_on_two_
# replicas, test_one_all_reduce_of_one_gradient_copy_per_update): one TensorFlow start-up with
# two logical CPUs for every mirrored check.


def test_the_update_is_keras_apply_on_the_global_gradient(tmp_path):
    """One replica: the engine's update equals Keras' own AdamW ``apply`` (with its weight
    decay exclusions) on the clipped mean gradient."""
    # epsilon 1: Adam's first steps are then not the sign of tiny, rounding-sized gradients.
    settings = dict(optimizer="adamw", weight_decay=0.1, learning_rate=0.1, clip_norm=0.05,
                    warmup_steps=0, epsilon=1.0)  # fmt: skip
    engine = _trainer(tmp_path / "engine", **settings)
    keras_side = _trainer(tmp_path / "keras", **settings)
    batches = list(engine.task.dataset("train", training=True).take(2))
    _run(engine, batches, 2)
    model, task = keras_side.model, keras_side.task
    for inputs, labels in batches:
        with tf.GradientTape() as tape:
            loss_sum, count = task.loss(labels, model(inputs, training=True), 0.1)
            loss = loss_sum / count
        grads = tape.gradient(loss, model.trainable_variables)
        grads = [tf.convert_to_tensor(g) for g in grads]
        grads, _ = tf.clip_by_global_norm(grads, 0.05)
        keras_side.optimizer.apply(grads, model.trainable_variables)
    for a, b in zip(_weights(engine), _weights(keras_side), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(engine.optimizer.iterations.numpy()) == 2


def test_mixed_float16_scales_skips_non_finite_updates_and_trains(tmp_path):
    trainer = _trainer(tmp_path / "run", mixed_precision="mixed_float16")
    optimizer = trainer.optimizer
    batches = list(trainer.task.dataset("train", training=True).take(2))
    before = _weights(trainer)
    # A scale no float16 gradient survives: the update is skipped and the scale halved.
    optimizer.dynamic_scale.assign(2.0**100)
    out = _run(trainer, batches[:1], 1)
    assert out["steps"] == 1 and np.isfinite(out["loss_sum"])
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(trainer), strict=True))
    assert int(optimizer.iterations.numpy()) == 0
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**99
    # A sane scale: the update happens and counts towards the next growth of the scale.
    optimizer.dynamic_scale.assign(1024.0)
    _run(trainer, batches[1:], 1)
    assert int(optimizer.iterations.numpy()) == 1
    assert int(optimizer.step_counter.numpy()) == 1
    assert float(optimizer.dynamic_scale.numpy()) == 1024.0
    assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(trainer), strict=True))


def _log(run_dir):
    lines = (Path(run_dir) / "train_log.jsonl").read_text().splitlines()
    return [(entry["step"], entry["loss"]) for entry in map(json.loads, lines)]


def _recording_calls(trainer):
    """Record how many updates each call of the compiled loop ran."""
    make, ran = trainer.make_train_loop, []

    def make_recorded():
        loop = make()

        def recorded(iterator, max_steps):
            out = loop(iterator, max_steps)
            ran.append(int(out["steps"]))
            return out

        recorded.compiled = loop
        return recorded

    trainer.make_train_loop = make_recorded
    return ran


def test_steps_per_loop_gives_the_curve_of_one_update_per_call(tmp_path):
    common = dict(steps=30, log_every=5, checkpoint_every=10)
    single = _trainer(tmp_path / "one", steps_per_loop=1, **common)
    batches_per_epoch = single.task.train_batches_per_epoch()
    assert batches_per_epoch < 30 and batches_per_epoch % 4  # epochs end inside a call
    single.train()
    # Four per call, in two legs: 17 (not a multiple of 4), then resumed to 30.
    first = _trainer(tmp_path / "four", steps_per_loop=4, **{**common, "steps": 17})
    ran = _recording_calls(first)
    first.train()
    resumed = _trainer(tmp_path / "four", steps_per_loop=4, **common)
    assert int(resumed.state.step.numpy()) == 17
    ran_resumed = _recording_calls(resumed)
    resumed.train()
    assert max(ran) == 4 and sum(ran) == 17 and sum(ran_resumed) == 13
    assert resumed._compiled_loop.compiled.experimental_get_tracing_count() == 1  # every epoch
    assert int(resumed.state.epoch.numpy()) == int(single.state.epoch.numpy()) >= 2
    assert int(resumed.state.batch_in_epoch.numpy()) == int(single.state.batch_in_epoch.numpy())
    one, four = dict(_log(tmp_path / "one")), dict(_log(tmp_path / "four"))
    assert list(one) == [5, 10, 15, 20, 25, 30] and list(four) == [5, 10, 15, 17, 20, 25, 30]
    # The window logged at 20 starts at the resume (17); the others cover the same steps.
    shared = [5, 10, 15, 25, 30]
    np.testing.assert_allclose([four[s] for s in shared], [one[s] for s in shared], rtol=1e-6)
    for a, b in zip(_weights(resumed), _weights(single), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
