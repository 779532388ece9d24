import numpy as np
from keras import ops

from tests.layer_harness import run_layer_test
from transformer_tf.layers import PositionwiseFeedForward


def test_harness_and_parameter_count(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    run_layer_test(
        PositionwiseFeedForward,
        {"d_model": 8, "d_ff": 32, "activation": "gelu", "dropout": 0.1},
        x,
        expected_output_shape=(2, 3, 8),
        expected_num_trainable_weights=4,
        tmp_path=tmp_path,
    )
    layer = PositionwiseFeedForward(8, 32)
    layer(x)
    assert layer.count_params() == 8 * 32 + 32 + 32 * 8 + 8


def test_positions_are_independent():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 4, 8)).astype("float32")
    layer = PositionwiseFeedForward(8, 16)
    changed = x.copy()
    changed[0, 3] = 100.0
    a, b = ops.convert_to_numpy(layer(x)), ops.convert_to_numpy(layer(changed))
    np.testing.assert_allclose(a[0, :3], b[0, :3], atol=1e-6)
    assert not np.allclose(a[0, 3], b[0, 3])


def test_swish_is_x_times_sigmoid_x():
    from keras import ops

    from transformer_tf.layers.feed_forward import PositionwiseFeedForward

    layer = PositionwiseFeedForward(4, 6, activation="swish")
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    out = ops.convert_to_numpy(layer(x))
    inner = x @ layer.inner_dense.kernel.numpy() + layer.inner_dense.bias.numpy()
    hidden = inner / (1 + np.exp(-inner))
    expected = hidden @ layer.output_dense.kernel.numpy() + layer.output_dense.bias.numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
