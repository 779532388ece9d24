"""The measurements, one per subprocess: ``python benchmarks/workers.py NAME 'JSON params'``.

Each worker prints one line ``RESULT {json}`` on stdout. Running every measurement in a fresh
process keeps XLA caches, dtype policies and allocator state from leaking between them, and
gives each its own peak resident memory (``ru_maxrss``).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --- float32 matmul peak ----------------------------------------------------------------------


def matmul_peak(params: dict) -> dict:
    import tensorflow as tf

    n, repeats, trials = params.get("n", 2048), params.get("repeats", 8), params.get("trials", 5)
    dtype = tf.as_dtype(params.get("dtype", "float32"))
    a = tf.cast(tf.random.normal([n, n]), dtype)
    b = tf.cast(tf.random.normal([n, n]), dtype)

    @tf.function
    def chain(a, b):
        total = tf.zeros([], tf.float32)
        for _ in range(repeats):  # unrolled: `repeats` independent matmuls
            total += tf.cast(tf.reduce_sum(tf.linalg.matmul(a, b)[:1, :1]), tf.float32)
            a = a + tf.cast(1e-6, dtype)
        return total

    chain(a, b).numpy()  # trace + warm up
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        chain(a, b).numpy()
        times.append(time.perf_counter() - start)
    flops = 2.0 * n**3 * repeats
    return {
        "kind": "matmul_peak",
        "dtype": dtype.name,
        "n": n,
        "repeats": repeats,
        "trials": trials,
        "best_gflops": flops / min(times) / 1e9,
        "median_gflops": flops / statistics.median(times) / 1e9,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }


# --- the engine's training throughput -----------------------------------------------------------


def engine_train(params: dict) -> dict:
    import numpy as np

    from transformer_tf.config import config_from_dict
    from transformer_tf.training.trainer import build_trainer

    task_name, size = params["task"], params["size"]
    warmup, windows, window = params["warmup"], params["windows"], params["window"]
    steps = warmup + windows * window
    raw = _engine_config(params, steps, log_every=window)
    config = config_from_dict(raw)
    sizes = common.SIZES[size]

    window_log: list = []
    step_log: list = []
    step_marks: list = []
    instrumented: dict = {}

    def instrument(trainer):
        """The engine, unchanged, plus clocks: per log window and per compiled step."""
        make_loop, log_train = trainer.make_train_loop, trainer.logs.train

        def make_timed_loop():
            compiled = make_loop()

            def timed(iterator, max_steps):
                start = time.perf_counter()
                out = compiled(iterator, max_steps)
                count = float(out["count"].numpy())  # the engine syncs right after
                if int(out["steps"]):  # one update per call (benchmark configs)
                    step_log.append((time.perf_counter() - start, count))
                    step_marks.append((start, time.perf_counter()))
                return out

            timed.python_function = compiled  # for tracing-count inspection
            instrumented["loop"] = compiled
            return timed

        def timed_log(step, loss, learning_rate, count, seconds):
            window_log.append((step, float(count), float(seconds)))
            return log_train(step, loss, learning_rate, count, seconds)

        trainer.make_train_loop = make_timed_loop
        trainer.logs.train = timed_log
        trainer.window_log, trainer.step_log, trainer.step_marks = window_log, step_log, step_marks
        return trainer

    with tempfile.TemporaryDirectory() as tmp:
        setup_start = time.perf_counter()
        trainer = instrument(build_trainer(config, Path(tmp) / "run", show_progress=False))
        setup_seconds = time.perf_counter() - setup_start
        # The same batches the loop will see (same seeds): real lengths for FLOPs and padding.
        batches = _batch_stats(
            trainer.task.dataset("train", training=True, epoch=0), steps, task_name
        )
        model = trainer.model
        params_total = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        vocab = getattr(model, "target_vocab_size", None)
        train_start = time.perf_counter()
        trainer.train()
        train_end = time.perf_counter()
        train_seconds = train_end - train_start
        compiled = instrumented["loop"]
        traces = compiled.experimental_get_tracing_count()

    measured = [w for w in trainer.window_log if w[0] > warmup]
    count = sum(w[1] for w in measured)
    seconds = sum(w[2] for w in measured)
    step_times = [t for t, _ in trainer.step_log]
    measured_steps = trainer.step_log[warmup:steps]
    step_seconds = sum(t for t, _ in measured_steps)
    measured_batches = batches[warmup:steps]
    order_ok = [round(c) for _, c in trainer.step_log[:steps]] == [b["count"] for b in batches]
    flops = _flops(task_name, measured_batches, sizes, vocab)
    padded = sum(b["padded_positions"] for b in measured_batches)
    real = sum(b["real_positions"] for b in measured_batches)
    return {
        "kind": "engine",
        "task": task_name,
        "size": size,
        "jit_compile": params["jit"],
        "precision": params.get("precision", "float32"),
        "batch_size": config.training.batch_size,
        "unit": "tokens" if task_name == "translation" else "examples",
        "steps_measured": len(measured_steps),
        "rate": count / seconds,
        "rate_compiled_step_only": sum(c for _, c in measured_steps) / step_seconds,
        "loop_overhead_share": 1.0 - step_seconds / seconds,
        "seconds_per_step_median": statistics.median(t for t, _ in measured_steps),
        "seconds_per_step_max": max(t for t, _ in measured_steps),
        "first_step_seconds": step_times[0],
        "warmup_step_seconds": step_times[:warmup],
        "setup_seconds": setup_seconds,
        "before_first_step_seconds": trainer.step_marks[0][0] - train_start,
        "after_last_step_seconds": train_end - trainer.step_marks[-1][1],
        "train_call_seconds": train_seconds,
        "model_flops_per_second": flops / seconds,
        "padding_share": 1.0 - real / padded if padded else 0.0,
        "distinct_batch_shapes": len({b["shape"] for b in batches}),
        "traces_of_train_step": traces,
        "batches_match_engine": order_ok,
        "trainable_parameters": params_total,
        "vocab_size": vocab,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _engine_config(params: dict, steps: int, log_every: int) -> dict:
    common_args = {
        "jit_compile": params["jit"],
        "steps": steps,
        "log_every": log_every,
        "precision": params.get("precision", "float32"),
    }
    if params["task"] == "translation":
        return common.translation_config(
            params["size"], num_train=params["num_train"], **common_args
        )
    return common.classification_config(
        params["size"],
        data_dir=params["data_dir"],
        max_length=params["max_length"],
        **common_args,
    )


def _batch_stats(dataset, steps: int, task_name: str) -> list[dict]:

    stats = []
    for inputs, labels in dataset.take(steps).as_numpy_iterator():
        if task_name == "translation":
            source_lengths = (inputs["source"] != 0).sum(axis=1)
            target_lengths = (labels != 0).sum(axis=1)
            stats.append(
                {
                    "source_lengths": source_lengths.tolist(),
                    "target_lengths": target_lengths.tolist(),
                    "count": int(target_lengths.sum()),
                    "shape": (inputs["source"].shape, labels.shape),
                    "real_positions": int(source_lengths.sum() + target_lengths.sum()),
                    "padded_positions": int(inputs["source"].size + labels.size),
                }
            )
        else:
            lengths = (inputs != 0).sum(axis=1)
            stats.append(
                {
                    "lengths": lengths.tolist(),
                    "count": int(len(labels)),
                    "shape": inputs.shape,
                    "real_positions": int(lengths.sum()),
                    "padded_positions": int(inputs.size),
                }
            )
    return stats


def _flops(task_name: str, batches: list[dict], sizes: dict, vocab) -> float:
    kwargs = {"layers": sizes["num_layers"], "d": sizes["d_model"], "d_ff": sizes["d_ff"]}
    if task_name == "translation":
        return sum(
            common.seq2seq_flops(b["source_lengths"], b["target_lengths"], vocab=vocab, **kwargs)
            for b in batches
        )
    return sum(common.classifier_flops(b["lengths"], **kwargs) for b in batches)


# --- the Keras / keras-hub reference ------------------------------------------------------------


def reference_train(params: dict) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf
    from reference import build_reference_classifier, build_reference_seq2seq

    from transformer_tf.config import config_from_dict
    from transformer_tf.data.special_tokens import BOS_ID, EOS_ID
    from transformer_tf.run import RunDir
    from transformer_tf.tasks import make_task

    task_name, size = params["task"], params["size"]
    warmup, windows, window = params["warmup"], params["windows"], params["window"]
    steps = warmup + windows * window
    sizes = common.SIZES[size]
    batch_size = common.batch_size(task_name, size)
    keras.utils.set_random_seed(42)
    if params.get("precision", "float32") == "bfloat16":
        # As the Keras mixed-precision guide does it; the logits layer stays float32.
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    config = config_from_dict(_engine_config(params, steps, log_every=window))
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as tmp:
        # The engine's own task, so that the reference trains on the very same token ids.
        task = make_task(config, RunDir(Path(tmp) / "run"))
        task.prepare(create=True, write=False)
        if task_name == "translation":
            source_ids, target_ids = task.encoded("train", training=True)
            # keras-io style: every batch padded to one fixed length (the longest example).
            length = max(max(len(x) for x in source_ids), max(len(y) for y in target_ids) + 1)
            order = rng.permutation(len(source_ids))[: steps * batch_size]
            source = np.zeros([len(order), length], np.int32)
            target = np.zeros([len(order), length], np.int32)
            labels = np.zeros([len(order), length], np.int32)
            for row, i in enumerate(order):
                x, y = source_ids[i], target_ids[i]
                source[row, : len(x)] = x
                target[row, : len(y) + 1] = [BOS_ID, *y]
                labels[row, : len(y) + 1] = [*y, EOS_ID]
            model = build_reference_seq2seq(
                source_vocab=task.source_tokenizer.vocab_size,
                target_vocab=task.target_tokenizer.vocab_size,
                length=length,
                dropout=common.DROPOUT,
                **{k: sizes[k] for k in ("num_layers", "d_model", "num_heads", "d_ff")},
            )
            x_all = {"source": source, "target": target}
            counts = (labels != 0).reshape(steps, batch_size, -1).sum(axis=(1, 2))
            source_lengths = (source != 0).sum(axis=1).reshape(steps, batch_size)
            target_lengths = (labels != 0).sum(axis=1).reshape(steps, batch_size)
            real = int((source != 0).sum() + (labels != 0).sum())
            padded = source.size + labels.size
            vocab = task.target_tokenizer.vocab_size
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
            y_all = labels
        else:
            ids, y_all = _classification_arrays(task, params["max_length"])
            order = rng.permutation(len(ids))[: steps * batch_size]
            ids, y_all = ids[order], y_all[order]
            length = ids.shape[1]
            model = build_reference_classifier(
                vocab=task.tokenizer.vocab_size,
                length=length,
                dropout=common.DROPOUT,
                **{k: sizes[k] for k in ("num_layers", "d_model", "num_heads", "d_ff")},
            )
            x_all = ids
            counts = np.full([steps], batch_size)
            lengths = (ids != 0).sum(axis=1).reshape(steps, batch_size)
            real, padded = int((ids != 0).sum()), ids.size
            vocab = None
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    optimizer = keras.optimizers.Adam(
        learning_rate=1e-4, beta_1=0.9, beta_2=0.98, epsilon=1e-9, global_clipnorm=1.0
    )
    model.compile(optimizer=optimizer, loss=loss, jit_compile=params["jit"])
    dataset = tf.data.Dataset.from_tensor_slices((x_all, y_all)).batch(batch_size)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    clock = Clock()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    ends = [clock.start, *clock.ends]
    seconds = ends[steps] - ends[warmup]
    step_times = [b - a for a, b in itertools_pairwise(ends)]
    count = float(counts[warmup:steps].sum())
    kwargs = {"layers": sizes["num_layers"], "d": sizes["d_model"], "d_ff": sizes["d_ff"]}
    if task_name == "translation":
        flops = sum(
            common.seq2seq_flops(source_lengths[i], target_lengths[i], vocab=vocab, **kwargs)
            for i in range(warmup, steps)
        )
    else:
        flops = sum(common.classifier_flops(lengths[i], **kwargs) for i in range(warmup, steps))
    return {
        "kind": "reference",
        "task": task_name,
        "size": size,
        "jit_compile": params["jit"],
        "precision": params.get("precision", "float32"),
        "batch_size": batch_size,
        "unit": "tokens" if task_name == "translation" else "examples",
        "steps_measured": steps - warmup,
        "rate": count / seconds,
        "fixed_length": int(length),
        "seconds_per_step_median": statistics.median(step_times[warmup:]),
        "first_step_seconds": step_times[0],
        "model_flops_per_second": flops / seconds,
        "padding_share": 1.0 - real / padded,
        "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "peak_rss_mb": _peak_rss_mb(),
    }


def itertools_pairwise(values):
    return zip(values[:-1], values[1:], strict=True)


def _classification_arrays(task, max_length: int):
    """All training examples of the engine's classification pipeline, padded to max_length."""
    import numpy as np

    rows, labels = [], []
    for ids, y in task.dataset("train", training=False).unbatch().as_numpy_iterator():
        rows.append(ids[ids != 0])
        labels.append(y)
    out = np.zeros([len(rows), max_length], np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row[:max_length]
    return out, np.asarray(labels, np.int32)


# --- decoding -----------------------------------------------------------------------------------


class EosSuppressed:
    """A decoding model that delegates to ``model`` but can never pick EOS (logit - 1e4), so
    every row decodes exactly ``max_length`` tokens."""

    def __init__(self, model):
        from transformer_tf.data.special_tokens import EOS_ID

        self.model = model
        self.max_length = model.max_length
        self.eos = EOS_ID

    def _bias(self, logits):
        import tensorflow as tf

        vocab = tf.shape(logits)[-1]
        return logits - 1e4 * tf.cast(tf.equal(tf.range(vocab), self.eos), logits.dtype)

    def encode(self, source_ids, training=False):
        return self.model.encode(source_ids, training=training)

    def init_cache(self, encoder_output, max_length):
        return self.model.init_cache(encoder_output, max_length)

    def decode_step(self, token_ids, cache, index, source_mask):
        logits, cache = self.model.decode_step(token_ids, cache, index, source_mask)
        return self._bias(logits), cache

    def decode(self, target_ids, encoder_output, source_mask, training=False):
        return self._bias(
            self.model.decode(target_ids, encoder_output, source_mask, training=training)
        )


def decoding(params: dict) -> dict:
    import keras
    import numpy as np

    from transformer_tf.inference.search import beam_search, greedy_search
    from transformer_tf.models import build_model

    keras.utils.set_random_seed(0)
    size = common.SIZES[params.get("size", "toy")]
    vocab = params.get("vocab", 320)
    model = build_model(
        "seq2seq_transformer",
        source_vocab_size=vocab,
        target_vocab_size=vocab,
        num_layers=size["num_layers"],
        d_model=size["d_model"],
        num_heads=size["num_heads"],
        d_ff=size["d_ff"],
        dropout=0.0,
        max_length=max(params["lengths"]) + 1,
    )
    model.build()
    wrapped = EosSuppressed(model)
    batch, source_length = params["batch"], params["source_length"]
    rng = np.random.default_rng(0)
    source = rng.integers(4, vocab, size=[batch, source_length]).astype(np.int32)
    results = []
    for algorithm in ("greedy", "beam4"):
        for use_cache in (True, False):
            for length in params["lengths"]:
                if not use_cache and length > params["max_uncached_length"]:
                    continue

                def run(length=length, algorithm=algorithm, use_cache=use_cache):
                    if algorithm == "greedy":
                        return greedy_search(wrapped, source, length, use_cache=use_cache)
                    return beam_search(wrapped, source, length, beam_size=4, use_cache=use_cache)[0]

                start = time.perf_counter()
                ids = run().numpy()
                first = time.perf_counter() - start
                assert ids.shape == (batch, length), ids.shape  # full length: EOS suppressed
                times = []
                for _ in range(params["repeats"]):
                    start = time.perf_counter()
                    run().numpy()
                    times.append(time.perf_counter() - start)
                best = min(times)
                results.append(
                    {
                        "algorithm": algorithm,
                        "use_cache": use_cache,
                        "length": length,
                        "seconds": best,
                        "seconds_median": statistics.median(times),
                        "first_call_seconds": first,
                        "tokens_per_second": batch * length / best,
                    }
                )
                print(
                    f"# decode {algorithm} cache={use_cache} L={length}: {best:.3f}s",
                    file=sys.stderr,
                )
    return {"kind": "decoding", "batch": batch, "source_length": source_length, "results": results}


# --- memory of a translation run ----------------------------------------------------------------


def translate_memory(params: dict) -> dict:
    """Beam-4 translation of toy sentences with a fresh toy model: the peak RSS of the process."""
    import keras

    from transformer_tf.assembly import assemble
    from transformer_tf.config import config_from_dict
    from transformer_tf.inference.options import DecodingOptions
    from transformer_tf.inference.translate import translate
    from transformer_tf.run import RunDir

    keras.utils.set_random_seed(0)
    config = config_from_dict(
        common.translation_config("toy", jit_compile=False, steps=1, log_every=1, num_train=2000)
    )
    with tempfile.TemporaryDirectory() as tmp:
        assembly = assemble(config, RunDir(Path(tmp) / "run"), create=True, write=False)
        task, model = assembly.task, assembly.model
        texts = [s for s, _ in task.raw_splits["train"][: params["sentences"]]]
        start = time.perf_counter()
        options = DecodingOptions(
            max_input_length=32, max_output_length=40, beam_size=4, batch_size=64
        )
        outputs = translate(model, task.source_tokenizer, task.target_tokenizer, texts, options)
        seconds = time.perf_counter() - start
    return {
        "kind": "translate_memory",
        "sentences": len(outputs),
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
    }


def import_baseline(params: dict) -> dict:
    """Peak RSS after importing TensorFlow, Keras and transformer_tf (the floor of every run)."""
    import keras  # noqa: F401
    import tensorflow as tf  # noqa: F401

    import transformer_tf.training.trainer  # noqa: F401

    return {"kind": "import_baseline", "peak_rss_mb": _peak_rss_mb()}


WORKERS = {
    "matmul_peak": matmul_peak,
    "engine_train": engine_train,
    "reference_train": reference_train,
    "decoding": decoding,
    "translate_memory": translate_memory,
    "import_baseline": import_baseline,
}


def versions() -> dict:
    import platform

    import keras
    import tensorflow as tf

    try:
        import keras_hub

        hub = keras_hub.__version__
    except ImportError:
        hub = None
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_hub": hub,
    }


WORKERS["versions"] = lambda params: {"kind": "versions", **versions()}


if __name__ == "__main__":
    name, raw = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "{}"
    result = WORKERS[name](json.loads(raw))
    print("RESULT " + json.dumps(result, default=str), flush=True)
