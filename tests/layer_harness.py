"""One harness for every layer: config round trip, symbolic and eager calls, weight counts,
one training step, and a `.keras` save/load that must reproduce the outputs exactly."""

from __future__ import annotations

import keras
import numpy as np


def run_layer_test(
    cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights,
    call_kwargs=None,
    tmp_path=None,
    no_gradient=("key/bias",),
):
    """``no_gradient``: weight paths ending so get exactly zero gradient by design (a key bias
    adds the same logit to every key of a query, and softmax is shift-invariant)."""
    call_kwargs = call_kwargs or {}
    inputs = input_data if isinstance(input_data, (list, tuple)) else [input_data]

    # Config round trip: from_config(get_config()) gives an equal config.
    layer = cls(**init_kwargs)
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"{cls.__name__}.get_config() lacks {key!r}"
    assert cls.from_config(config).get_config() == config

    # Eager call.
    output = layer(*inputs, **call_kwargs)
    assert tuple(output.shape) == tuple(expected_output_shape)
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert not layer.non_trainable_weights

    # Symbolic call with unknown batch and length.
    symbolic_inputs = [keras.Input(shape=x.shape[1:], dtype=str(x.dtype)) for x in inputs]
    symbolic = cls(**init_kwargs)(*symbolic_inputs, **call_kwargs)
    assert symbolic.shape[1:] == tuple(expected_output_shape)[1:]

    # One training step through a functional wrapper moves every weight.
    model = keras.Model(symbolic_inputs, cls(**init_kwargs)(*symbolic_inputs, **call_kwargs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    target = np.random.default_rng(0).normal(size=expected_output_shape).astype("float32")
    model.train_on_batch(inputs, target)
    frozen = [
        w.path
        for b, w in zip(before, model.trainable_weights, strict=True)
        if np.allclose(b, w.numpy()) and not w.path.endswith(no_gradient)
    ]
    assert not frozen, f"weights that received no gradient: {frozen}"

    # .keras save and reload (safe mode) reproduces the outputs.
    if tmp_path is not None:
        path = tmp_path / f"{cls.__name__}.keras"
        model.save(path)
        reloaded = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_allclose(
            reloaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-6
        )
    return output
