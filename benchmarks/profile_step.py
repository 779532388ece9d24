"""Where the engine's training step spends its time: forward, backward, optimizer, loop.

    python benchmarks/profile_step.py [--size toy|big] [--jit] [--steps N]

Builds the real ``Trainer`` on the toy translation task, takes one fixed batch and times, each
as its own ``tf.function`` on that batch (median of ``--steps`` calls after warm-up):

- ``forward``: ``model(inputs, training=True)`` + the task loss;
- ``forward+backward``: the same under a ``GradientTape`` plus ``tape.gradient``;
- ``engine step``: one update of the engine's compiled train loop (all-reduce, clipping, Adam update);
- ``engine loop``: ``Trainer.train()`` wall time per step, measured by run.py separately.

It also times the output projection + loss alone, and the same forward/backward of the
keras-hub reference model on the same batch padded to the fixed length. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402


def median_time(fn, *args, steps):
    fn(*args)  # trace / compile
    fn(*args)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        out = fn(*args)
        _ = [t.numpy() for t in (out if isinstance(out, list | tuple) else [out])][:1]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="toy")
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import tensorflow as tf

    from transformer_tf.config import config_from_dict
    from transformer_tf.distribute import distribute_dataset
    from transformer_tf.training.trainer import build_trainer

    config = config_from_dict(
        common.translation_config(
            args.size, jit_compile=args.jit, steps=10, log_every=10, num_train=2000
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(config, Path(tmp) / "run", show_progress=False)
        model, task = trainer.model, trainer.task
        dataset = trainer.task.dataset("train", training=True)
        # A typical batch: the median target length among the first 20.
        full = config.training.batch_size
        batches = [b for b in dataset.take(40) if int(tf.shape(b[1])[0]) == full][:20]
        batches.sort(key=lambda b: int(tf.shape(b[1])[1]))
        inputs, labels = batches[len(batches) // 2]
        # Time the engine's update on a batch of the same shape as the others (the one above):
        # its compiled loop, one update per call, reading that batch again and again.
        batch = (inputs, labels)
        loop = trainer.make_train_loop()
        repeated = iter(
            distribute_dataset(trainer.strategy, tf.data.Dataset.from_tensors(batch).repeat())
        )
        one = tf.constant(1, tf.int32)

        def step(_batch):
            return loop(repeated, one)["loss_sum"]

        @tf.function(jit_compile=args.jit or None)
        def forward(inputs, labels):
            logits = model(inputs, training=True)
            return task.loss(labels, logits, 0.0)[0]

        @tf.function(jit_compile=args.jit or None)
        def forward_backward(inputs, labels):
            with tf.GradientTape() as tape:
                logits = model(inputs, training=True)
                loss = task.loss(labels, logits, 0.0)[0]
            grads = tape.gradient(loss, model.trainable_variables)
            return tf.add_n(
                [tf.reduce_sum(tf.convert_to_tensor(g)) for g in grads if g is not None]
            )

        @tf.function(jit_compile=args.jit or None)
        def encoder_only(inputs):
            return model.encode(inputs["source"], training=True)[0]

        @tf.function(jit_compile=args.jit or None)
        def projection_and_loss(hidden, labels):
            with tf.GradientTape() as tape:
                tape.watch(hidden)
                loss = task.loss(labels, model.project(hidden), 0.0)[0]
            return tape.gradient(loss, hidden)

        hidden = tf.random.normal(
            [labels.shape[0], labels.shape[1], model.d_model], dtype=tf.float32
        )
        result = {
            "size": args.size,
            "jit_compile": args.jit,
            "batch_shape": {
                "source": list(inputs["source"].shape),
                "target": list(labels.shape),
            },
            "non_padding_target_tokens": int(tf.reduce_sum(tf.cast(labels != 0, tf.int32))),
            "seconds": {
                "encoder_forward": median_time(encoder_only, inputs, steps=args.steps),
                "forward_with_loss": median_time(forward, inputs, labels, steps=args.steps),
                "forward_backward": median_time(forward_backward, inputs, labels, steps=args.steps),
                "output_projection_and_loss_fwd_bwd": median_time(
                    projection_and_loss, hidden, labels, steps=args.steps
                ),
                "engine_train_step": median_time(lambda b: step(b), batch, steps=args.steps),
            },
            "load_average": os.getloadavg(),
        }
        s = result["seconds"]
        s["optimizer_and_rest"] = s["engine_train_step"] - s["forward_backward"]
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
