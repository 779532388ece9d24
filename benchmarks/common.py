"""Shared pieces of the benchmark suite: model sizes, run configs, FLOP counting, synthetic data.

Nothing here imports TensorFlow at module level, so ``run.py`` (the orchestrator) stays light;
every measurement runs in its own subprocess (see ``workers.py``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

# --- Model sizes ----------------------------------------------------------------------------

SIZES = {
    # The toy demo's model (configs/toy_translation.yaml), batch 64.
    "toy": {"num_layers": 2, "d_model": 128, "num_heads": 4, "d_ff": 256, "batch_size": 64},
    # Transformer-base (Vaswani et al.): 6+6 layers, d_model 512; 32 examples per batch (64
    # sentences for translation, see BATCH_SIZES).
    "big": {"num_layers": 6, "d_model": 512, "num_heads": 8, "d_ff": 2048, "batch_size": 32},
}

# Task-specific batch sizes (examples per batch), where they differ from SIZES. Toy sentences
# are ~12 tokens: 32 of them make skinny matmuls (~400 rows) for a d_model-512 model, far from
# the ~25k-token batches Transformer-base is trained with; 64 is still small but less wasteful.
BATCH_SIZES = {("translation", "big"): 64}

# Precisions measured: float32, and mixed bfloat16 (bfloat16 compute, float32 variables), which
# CPUs with AMX / AVX512-BF16 and recent GPUs/TPUs run several times faster.
PRECISIONS = {"float32": "none", "bfloat16": "mixed_bfloat16"}


def batch_size(task: str, size: str) -> int:
    """Examples per batch of a throughput run (engine and reference alike)."""
    return BATCH_SIZES.get((task, size), SIZES[size]["batch_size"])


DROPOUT = 0.1


def translation_config(
    size: str,
    *,
    jit_compile: bool,
    steps: int,
    log_every: int,
    num_train: int,
    precision: str = "float32",
):
    """The engine's config dict for a translation throughput run on the toy task."""
    return {
        "task": "translation",
        "name": f"bench_translation_{size}",
        "model": {**_model(size), "tie_embeddings": True},
        "data": {
            "source": "toy_translation",
            "num_train": num_train,
            "num_validation": 40,
            "num_test": 40,
            "seed": 1234,
            "max_length": 32,
        },
        "training": _training(
            batch_size("translation", size), jit_compile, steps, log_every, precision
        ),
        "decoding": {"beam_size": 4, "max_length": 40},
        "distribute": {"strategy": "cpu"},
    }


def classification_config(
    size: str,
    *,
    jit_compile: bool,
    steps: int,
    log_every: int,
    data_dir: str,
    max_length: int,
    precision: str = "float32",
):
    """The engine's config dict for a classification throughput run on synthetic reviews."""
    return {
        "task": "classification",
        "name": f"bench_classification_{size}",
        "model": {**_model(size), "pooling": "mean", "num_classes": 2},
        "data": {
            "source": "directory",
            "path": data_dir,
            "validation_fraction": 0.05,
            "max_length": max_length,
            "vocab_size": 20000,
            "truncation": "head",
        },
        "training": _training(
            batch_size("classification", size), jit_compile, steps, log_every, precision
        ),
        "distribute": {"strategy": "cpu"},
    }


def _model(size: str) -> dict:
    """The ``model`` section shared by both tasks at one of ``SIZES``."""
    s = SIZES[size]
    keys = ("num_layers", "d_model", "num_heads", "d_ff")
    return {**{k: s[k] for k in keys}, "dropout": DROPOUT}


def _training(
    batch_size: int, jit_compile: bool, steps: int, log_every: int, precision: str
) -> dict:
    # Same optimizer work as the Keras reference: Adam, global-norm clipping at 1.0, no label
    # smoothing (Keras' sparse cross-entropy has none). No checkpoint or validation during the
    # timed steps.
    return {
        "batch_size": batch_size,
        "steps": steps,
        "optimizer": "adam",
        "learning_rate": 1.0e-4,
        "warmup_steps": 100,
        "schedule": "inverse_sqrt",
        "label_smoothing": 0.0,
        "clip_norm": 1.0,
        "jit_compile": jit_compile,
        "mixed_precision": PRECISIONS[precision],
        "checkpoint_every": 1_000_000,
        "keep_checkpoints": 1,
        "eval_every": 1_000_000,
        "log_every": log_every,
        # One update per call, so that the benchmark times each compiled step on its own.
        "steps_per_loop": 1,
        "validation": {"decode": False},
        "seed": 42,
    }


# --- FLOP counting ----------------------------------------------------------------------------

FLOPS_FORMULA = (
    "Training FLOPs = 3 x forward FLOPs (forward + 2x backward), forward = 2 FLOPs per "
    "multiply-add; biases, norms, softmax and embedding lookups ignored (Kaplan et al. 2020, "
    "PaLM appendix B). Per encoder layer and source token: 6*(4d^2 + 2*d*d_ff) + 12*d*S. Per "
    "decoder layer and target token: 6*(6d^2 + 2*d*d_ff) + 12*d*T (causal self-attention, "
    "counted in full) + 12*d*S (cross-attention); per decoder layer and source token: 6*2d^2 "
    "(cross-attention keys/values of the encoder output). Output projection: 6*d*V per target "
    "token. S, T = the example's real (non-padding) source/target lengths; only non-padding "
    "tokens count (model FLOPs, not hardware FLOPs). Classifier: the encoder terms + 6*d*C per "
    "example. MFU = model FLOPs per second / the matmul peak measured in the same run for the "
    "run's precision (float32, or bfloat16 for mixed bfloat16)."
)


def seq2seq_flops(source_lengths, target_lengths, *, layers, d, d_ff, vocab) -> float:
    """Training FLOPs of one batch of the encoder-decoder (see ``FLOPS_FORMULA``)."""
    total = 0.0
    enc_dense = 6.0 * (4 * d * d + 2 * d * d_ff)
    dec_dense = 6.0 * (6 * d * d + 2 * d * d_ff)
    cross_kv = 6.0 * 2 * d * d
    for s, t in zip(source_lengths, target_lengths, strict=True):
        s, t = float(s), float(t)
        encoder = layers * (s * enc_dense + 12.0 * d * s * s)
        decoder = layers * (t * dec_dense + 12.0 * d * t * t + 12.0 * d * t * s + s * cross_kv)
        total += encoder + decoder + 6.0 * d * vocab * t
    return total


def classifier_flops(lengths, *, layers, d, d_ff, num_classes=2) -> float:
    """Training FLOPs of one batch of the encoder classifier (see ``FLOPS_FORMULA``)."""
    enc_dense = 6.0 * (4 * d * d + 2 * d * d_ff)
    total = 0.0
    for s in lengths:
        s = float(s)
        total += layers * (s * enc_dense + 12.0 * d * s * s) + 6.0 * d * num_classes
    return total


# --- Synthetic IMDb-like reviews ----------------------------------------------------------------


def write_synthetic_reviews(root: str | os.PathLike, num_reviews: int, seed: int = 7) -> Path:
    """An ``aclImdb``-shaped folder (``train/{pos,neg}/*.txt``) of random-word reviews.

    Lengths follow a log-normal like IMDb's (median ~175 words, long tail to ~1000), words a
    Zipf-like law over 5,000 invented lowercase words; labels alternate. Timing does not depend
    on what the words mean, only on the lengths and the vocabulary size.
    """
    root = Path(root)
    done = root / ".complete"
    if done.exists() and done.read_text() == str(num_reviews):
        return root
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(5200)})[:5000]
    weights = [1.0 / (rank + 10) for rank in range(len(words))]
    for label in ("pos", "neg"):
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
    for i in range(num_reviews):
        length = max(10, min(1000, int(rng.lognormvariate(5.16, 0.6))))
        text = " ".join(rng.choices(words, weights=weights, k=length))
        label = "pos" if i % 2 else "neg"
        (root / "train" / label / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(text)
    done.write_text(str(num_reviews))
    return root
