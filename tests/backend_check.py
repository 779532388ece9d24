"""Checks that the layers and models compute under one Keras backend (run by test_backends.py).

Run as ``KERAS_BACKEND=jax python tests/backend_check.py jax``: the argument is the backend the
caller expects. Uses only ``keras``, ``numpy`` and ``transformer_tf``; prints ``OK <check>`` for
each check that passed and exits with status 1 and a message on the first failure.
"""

from __future__ import annotations

import os
import sys
import tempfile

import keras
import numpy as np
from keras import ops

import transformer_tf
from transformer_tf.models import Seq2SeqTransformer, TransformerClassifier, TransformerMaskedLM

VOCAB = 20
TINY = dict(num_layers=2, d_model=16, num_heads=2, d_ff=32, dropout=0.1, max_length=32)


class CheckFailed(Exception):
    pass


def ok(name: str) -> None:
    print(f"OK {name}", flush=True)


def numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def close(actual, expected, atol: float, what: str) -> None:
    actual, expected = numpy(actual), numpy(expected)
    expect(actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}")
    error = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    expect(error <= atol, f"{what}: max abs difference {error:.3g} > {atol}")


def ids(rng, batch: int, length: int) -> np.ndarray:
    # Ids 4.. are ordinary tokens (0 pad, 1 unk, 2 bos, 3 eos).
    return rng.integers(4, VOCAB, size=(batch, length)).astype("int32")


def pad(x: np.ndarray, extra: int) -> np.ndarray:
    return np.concatenate([x, np.zeros((x.shape[0], extra), "int32")], axis=1)


def weights_changed(before: list[np.ndarray], model: keras.Model) -> bool:
    after = model.get_weights()
    return any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def run(expected_backend: str) -> None:
    backend = keras.backend.backend()
    expect(backend == expected_backend, f"keras backend is {backend!r}, not {expected_backend!r}")
    ok("backend")

    # The README's claim: layers and models need no TensorFlow. Checked first, because Keras
    # itself imports it where installed (set_random_seed seeds TF too; fit and save may use it).
    if expected_backend != "tensorflow":
        expect("tensorflow" not in sys.modules, "importing transformer_tf imported tensorflow")
    ok("no_tensorflow")

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)

    seq2seq = Seq2SeqTransformer(VOCAB, VOCAB + 3, **TINY)
    source = ids(rng, 2, 5)
    source[1, 3:] = 0  # one shorter sentence, padded
    target = ids(rng, 2, 6)
    logits = seq2seq({"source": source, "target": target})
    expect(tuple(logits.shape) == (2, 6, VOCAB + 3), f"seq2seq logits shape {logits.shape}")
    dtype = keras.backend.standardize_dtype(logits.dtype)
    expect(dtype == "float32", f"seq2seq logits dtype {dtype}")
    ok("seq2seq_forward")

    classifier = TransformerClassifier(VOCAB, num_classes=3, **TINY)
    classifier_cls = TransformerClassifier(
        VOCAB, num_classes=3, pooling="cls", naive_bayes=True, **TINY
    )
    classifier_cls.build()
    # Non-zero naive-Bayes ratios and weights, so that the path is exercised (sort, take, pad).
    classifier_cls.adapt_naive_bayes(rng.integers(0, 5, size=(VOCAB, 3)))
    classifier_cls.naive_bayes_weights.assign(np.linspace(-1, 1, VOCAB).astype("float32"))
    tokens = ids(rng, 3, 7)
    tokens[2, 4:] = 0
    for model in (classifier, classifier_cls):
        out = model(tokens)
        expect(tuple(out.shape) == (3, 3), f"classifier ({model.pooling}) shape {out.shape}")
    ok("classifier_forward")

    masked_lm = TransformerMaskedLM(VOCAB, **TINY)
    lm_logits = numpy(masked_lm(tokens))
    expect(lm_logits.shape == (3, 7, VOCAB), f"masked LM logits shape {lm_logits.shape}")
    real = tokens != 0
    close(numpy(masked_lm(pad(tokens, 3)))[:, :7][real], lm_logits[real], 1e-5, "masked LM padding")
    # Scoring chosen positions only gives those positions' logits of the full call.
    positions = np.array([[0, 2], [1, 1], [6, 0]], "int32")
    chosen = numpy(masked_lm({"token_ids": tokens, "mask_positions": positions}))
    expected = np.take_along_axis(lm_logits, positions[..., None], axis=1)
    close(chosen, expected, 1e-5, "masked LM logits at mask_positions")
    ok("masked_lm_forward")

    base = numpy(seq2seq({"source": source, "target": target}))
    for t in range(target.shape[1] - 1):
        changed = target.copy()
        changed[:, t + 1 :] = ids(rng, 2, target.shape[1] - t - 1)
        out = seq2seq({"source": source, "target": changed})
        close(numpy(out)[:, : t + 1], base[:, : t + 1], 1e-5, f"causality at t={t}")
    ok("causality")

    padded = seq2seq({"source": pad(source, 4), "target": target})
    close(padded, base, 1e-5, "seq2seq logits with padded source")
    padded_target = seq2seq({"source": source, "target": pad(target, 3)})
    close(numpy(padded_target)[:, :6], base, 1e-5, "seq2seq logits with padded target")
    ok("seq2seq_source_padding")

    for model in (classifier, classifier_cls):
        close(model(pad(tokens, 5)), model(tokens), 1e-5, f"classifier ({model.pooling}) padding")
    ok("classifier_padding")

    labels = np.concatenate([target[:, 1:], np.full((2, 1), 3, "int32")], axis=1)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    seq2seq.compile(optimizer="adam", loss=loss)
    before = seq2seq.get_weights()
    history = seq2seq.fit(
        {"source": source, "target": target}, labels, batch_size=2, epochs=1, verbose=0
    )
    value = history.history["loss"][-1]
    expect(np.isfinite(value), f"seq2seq fit loss {value}")
    expect(weights_changed(before, seq2seq), "seq2seq fit left every weight unchanged")
    ok("seq2seq_fit")

    classes = np.array([0, 2, 1], "int32")
    classifier.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    before = classifier.get_weights()
    history = classifier.fit(tokens, classes, batch_size=3, epochs=1, verbose=0)
    value = history.history["loss"][-1]
    expect(np.isfinite(value), f"classifier fit loss {value}")
    expect(weights_changed(before, classifier), "classifier fit left every weight unchanged")
    ok("classifier_fit")

    source_t = ops.convert_to_tensor(source)
    target_t = ops.convert_to_tensor(target)
    encoded, source_mask = seq2seq.encode(source_t)
    full = numpy(seq2seq.decode(target_t, encoded, source_mask))
    close(full, seq2seq({"source": source, "target": target}), 1e-5, "decode vs call")
    cache = seq2seq.init_cache(encoded, 9)
    for t in range(target.shape[1]):
        index = ops.convert_to_tensor(t, "int32")
        step, cache = seq2seq.decode_step(target_t[:, t : t + 1], cache, index, source_mask)
        close(step, full[:, t], 1e-4, f"decode_step at position {t}")
    ok("cached_decoding")

    with tempfile.TemporaryDirectory() as directory:
        # Learned positions and an untied projection: more weights to lose in a round trip.
        model = Seq2SeqTransformer(
            VOCAB, VOCAB + 3, **TINY, positional_encoding="learned", tie_embeddings=False
        )
        inputs = {"source": source, "target": target}
        expected = numpy(model(inputs))
        path = os.path.join(directory, "seq2seq.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path, safe_mode=True)
        expect(type(reloaded) is Seq2SeqTransformer, f"reloaded a {type(reloaded).__name__}")
        close(reloaded(inputs), expected, 1e-6, "reloaded seq2seq logits")
        ok("seq2seq_keras_round_trip")

        path = os.path.join(directory, "classifier.keras")
        classifier_cls.save(path)
        reloaded = keras.saving.load_model(path, safe_mode=True)
        expect(type(reloaded) is TransformerClassifier, f"reloaded a {type(reloaded).__name__}")
        close(reloaded(tokens), classifier_cls(tokens), 1e-6, "reloaded classifier logits")
        ok("classifier_keras_round_trip")

    # Positions applied by self-attention: causal, padding-blind, cached decoding equal to the
    # full call, and a .keras round trip.
    for positions in (
        {"positional_encoding": "relative", "maximum_relative_position": 3},
        {"positional_encoding": "rotary"},
    ):
        name = positions["positional_encoding"]
        model = Seq2SeqTransformer(VOCAB, VOCAB + 3, **TINY, **positions)
        base = numpy(model({"source": source, "target": target}))
        changed = target.copy()
        changed[:, 3:] = ids(rng, 2, target.shape[1] - 3)
        out = model({"source": source, "target": changed})
        close(numpy(out)[:, :3], base[:, :3], 1e-5, f"{name}: causality")
        padded = model({"source": pad(source, 4), "target": pad(target, 2)})
        close(numpy(padded)[:, :6], base, 1e-5, f"{name}: padding")
        encoded, source_mask = model.encode(source_t)
        cache = model.init_cache(encoded, 9)
        for t in range(target.shape[1]):
            index = ops.convert_to_tensor(t, "int32")
            step, cache = model.decode_step(target_t[:, t : t + 1], cache, index, source_mask)
            close(step, base[:, t], 1e-4, f"{name}: decode_step at position {t}")
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, f"{name}.keras")
            model.save(path)
            reloaded = keras.saving.load_model(path, safe_mode=True)
            close(reloaded({"source": source, "target": target}), base, 1e-6, f"{name}: reload")
        ok(f"{name}_positions")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} BACKEND", file=sys.stderr)
        return 2
    try:
        run(argv[1])
    except CheckFailed as error:
        print(f"FAILED ({transformer_tf.__name__}, backend {argv[1]}): {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
