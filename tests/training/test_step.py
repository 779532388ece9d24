"""The parts of the update (training/step.py), each on a single Dense layer with fixed weights and
a squared-error loss whose gradient is computed by hand: forward_backward, the accumulator,
reduce, unscale, clip, apply (Adam/AdamW first step, weight decay, loss scaling, the
``after_apply`` hook) and the loop."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from transformer_tf.config import TrainingConfig
from transformer_tf.training.optimizer import make_optimizer
from transformer_tf.training.step import GradientAccumulator, Update

KERNEL = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
BIAS = np.array([0.1, -0.2], np.float32)
X = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]], np.float32)
T = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], np.float32)
X2 = np.array([[-1.0, 0.5], [2.0, 2.0]], np.float32)
T2 = np.array([[1.0, 1.0], [0.0, -1.0]], np.float32)

STRATEGIES = {
    "default": tf.distribute.get_strategy,
    "mirrored": lambda: tf.distribute.MirroredStrategy(["/cpu:0"]),
}


class SquaredError:
    """A task whose loss is the sum of squared errors over the rows it counts."""

    def loss(self, labels, logits, label_smoothing):
        return tf.reduce_sum(tf.square(logits - labels)), tf.cast(tf.shape(labels)[0], tf.float32)


def hand(x, t, kernel=KERNEL, bias=BIAS):
    """(loss sum, count, [d kernel, d bias]) of the squared error, by hand (float64)."""
    x, t = x.astype(np.float64), t.astype(np.float64)
    residual = x @ kernel + bias - t
    grads = [2.0 * x.T @ residual, 2.0 * residual.sum(axis=0)]
    return float((residual**2).sum()), float(len(x)), grads


def adam_first_step(weight, grad, lr, beta_2, epsilon, decay=0.0):
    """Keras' AdamW first update: decay, then lr*sqrt(1-b2)/(1-b1) * m/(sqrt(v)+eps) with
    m = (1-b1) g and v = (1-b2) g^2."""
    weight = weight * (1.0 - lr * decay)
    return weight - lr * np.sqrt(1 - beta_2) * grad / (np.sqrt(1 - beta_2) * np.abs(grad) + epsilon)


def training(**overrides):
    settings = dict(optimizer="adam", learning_rate=0.1, schedule="constant", warmup_steps=0,
                    epsilon=1.0, beta_2=0.98, label_smoothing=0.0, clip_norm=None)  # fmt: skip
    return TrainingConfig(**{**settings, **overrides})


def make_update(strategy=None, loss_scale=False, growth_steps=2000, **overrides):
    strategy = strategy or tf.distribute.get_strategy()
    config = training(**overrides)
    with strategy.scope():
        inputs = keras.Input((2,))
        dense = keras.layers.Dense(2, name="dense")
        model = keras.Model(inputs, dense(inputs))
        dense.kernel.assign(KERNEL)
        dense.bias.assign(BIAS)
        optimizer = make_optimizer(config, total_steps=None)
        if loss_scale:
            optimizer = keras.optimizers.LossScaleOptimizer(
                optimizer, initial_scale=8.0, dynamic_growth_steps=growth_steps
            )
        optimizer.build(model.trainable_variables)
    return Update(strategy, model, optimizer, SquaredError(), config)


def run(strategy, fn, *args):
    """``fn(*args)`` on the (one) replica, traced; its results as local values."""
    out = tf.function(lambda: strategy.run(fn, args=args))()
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], out)


def weights(update):
    return [v.numpy() for v in update.variables]


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "xla"])
def test_forward_backward_is_the_gradient_of_the_loss_sum(jit_compile):
    update = make_update(jit_compile=jit_compile)
    loss_sum, count, grads = update.forward_backward(tf.constant(X), tf.constant(T))
    want_loss, want_count, want_grads = hand(X, T)
    assert float(loss_sum) == pytest.approx(want_loss, rel=1e-6)
    assert float(count) == want_count
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_forward_backward_under_loss_scaling_gives_the_scaled_gradient():
    update = make_update(loss_scale=True)  # scale 8
    loss_sum, _, grads = update.forward_backward(tf.constant(X), tf.constant(T))
    want_loss, _, want_grads = hand(X, T)
    assert float(loss_sum) == pytest.approx(want_loss, rel=1e-6)  # the loss itself is unscaled
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got.numpy(), 8.0 * want, rtol=1e-6)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_the_accumulator_sums_and_resets(name):
    strategy = STRATEGIES[name]()
    variables = [tf.Variable(tf.zeros([2, 2])), tf.Variable(tf.zeros([2]))]
    accumulator = GradientAccumulator(strategy, variables)
    first = (3.0, 2.0, [np.full([2, 2], 1.5, np.float32), np.array([1.0, -2.0], np.float32)])
    second = (4.0, 6.0, [np.eye(2, dtype=np.float32), np.array([0.5, 0.5], np.float32)])

    def add_twice():
        accumulator.add(*first)
        accumulator.add(*second)
        return accumulator.read()

    loss_sum, count, grads = run(strategy, add_twice)
    assert (float(loss_sum), float(count)) == (7.0, 8.0)
    np.testing.assert_array_equal(grads[0].numpy(), np.full([2, 2], 1.5) + np.eye(2))
    np.testing.assert_array_equal(grads[1].numpy(), [1.5, -1.5])

    def reset():
        accumulator.reset()
        return accumulator.read()

    loss_sum, count, grads = run(strategy, reset)
    assert (float(loss_sum), float(count)) == (0.0, 0.0)
    assert all(not g.numpy().any() for g in grads)


def test_reduce_is_one_all_reduce_of_the_sums():
    strategy = STRATEGIES["mirrored"]()
    update = make_update(strategy)
    extended, calls = strategy.extended, []
    original = extended.batch_reduce_to

    def recording(reduce_op, pairs, *args, **kwargs):
        calls.append((reduce_op, len(pairs)))
        return original(reduce_op, pairs, *args, **kwargs)

    extended.batch_reduce_to = recording
    grads = [tf.constant(KERNEL), tf.constant(BIAS)]
    loss_sum, count, reduced = run(strategy, update.reduce, 3.0, 2.0, grads)
    # One replica: the sum is the value; one call for the (loss, count) pair and both gradients.
    assert calls == [(tf.distribute.ReduceOp.SUM, 3)]
    assert (float(loss_sum), float(count)) == (3.0, 2.0)
    np.testing.assert_array_equal(reduced[0].numpy(), KERNEL)
    np.testing.assert_array_equal(reduced[1].numpy(), BIAS)


def test_unscale_divides_by_the_global_count():
    update = make_update()
    grads = update.unscale([tf.constant([2.0, 4.0]), tf.constant([[6.0]])], tf.constant(4.0))
    np.testing.assert_array_equal(grads[0].numpy(), [0.5, 1.0])
    np.testing.assert_array_equal(grads[1].numpy(), [[1.5]])
    # An empty update (count 0) divides by 1, not 0.
    (grads,) = update.unscale([tf.constant([2.0, 4.0])], tf.constant(0.0))
    np.testing.assert_array_equal(grads.numpy(), [2.0, 4.0])


def test_unscale_divides_by_the_loss_scale_too():
    update = make_update(loss_scale=True)  # scale 8
    (grads,) = update.unscale([tf.constant([64.0, -16.0])], tf.constant(4.0))
    np.testing.assert_array_equal(grads.numpy(), [2.0, -0.5])


def test_clip_is_the_global_norm_clip_and_a_no_op_when_unset():
    grads = [tf.constant([3.0, 0.0]), tf.constant([[0.0], [4.0]])]  # global norm 5
    clipped = make_update(clip_norm=2.5).clip(grads)
    want, _ = tf.clip_by_global_norm(grads, 2.5)
    for got, expected in zip(clipped, want, strict=True):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    np.testing.assert_array_equal(clipped[0].numpy(), [1.5, 0.0])
    unclipped = make_update(clip_norm=None).clip(grads)
    assert all(a is b for a, b in zip(unclipped, grads, strict=True))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_apply_is_adams_first_step_and_calls_the_hook(name):
    strategy = STRATEGIES[name]()
    update = make_update(strategy)
    calls = tf.Variable(0)
    update.after_apply.append(lambda: calls.assign_add(1))
    grads = [np.array([[0.5, -2.0], [0.0, 1.0]], np.float32), np.array([3.0, -0.1], np.float32)]
    tf.function(lambda: update.apply([tf.constant(g) for g in grads], tf.constant(True)))()
    for got, weight, grad in zip(weights(update), [KERNEL, BIAS], grads, strict=True):
        np.testing.assert_allclose(got, adam_first_step(weight, grad, 0.1, 0.98, 1.0), rtol=1e-6)
    assert int(update.optimizer.iterations.numpy()) == 1
    assert int(calls.numpy()) == 1


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_apply_decays_kernels_but_not_biases(name):
    update = make_update(STRATEGIES[name](), optimizer="adamw", weight_decay=0.1)
    grads = [np.array([[0.5, -2.0], [0.0, 1.0]], np.float32), np.array([3.0, -0.1], np.float32)]
    tf.function(lambda: update.apply([tf.constant(g) for g in grads], tf.constant(True)))()
    kernel, bias = weights(update)
    np.testing.assert_allclose(
        kernel, adam_first_step(KERNEL, grads[0], 0.1, 0.98, 1.0, decay=0.1), rtol=1e-6
    )
    np.testing.assert_allclose(bias, adam_first_step(BIAS, grads[1], 0.1, 0.98, 1.0), rtol=1e-6)


def test_loss_scaling_skips_non_finite_updates_and_grows_the_scale():
    update = make_update(loss_scale=True, growth_steps=2)
    optimizer = update.optimizer
    calls = tf.Variable(0)
    update.after_apply.append(lambda: calls.assign_add(1))
    apply = tf.function(lambda grads, finite: update.apply(grads, finite))
    bad = [tf.constant([[np.inf, 0.0], [0.0, 0.0]]), tf.constant([0.0, 0.0])]
    apply(bad, optimizer.check_finite(bad))
    for got, weight in zip(weights(update), [KERNEL, BIAS], strict=True):
        np.testing.assert_array_equal(got, weight)
    assert int(optimizer.iterations.numpy()) == 0
    assert float(optimizer.dynamic_scale.numpy()) == 4.0
    assert int(calls.numpy()) == 0
    good = [tf.constant(KERNEL), tf.constant(BIAS)]
    apply(good, optimizer.check_finite(good))
    assert int(optimizer.iterations.numpy()) == 1
    assert (int(optimizer.step_counter.numpy()), float(optimizer.dynamic_scale.numpy())) == (1, 4.0)
    assert int(calls.numpy()) == 1
    assert not np.array_equal(weights(update)[0], KERNEL)
    apply(good, optimizer.check_finite(good))  # the second finite one in a row: the scale doubles
    assert int(optimizer.iterations.numpy()) == 2
    assert (int(optimizer.step_counter.numpy()), float(optimizer.dynamic_scale.numpy())) == (0, 8.0)
    assert int(calls.numpy()) == 2


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_one_update_is_the_clipped_mean_gradient_applied(name):
    strategy = STRATEGIES[name]()
    update = make_update(strategy, clip_norm=1.0)
    loss_sum, count = run(strategy, update.update_one, tf.constant(X), tf.constant(T))
    want_loss, want_count, want_grads = hand(X, T)
    assert (float(loss_sum), float(count)) == (pytest.approx(want_loss, rel=1e-6), want_count)
    mean = [g / want_count for g in want_grads]
    norm = np.sqrt(sum((g**2).sum() for g in mean))
    assert norm > 1.0  # the clip acts
    clipped = [g / norm for g in mean]
    for got, weight, grad in zip(weights(update), [KERNEL, BIAS], clipped, strict=True):
        np.testing.assert_allclose(got, adam_first_step(weight, grad, 0.1, 0.98, 1.0), rtol=1e-6)


def dataset(*batches):
    """The (inputs, labels) batches as given (of different sizes)."""
    out = tf.data.Dataset.from_tensors(batches[0])
    for batch in batches[1:]:
        out = out.concatenate(tf.data.Dataset.from_tensors(batch))
    return out


def test_the_loop_accumulates_micro_batches_and_stops_at_the_end_of_input():
    update = make_update(gradient_accumulation=2)
    iterator = iter(dataset((X, T), (X, T), (X2, T2)))
    out = update.loop(iterator, tf.constant(1))
    want_loss, want_count, want_grads = hand(X, T)
    assert {k: v.numpy().item() for k, v in out.items()} == {
        "steps": 1,
        "batches": 2,
        "loss_sum": pytest.approx(2 * want_loss, rel=1e-6),
        "count": 2 * want_count,
        "diverged_at": -1,
        "end_of_input": False,
    }
    # Two copies of a batch: the mean gradient of one (no clip here).
    for got, weight, grad in zip(weights(update), [KERNEL, BIAS], want_grads, strict=True):
        np.testing.assert_allclose(
            got, adam_first_step(weight, grad / want_count, 0.1, 0.98, 1.0), rtol=1e-6
        )
    out = update.loop(iterator, tf.constant(5))
    assert (int(out["steps"]), int(out["batches"]), bool(out["end_of_input"])) == (1, 1, True)
    assert float(out["count"]) == 2.0
    assert int(update.optimizer.iterations.numpy()) == 2
    assert not any(v.numpy().any() for v in update.accumulator.grads)  # reset after each update


def test_the_loop_stops_after_a_non_finite_loss():
    update = make_update()
    nan = np.full_like(X2, np.nan)
    out = update.loop(iter(dataset((X2, T2), (nan, T2), (X2, T2))), tf.constant(5))
    assert (int(out["steps"]), int(out["batches"]), int(out["diverged_at"])) == (2, 2, 1)
    assert not bool(out["end_of_input"])
