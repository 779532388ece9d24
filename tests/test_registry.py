import inspect

import keras
import pytest

import transformer_tf
from transformer_tf import layers, models
from transformer_tf.errors import UnknownNameError
from transformer_tf.registry import REGISTRIES, Registry, register


def _public_classes():
    for module in (layers, models):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                yield obj


def test_every_public_class_is_registered_under_a_unique_name():
    names = [keras.saving.get_registered_name(cls) for cls in _public_classes()]
    assert all(name.startswith("transformer_tf>") for name in names), names
    assert len(names) == len(set(names))
    for cls, name in zip(_public_classes(), names, strict=True):
        assert keras.saving.get_registered_object(name) is cls


def test_unknown_name_lists_valid_names_and_suggests():
    with pytest.raises(UnknownNameError) as info:
        REGISTRIES["feed_forward"].get("position_wize")
    message = str(info.value)
    assert "registered feed_forward names: position_wise" in message
    assert "Did you mean `position_wise`?" in message


def test_two_classes_under_one_name_is_an_error():
    registry = Registry("feed_forward")

    class A:
        pass

    class B:
        pass

    registry.add("gated", A)
    registry.add("gated", A)  # the same class again is fine
    with pytest.raises(ValueError, match="already taken"):
        registry.add("gated", B)


def test_user_class_default_name_is_module_dot_class():
    @register("feed_forward")
    class MyFeedForward(keras.layers.Layer):
        pass

    name = f"{__name__.rsplit('.', 1)[-1]}.MyFeedForward"
    assert REGISTRIES["feed_forward"].get(name) is MyFeedForward
    assert transformer_tf.register is register


def test_a_class_that_does_not_fit_its_slot_is_a_user_error():
    from transformer_tf.errors import UserError
    from transformer_tf.models import build_model

    @register("feed_forward", name="test_registry.NoActivation")
    class NoActivation(keras.layers.Layer):
        def __init__(self, d_model, d_ff, **kwargs):  # lacks activation/dropout
            super().__init__(**kwargs)

    with pytest.raises(
        UserError, match=r"cannot build feed_forward `test_registry.NoActivation`.*activation"
    ):
        build_model(
            "seq2seq_transformer",
            source_vocab_size=10,
            target_vocab_size=10,
            d_model=8,
            num_heads=2,
            d_ff=8,
            feed_forward="test_registry.NoActivation",
        )


def test_a_class_missing_a_required_argument_is_a_user_error():
    from transformer_tf.errors import UserError
    from transformer_tf.registry import build

    @register("feed_forward", name="test_registry.NeedsGate")
    class NeedsGate(keras.layers.Layer):
        def __init__(self, d_model, d_ff, gate, **kwargs):
            super().__init__(**kwargs)

    with pytest.raises(
        UserError, match=r"cannot build feed_forward `test_registry.NeedsGate`.*gate"
    ):
        build("feed_forward", "test_registry.NeedsGate", 8, 16)


def test_a_bug_inside_a_constructor_is_not_a_user_error():
    from transformer_tf.errors import UserError
    from transformer_tf.registry import build

    @register("feed_forward", name="test_registry.Buggy")
    class Buggy(keras.layers.Layer):
        def __init__(self, d_model, d_ff, activation="relu", dropout=0.0, **kwargs):
            super().__init__(**kwargs)
            self.width = d_model + None  # a TypeError of the class itself, not of its caller

    @register("feed_forward", name="test_registry.Rejects")
    class Rejects(keras.layers.Layer):
        def __init__(self, d_model, d_ff, activation="relu", dropout=0.0, **kwargs):
            super().__init__(**kwargs)
            raise ValueError("internal invariant broken")

    with pytest.raises(TypeError, match="unsupported operand") as info:
        build("feed_forward", "test_registry.Buggy", 8, 16)
    assert not isinstance(info.value, UserError)
    with pytest.raises(ValueError, match="internal invariant") as info:
        build("feed_forward", "test_registry.Rejects", 8, 16)
    assert not isinstance(info.value, UserError)


def test_mixed_precision_model_reloads_with_plain_keras(tmp_path):
    import numpy as np

    keras.config.set_dtype_policy("mixed_bfloat16")
    model = models.Seq2SeqTransformer(20, 20, num_layers=1, d_model=8, num_heads=2, d_ff=16)
    ids = np.array([[4, 5, 6]], "int32")
    expected = model({"source": ids, "target": ids})
    model.save(tmp_path / "m.keras")
    keras.config.set_dtype_policy("float32")
    reloaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    block = reloaded.decoder.blocks[0]
    assert block.feed_forward_layer.inner_dense.compute_dtype == "bfloat16"
    assert block.self_attention.query_dense.compute_dtype == "bfloat16"
    np.testing.assert_array_equal(reloaded({"source": ids, "target": ids}), expected)
