"""Regenerate the OpenNMT-tf 2.32 fixture of ``transformer-tf import opennmt-tf``.

Run it from the repository root with OpenNMT-tf's own venv, never this project's::

    make benchmarks/.venv-opennmt/.installed
    benchmarks/.venv-opennmt/bin/python tests/importing/opennmt_tf/make_fixture.py [separate|shared] [--extra-check]

It needs only OpenNMT-tf 2.32.0 (TensorFlow 2.12) and imports nothing of this project;
OpenNMT-tf is never a transformer_tf dependency. CPU only, fixed seeds, TensorFlow op
determinism: two runs give byte-identical files (about 4.5 minutes on 2 cores; ``--extra-check``
adds 10 minutes of wider beam-search checks and records its counts in ``reference.json``).

What it makes in this folder (tests/importing/opennmt_tf/), NOTES.md describes it in full:

* two tiny OpenNMT-tf Transformers (2+2 layers, d_model 32, 4 heads, FFN 64, pre-norm,
  sinusoidal positions) trained for 2500 steps on a toy word-level task (source: 3-7 words of a
  30-word lowercase vocabulary; target: the same words reversed and upper-cased):
  ``separate/`` (own source and target embeddings and output kernel) and ``shared/``
  (``EmbeddingsSharingLevel.ALL``: one vocabulary file and one matrix for the source embedding,
  the target embedding and the output kernel);
* in each: the final checkpoint only (``checkpoint``, ``ckpt-2500.index``,
  ``ckpt-2500.data-00000-of-00001``), the vocabulary file(s), ``config.yml`` (the OpenNMT-tf run
  configuration; the model's constructor arguments under the ``fixture`` key), ``test.src``
  (6 sentences), OpenNMT-tf's own inference on it (``greedy.txt``, ``greedy_scores.txt``,
  ``beam.txt``, ``beam_nbest.txt``, ``beam_nbest4.txt``, ``beam_lp.txt``,
  ``greedy_maxlen3.txt``, ``beam_maxlen3.txt``, settings in ``INFERENCE`` and in
  ``reference.json["inference"]``), ``reference.json`` (ids and teacher-forced log-probabilities
  of 3 pairs, the logits of the first, the training summary, the checks) and ``variables.json``
  (``tf.train.list_variables`` of the checkpoint).

It also checks NOTES.md, and fails if a check fails: ``NumpyTransformer``, a NumPy
re-implementation written from the notes that reads only the checkpoint and the vocabularies,
must reproduce OpenNMT-tf's logits and, with its copy of OpenNMT-tf's greedy and beam searches,
every output file (tokens exactly, scores to 1e-4).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU only, for determinism.

import numpy as np  # noqa: E402
import opennmt  # noqa: E402
import tensorflow as tf  # noqa: E402
import yaml  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 1234
TRAIN_STEPS = 2500
NUM_TRAIN = 2000
NUM_HELDOUT = 200
EXTRA_CHECK = False  # --extra-check: also compare 3 x 600 beam hypotheses of random sources

WORDS = [
    *("ant", "apple", "bell", "bird", "box", "cat", "cup", "dog", "drum", "egg"),
    *("fish", "goat", "hat", "ink", "jam", "kite", "lamp", "moon", "nest", "owl"),
    *("pen", "rose", "sun", "tree", "vase", "wolf", "yarn", "zebra", "frog", "leaf"),
]
assert len(WORDS) == 30 and len(set(WORDS)) == 30

HYPER = dict(
    num_layers=2,
    num_units=32,
    num_heads=4,
    ffn_inner_dim=64,
    dropout=0.1,
    attention_dropout=0.1,
    ffn_dropout=0.1,
    pre_norm=True,
)

# 6 test sources: lengths 1 and 9 are outside the training lengths (3-7), "xylophone" is not
# in any vocabulary.
TEST_SOURCES = [
    "cat dog moon",
    "apple bird zebra fish",
    "sun tree cat xylophone egg",
    "kite lamp moon nest owl pen rose",
    "hat",
    "ant bell box cup drum goat hat ink jam",
]
# (source, target) pairs of reference.json: in-distribution, with an unknown word on both sides,
# and a longer one.
REFERENCE_PAIRS = [0, 2, 3]

PARAMS = {
    "optimizer": "Adam",
    "optimizer_params": {"beta_1": 0.9, "beta_2": 0.98, "epsilon": 1.0e-9},
    "learning_rate": 0.002,
    "decay_type": "InvSqrtDecay",
    "decay_params": {"warmup_steps": 200},
    "label_smoothing": 0.1,
    "average_loss_in_time": False,
}

# The inference settings: output file -> (params, infer options). Everything is explicit so that
# reference.json records exactly what ran (the values are OpenNMT-tf's defaults unless named).
BASE_DECODING = {
    "beam_width": 1,
    "length_penalty": 0.0,
    "coverage_penalty": 0.0,
    "maximum_decoding_length": 250,
    "minimum_decoding_length": 0,
    "sampling_topk": 1,
    "replace_unknown_target": False,
}
INFERENCE = {
    "greedy.txt": ({}, {"n_best": 1, "with_scores": False}),
    "greedy_scores.txt": ({}, {"n_best": 1, "with_scores": True}),
    "beam.txt": ({"beam_width": 4}, {"n_best": 1, "with_scores": True}),
    "beam_nbest.txt": ({"beam_width": 4}, {"n_best": 2, "with_scores": True}),
    "beam_nbest4.txt": ({"beam_width": 4}, {"n_best": 4, "with_scores": True}),
    "beam_lp.txt": (
        {"beam_width": 4, "length_penalty": 1.0},
        {"n_best": 4, "with_scores": True},
    ),
    "greedy_maxlen3.txt": ({"maximum_decoding_length": 3}, {"n_best": 1, "with_scores": True}),
    "beam_maxlen3.txt": (
        {"beam_width": 4, "maximum_decoding_length": 3},
        {"n_best": 2, "with_scores": True},
    ),
}


def target_of(source: str) -> str:
    """The toy task: reverse the words and upper-case them."""
    return " ".join(word.upper() for word in reversed(source.split()))


def make_corpus(rng: random.Random, count: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) for _ in range(count)]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def make_model(shared: bool) -> opennmt.models.Transformer:
    sharing = opennmt.models.EmbeddingsSharingLevel
    return opennmt.models.Transformer(
        **HYPER, share_embeddings=sharing.ALL if shared else sharing.NONE
    )


def seed_everything() -> None:
    random.seed(SEED)
    np.random.seed(SEED)
    tf.random.set_seed(SEED)


def run_config(model_dir: Path, data: dict, params: dict, infer: dict | None = None) -> dict:
    return {
        "model_dir": str(model_dir),
        "data": data,
        "params": params,
        "train": {
            "batch_size": 32,
            "batch_type": "examples",
            "max_step": TRAIN_STEPS,
            "save_checkpoints_steps": TRAIN_STEPS,
            "keep_checkpoint_max": 1,
            "save_summary_steps": 100,
            "sample_buffer_size": -1,  # shuffle the whole corpus
            "length_bucket_width": 1,
            "maximum_features_length": 100,
            "maximum_labels_length": 100,
        },
        "infer": dict(
            {"batch_size": 16, "batch_type": "examples", "length_bucket_width": None},
            **(infer or {}),
        ),
    }


def train(name: str, shared: bool, work: Path, out: Path) -> dict:
    """Trains one model in `work`, copies its final checkpoint to `out`, returns the config."""
    if shared:
        src_vocab = tgt_vocab = "vocab.txt"
    else:
        src_vocab, tgt_vocab = "src_vocab.txt", "tgt_vocab.txt"
    data = {
        "train_features_file": str(work / "train.src"),
        "train_labels_file": str(work / "train.tgt"),
        "source_vocabulary": str(out / src_vocab),
        "target_vocabulary": str(out / tgt_vocab),
    }
    model_dir = work / name
    # The checkpoint's object graph records Keras's automatic layer names ("dense_736"), which
    # count every layer made so far in the process: reset them so that each model's checkpoint
    # is the same whether or not the other model was built first.
    tf.keras.backend.clear_session()
    seed_everything()
    runner = opennmt.Runner(
        lambda: make_model(shared), run_config(model_dir, data, PARAMS), auto_config=False
    )
    _, summary = runner.train(return_summary=True)
    prefix = tf.train.latest_checkpoint(str(model_dir))
    step = int(prefix.rsplit("-", 1)[1])
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copyfile(prefix + suffix, out / f"ckpt-{step}{suffix}")
    # The `checkpoint` file CheckpointManager writes holds timestamps: write it without them.
    (out / "checkpoint").write_text(
        f'model_checkpoint_path: "ckpt-{step}"\nall_model_checkpoint_paths: "ckpt-{step}"\n'
    )
    saved = run_config(Path("."), dict(data), PARAMS)
    saved["data"].update(
        train_features_file="train.src",
        train_labels_file="train.tgt",
        source_vocabulary=src_vocab,
        target_vocabulary=tgt_vocab,
    )
    saved["fixture"] = {
        "model": "opennmt.models.Transformer",
        "share_embeddings": "ALL" if shared else "NONE",
        "position_encoder_class": "SinusoidalPositionEncoder",
        "ffn_activation": "relu",
        "mha_bias": True,
        "output_layer_bias": True,
        **HYPER,
        "note": "train.src/train.tgt are generated by make_fixture.py (seed "
        f"{SEED}) and not kept; model_dir is this folder",
    }
    with open(out / "config.yml", "w") as stream:
        stream.write("# Written by make_fixture.py: the OpenNMT-tf run configuration.\n")
        yaml.safe_dump(saved, stream, sort_keys=False)
    return {
        "data": {
            "source_vocabulary": str(out / src_vocab),
            "target_vocabulary": str(out / tgt_vocab),
        },
        "step": step,
        "summary": {k: _jsonable(v) for k, v in (summary or {}).items()},
    }


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def infer(shared: bool, out: Path, data: dict, features: Path, output: Path, setting) -> dict:
    decoding, infer_options = setting
    params = {**PARAMS, **BASE_DECODING, **decoding}
    seed_everything()
    runner = opennmt.Runner(
        lambda: make_model(shared), run_config(out, data, params, infer_options), auto_config=False
    )
    runner.infer(str(features), predictions_file=str(output))
    return {"params": {k: params[k] for k in BASE_DECODING}, "infer": infer_options}


def restore(shared: bool, out: Path, data: dict):
    seed_everything()
    model = make_model(shared)
    model.initialize(data, params=dict(PARAMS, **BASE_DECODING))
    model.create_variables()
    prefix = tf.train.latest_checkpoint(str(out))
    status = tf.train.Checkpoint(model=model).restore(prefix)
    status.assert_existing_objects_matched().expect_partial()  # the optimizer is not restored
    return model, prefix


def _batch_of_one(features: dict) -> dict:
    return {k: tf.expand_dims(v, 0) for k, v in features.items()}


def teacher_forced(model, source: str, target: str, fast: bool = False) -> dict:
    """Ids as OpenNMT-tf builds them and the log-probabilities of the target outputs.

    The model is called in inference mode (training=False), on a batch of one. `fast` runs the
    same layers as `model(...)` (SequenceToSequence.call) without its beam search.
    """
    features = model.features_inputter.make_features(tf.constant(source))
    labels = model.labels_inputter.make_features(tf.constant(target))
    if fast:
        inputs = _batch_of_one(features)
        encoded = model.encoder(
            model.features_inputter(inputs, training=False),
            sequence_length=model.features_inputter.get_length(inputs),
            training=False,
        )
        outputs = model._decode_target(_batch_of_one(labels), *encoded, training=False)
    else:
        outputs, _ = model(_batch_of_one(features), labels=_batch_of_one(labels), training=False)
    logits = outputs["logits"][0].numpy()
    log_probs = tf.nn.log_softmax(outputs["logits"][0]).numpy()
    ids_out = labels["ids_out"].numpy()
    token_log_probs = log_probs[np.arange(len(ids_out)), ids_out]
    return {
        "source": source,
        "target": target,
        "source_ids": features["ids"].numpy().tolist(),
        "target_input_ids": labels["ids"].numpy().tolist(),
        "target_output_ids": ids_out.tolist(),
        "log_probs": [float(x) for x in token_log_probs.astype(np.float32)],
        "sum_log_prob": float(np.sum(token_log_probs, dtype=np.float64)),
        "_logits": logits,
    }


# ---------------------------------------------------------------------------------------------
# A NumPy re-implementation written from NOTES.md and the checkpoint alone (no OpenNMT-tf code):
# the forward pass, and OpenNMT-tf's greedy and beam searches. The script checks that it
# reproduces OpenNMT-tf's logits and every output file (tokens and scores).


def _sinusoid(length: int, depth: int) -> np.ndarray:
    positions = np.arange(1, length + 1, dtype=np.float64)  # positions start at 1
    increment = math.log(10000.0) / (depth / 2 - 1)
    inv_timescales = np.exp(np.arange(depth // 2, dtype=np.float64) * -increment)
    scaled = positions[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1)  # [sin..., cos...]


class NumpyTransformer:
    """OpenNMT-tf's pre-norm Transformer from the checkpoint's variables, in float64."""

    def __init__(self, prefix: str, shared: bool, out: Path):
        reader = tf.train.load_checkpoint(prefix)
        self.weights = {
            name[len("model/") : -len("/.ATTRIBUTES/VARIABLE_VALUE")]: reader.get_tensor(
                name
            ).astype(np.float64)
            for name, _ in tf.train.list_variables(prefix)
            if name.startswith("model/")
        }
        self.shared = shared
        self.heads = HYPER["num_heads"]
        self.depth = HYPER["num_units"]
        src, tgt = ("vocab.txt", "vocab.txt") if shared else ("src_vocab.txt", "tgt_vocab.txt")
        self.src_vocab = (out / src).read_text().splitlines()
        # <unk> is not in the file: OpenNMT-tf appends it as the last id.
        self.tgt_vocab = (out / tgt).read_text().splitlines() + ["<unk>"]

    def source_ids(self, line: str) -> list[int]:
        index = {token: i for i, token in enumerate(self.src_vocab)}
        return [index.get(token, len(self.src_vocab)) for token in line.split()]

    def _w(self, name: str) -> np.ndarray:
        return self.weights[name]

    def _layer_norm(self, x, name):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-3) * self._w(f"{name}/gamma") + self._w(f"{name}/beta")

    def _dense(self, x, name):
        return x @ self._w(f"{name}/kernel") + self._w(f"{name}/bias")

    def _attention(self, x, memory, name, causal):
        heads, depth = self.heads, self.depth

        def split(t):
            return t.reshape(t.shape[0], heads, depth // heads).transpose(1, 0, 2)

        q = split(self._dense(x, f"{name}/linear_queries")) * (depth // heads) ** -0.5
        k = split(self._dense(memory, f"{name}/linear_keys"))
        v = split(self._dense(memory, f"{name}/linear_values"))
        dot = q @ k.transpose(0, 2, 1)
        if causal:
            dot = np.where(np.tril(np.ones(dot.shape[1:], dtype=bool)), dot, -np.inf)
        dot = np.exp(dot - dot.max(-1, keepdims=True))
        context = (dot / dot.sum(-1, keepdims=True)) @ v
        context = context.transpose(1, 0, 2).reshape(x.shape[0], depth)
        return self._dense(context, f"{name}/linear_output")

    def _ffn(self, x, name):
        return self._dense(np.maximum(self._dense(x, f"{name}/inner"), 0.0), f"{name}/outer")

    def _embedding(self, side: str) -> np.ndarray:
        if side == "target" and not self.shared:
            return self._w("examples_inputter/labels_inputter/embedding")
        return self._w("examples_inputter/features_inputter/embedding")

    def encode(self, source_ids) -> np.ndarray:
        x = self._embedding("source")[source_ids] * self.depth**0.5
        x = x + _sinusoid(len(source_ids), self.depth)
        for i in range(HYPER["num_layers"]):
            p = f"encoder/layers/{i}"
            y = self._layer_norm(x, f"{p}/self_attention/input_layer_norm")
            x = x + self._attention(y, y, f"{p}/self_attention/layer", causal=False)
            x = x + self._ffn(self._layer_norm(x, f"{p}/ffn/input_layer_norm"), f"{p}/ffn/layer")
        return self._layer_norm(x, "encoder/layer_norm")

    def decode(self, memory, target_input_ids) -> np.ndarray:
        """Logits [T, V] of every position of `target_input_ids` (which start with <s>)."""
        embedding = self._embedding("target")
        x = embedding[target_input_ids] * self.depth**0.5
        x = x + _sinusoid(len(target_input_ids), self.depth)
        for i in range(HYPER["num_layers"]):
            p = f"decoder/layers/{i}"
            y = self._layer_norm(x, f"{p}/self_attention/input_layer_norm")
            x = x + self._attention(y, y, f"{p}/self_attention/layer", causal=True)
            y = self._layer_norm(x, f"{p}/attention/0/input_layer_norm")
            x = x + self._attention(y, memory, f"{p}/attention/0/layer", causal=False)
            x = x + self._ffn(self._layer_norm(x, f"{p}/ffn/input_layer_norm"), f"{p}/ffn/layer")
        x = self._layer_norm(x, "decoder/layer_norm")
        bias = self._w("decoder/output_layer/bias")
        if self.shared:  # no output kernel variable: the [V, D] embedding, transposed
            return x @ embedding.T + bias
        return x @ self._w("decoder/output_layer/kernel") + bias  # kernel is [D, V]

    def next_log_probs(self, memory, prefix: list[int]) -> np.ndarray:
        logits = self.decode(memory, [BOS] + prefix)[-1]
        logits = logits - logits.max()
        return logits - np.log(np.exp(logits).sum())

    def search(self, source: str, beam_width: int, max_length: int, length_penalty: float):
        """OpenNMT-tf 2.32's dynamic_decode with GreedySearch or BeamSearch (NOTES.md)."""
        memory = self.encode(self.source_ids(source))
        vocab = len(self.tgt_vocab)
        k = beam_width
        prefixes = [[] for _ in range(k)]
        cum = np.array([0.0] + [-np.inf] * (k - 1))
        finished = np.zeros(k, dtype=bool)
        lengths = np.zeros(k, dtype=np.int64)
        finished_log_probs = np.full(vocab, -np.inf)
        finished_log_probs[EOS] = 0.0  # a finished hypothesis can only repeat </s>, for free
        for _ in range(max_length):
            if finished.all():
                break
            log_probs = np.stack(
                [
                    finished_log_probs if finished[b] else self.next_log_probs(memory, prefixes[b])
                    for b in range(k)
                ]
            )
            total = log_probs + cum[:, None]
            if k == 1:  # GreedySearch: argmax, the sum of the log-probs stays right
                word = int(np.argmax(total[0]))
                if not finished[0]:
                    cum = total[:, word]
                prefixes[0] = prefixes[0] + [word]
                finished[0] |= word == EOS
                continue
            scores = total
            if length_penalty:  # GNMT, on the length *before* this step + 1
                scores = total / (((5.0 + (lengths + 1)) / 6.0) ** length_penalty)[:, None]
            flat = scores.reshape(-1)
            order = np.argsort(-flat, kind="stable")[:k]  # top_k: ties to the lower index
            beams, words = order // vocab, order % vocab
            next_cum = total.reshape(-1)[order]
            parent_finished = finished[beams]
            lengths = np.where(finished, lengths, lengths + 1)[beams]
            # The quirk: a slot whose new parent is finished keeps the score the slot had
            # before this step (not the parent's score) when the parent moved slot.
            cum = np.where(parent_finished, cum, next_cum)
            finished = parent_finished | (words == EOS)
            prefixes = [prefixes[b] + [int(w)] for b, w in zip(beams, words, strict=True)]
        results = []
        for b in range(k):
            ids = prefixes[b][: prefixes[b].index(EOS)] if EOS in prefixes[b] else prefixes[b]
            results.append((float(cum[b]), " ".join(self.tgt_vocab[i] for i in ids)))
        return results


BOS, EOS = 1, 2


# ---------------------------------------------------------------------------------------------


def parse_output(path: Path, with_scores: bool) -> list[tuple[float | None, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if with_scores:
            score, text = line.split(" ||| ", 1)
            rows.append((float(score), text))
        else:
            rows.append((None, line))
    return rows


def check_outputs(reimplementation, model, out: Path, sources: list[str], settings) -> dict:
    """Every output file against the NumPy searches, and the scores against teacher forcing."""
    checks = {}
    for name, (decoding, infer_options) in settings.items():
        params = {**BASE_DECODING, **decoding}
        rows = parse_output(out / name, infer_options["with_scores"])
        count = infer_options["n_best"]
        details = []
        for i, source in enumerate(sources):
            mine = reimplementation.search(
                source,
                params["beam_width"],
                params["maximum_decoding_length"],
                params["length_penalty"],
            )
            for j in range(count):
                score, text = rows[i * count + j]
                assert text == mine[j][1], (name, source, j, text, mine[j])
                if score is None:
                    continue
                assert abs(score - mine[j][0]) < 1e-4, (name, source, j, score, mine[j])
                # The sum of the teacher-forced log-probs of the hypothesis: with </s> when the
                # hypothesis ended before the limit, without when the limit cut it.
                per_token = teacher_forced(model, source, text, fast=True)["log_probs"]
                ended = len(text.split()) < params["maximum_decoding_length"]
                total = float(np.sum(per_token if ended else per_token[:-1], dtype=np.float64))
                details.append(
                    {
                        "line": i * count + j + 1,
                        "score": score,
                        "ends_with_eos": ended,
                        "teacher_forced_sum": total,
                        "equal": abs(total - score) < 1e-4,
                    }
                )
        checks[name] = details
    return checks


def extra_check(shared: bool, out: Path, data: dict, work: Path, model, prefix: str) -> dict:
    """150 random sources (1-10 words), n_best 4, three beam settings, against the NumPy search."""
    rng = random.Random(SEED + 1)
    sources = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 10))) for _ in range(150)]
    write_lines(work / "extra.src", sources)
    settings = {
        "extra_beam.txt": ({"beam_width": 4}, {"n_best": 4, "with_scores": True}),
        "extra_lp.txt": (
            {"beam_width": 4, "length_penalty": 1.0},
            {"n_best": 4, "with_scores": True},
        ),
        "extra_maxlen4.txt": (
            {"beam_width": 4, "maximum_decoding_length": 4, "length_penalty": 0.6},
            {"n_best": 4, "with_scores": True},
        ),
    }
    for filename, setting in settings.items():
        infer(shared, out, data, work / "extra.src", work / filename, setting)
    checks = check_outputs(NumpyTransformer(prefix, shared, out), model, work, sources, settings)
    return {
        name: {
            "hypotheses": len(rows),
            "score_differs_from_teacher_forced_sum": sum(not r["equal"] for r in rows),
        }
        for name, rows in checks.items()
    }


def build(name: str, shared: bool, work: Path) -> None:
    out = HERE / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    specials = ["<blank>", "<s>", "</s>"]
    if shared:
        write_lines(out / "vocab.txt", specials + WORDS + [w.upper() for w in WORDS])
    else:
        write_lines(out / "src_vocab.txt", specials + WORDS)
        write_lines(out / "tgt_vocab.txt", specials + [w.upper() for w in WORDS])

    trained = train(name, shared, work, out)
    data = trained["data"]

    # Held-out greedy accuracy.
    heldout = work / "heldout.src"
    predictions = work / f"{name}.heldout.txt"
    infer(shared, out, data, heldout, predictions, INFERENCE["greedy.txt"])
    expected = (work / "heldout.tgt").read_text().splitlines()
    got = predictions.read_text().splitlines()
    exact = sum(a == b for a, b in zip(expected, got, strict=True)) / len(expected)
    tokens = [(a.split(), b.split()) for a, b in zip(expected, got, strict=True)]
    token_acc = sum(
        sum(x == y for x, y in zip(a, b, strict=False)) / max(len(a), len(b)) for a, b in tokens
    ) / len(tokens)

    write_lines(out / "test.src", TEST_SOURCES)
    inference = {}
    for filename, setting in INFERENCE.items():
        inference[filename] = infer(shared, out, data, out / "test.src", out / filename, setting)

    model, prefix = restore(shared, out, data)
    pairs = [
        teacher_forced(model, TEST_SOURCES[i], target_of(TEST_SOURCES[i])) for i in REFERENCE_PAIRS
    ]
    reimplementation = NumpyTransformer(prefix, shared, out)
    numpy_diffs = []
    for pair in pairs:
        assert reimplementation.source_ids(pair["source"]) == pair["source_ids"]
        memory = reimplementation.encode(pair["source_ids"])
        mine = reimplementation.decode(memory, pair["target_input_ids"])
        numpy_diffs.append(float(np.abs(mine - pair["_logits"]).max()))
    assert max(numpy_diffs) < 1e-4, numpy_diffs
    output_checks = check_outputs(reimplementation, model, out, TEST_SOURCES, INFERENCE)
    extra = extra_check(shared, out, data, work, model, prefix) if EXTRA_CHECK else None

    layer_norm = model.encoder.layer_norm
    reference = {
        "model": "separate embeddings" if not shared else "EmbeddingsSharingLevel.ALL",
        "checkpoint": Path(prefix).name,
        "vocabulary_size": {
            "source": model.features_inputter.vocabulary_size,
            "target": model.labels_inputter.vocabulary_size,
        },
        "layer_norm_epsilon": float(layer_norm.epsilon),
        "training": {
            "steps": trained["step"],
            "train_examples": NUM_TRAIN,
            "heldout_examples": NUM_HELDOUT,
            "heldout_greedy_exact_match": exact,
            "heldout_greedy_token_accuracy": token_acc,
            "summary": trained["summary"],
        },
        "inference": inference,
        "pairs": [{k: v for k, v in p.items() if not k.startswith("_")} for p in pairs],
        "logits_pair0": [[float(x) for x in row] for row in pairs[0]["_logits"].astype(np.float32)],
        "checks": {
            "numpy_reimplementation_max_abs_logit_diff": numpy_diffs,
            "numpy_search_reproduces_every_output_file": True,
            "scores_vs_teacher_forced_sums": output_checks,
            "extra_random_sources": extra,
        },
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    variables = [[n, s] for n, s in tf.train.list_variables(prefix)]
    (out / "variables.json").write_text(json.dumps(variables, indent=1) + "\n")
    print(
        f"{name}: step {trained['step']}, held-out exact match {exact:.3f}, token {token_acc:.3f}"
    )


def main() -> int:
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    rng = random.Random(SEED)
    train_sources = make_corpus(rng, NUM_TRAIN)
    heldout_sources = make_corpus(rng, NUM_HELDOUT)
    global EXTRA_CHECK
    args = sys.argv[1:]
    EXTRA_CHECK = "--extra-check" in args
    only = [a for a in args if not a.startswith("--")] or ["separate", "shared"]
    with tempfile.TemporaryDirectory(prefix="opennmt_fixture_") as tmp:
        work = Path(tmp)
        write_lines(work / "train.src", train_sources)
        write_lines(work / "train.tgt", [target_of(s) for s in train_sources])
        write_lines(work / "heldout.src", heldout_sources)
        write_lines(work / "heldout.tgt", [target_of(s) for s in heldout_sources])
        for name in only:
            build(name, name == "shared", work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
