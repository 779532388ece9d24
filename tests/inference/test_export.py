"""``transformer-tf export``: SavedModels that serve raw text without this package.

Tiny runs are trained once per module (a word-level toy run, a SentencePiece run, a classifier);
their exports are loaded together in one fresh Python process that never imports
``transformer_tf``, and must give exactly what the Python inference path gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures import (
    classification_config,
    make_imdb_folder,
    translation_config,
)
from transformer_tf.assembly import load_run
from transformer_tf.cli import main
from transformer_tf.config import config_from_dict
from transformer_tf.data.toy import toy_splits
from transformer_tf.errors import UserError
from transformer_tf.inference import export
from transformer_tf.inference.export import PROVENANCE_DIR, PROVENANCE_FILE, export_run
from transformer_tf.inference.options import DecodingOptions
from transformer_tf.inference.translate import translate
from transformer_tf.training.trainer import train

pytestmark = pytest.mark.slow

# Short limits so that the test sentences hit them: sources keep 15 words, outputs 12 tokens.
WORD_MAX_LENGTH = 16
DECODING_MAX_LENGTH = 12
SP_BEAM_SIZE = 3  # an override of the config's decoding.beam_size (2)

# 30 words: longer than data.max_length, so only its first 15 words are translated.
LONG = " ".join(["the cold tree fetches my sixty two green tables"] * 3 + ["again"] * 3)
WORD_TEXTS = [
    "the tree fetches the eighty one songs without this door",
    "it makes it around my eighty five cold clever men",
    "my sixty two green tables will fetch you through the cold tree",
    "",
    "   ",
    "zzz qqq unknown words",
    LONG,
    " ".join(LONG.split()[: WORD_MAX_LENGTH - 1]),  # what is left of LONG
    " ".join(LONG.split()[:WORD_MAX_LENGTH]),  # one word past the limit
]
SP_TEXTS = [
    "The tree fetches the eighty one songs without this door.",
    "My sixty two green tables will fetch you through the cold tree!",
    "",
    "Ｔｈｅ ｔｒｅｅ — café ☃",  # full-width letters (NFKC), unseen characters
    "The cold tree fetches my sixty two green tables. " * 8,  # far more than 47 pieces
]
CLASSIFICATION_TEXTS = [
    "The movie was great and wonderful.<br /><br />Loved it!",
    "awful, boring plot... I HATED this film",
    "",
    "the story " * 40 + "superb",  # longer than data.max_length (48)
]

# Runs in a fresh interpreter: the exports must load and serve with TensorFlow alone
# (tensorflow_text registers the SentencePiece ops).
CHILD = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    def plain(tensor):
        return [x.decode("utf-8") if isinstance(x, bytes) else x for x in tensor.numpy().tolist()]

    results = {}
    for name, job in json.loads(sys.stdin.read()).items():
        serve = tf.saved_model.load(job["path"]).signatures["serving_default"]
        outputs = serve(text=tf.constant(job["texts"], tf.string))
        empty = serve(text=tf.constant([], tf.string))
        results[name] = {
            "outputs": {k: plain(v) for k, v in outputs.items()},
            "empty": {k: plain(v) for k, v in empty.items()},
        }
    assert "transformer_tf" not in sys.modules, "the export imported transformer_tf"
    print(json.dumps(results))
    """
)


def _train(raw: dict, run_dir: Path) -> Path:
    train(config_from_dict(raw), run_dir, show_progress=False)
    return run_dir


def _translation_training(**overrides) -> dict:
    # Two steps: the weights stay close to random, which gives varied outputs (a few dozen steps
    # on the toy task give the same degenerate output for every input). Equality with the
    # Python path is what is tested, not quality.
    # The final validation without decoding: the export, not the run's validation, is tested.
    return {
        "steps": 2,
        "checkpoint_every": 2,
        "eval_every": 1000,
        "validation": {"decode": False},
        **overrides,
    }


def _reference_translations(run_dir: Path, texts: list[str], beam_size: int) -> list[str]:
    run = load_run(run_dir)
    config = run.config
    options = DecodingOptions(
        max_input_length=config.data.max_length,
        max_output_length=config.decoding.max_length,
        beam_size=beam_size,
        length_penalty=config.decoding.length_penalty,
    )
    return translate(
        run.model, run.task.source_tokenizer, run.task.target_tokenizer, texts, options
    ).texts


def _reference_probabilities(run_dir: Path, texts: list[str]) -> np.ndarray:
    """The classifier's probabilities through the training preprocessing, in Python: the
    tokenizer's Python ``encode`` (Python cleaning), head truncation, padding with 0."""
    run = load_run(run_dir)
    data = run.config.data
    assert data.truncation == "head"
    rows = [ids[: data.max_length] for ids in run.task.tokenizer.encode_batch(texts)]
    ids = np.zeros([len(rows), max(1, *map(len, rows))], np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    logits = run.model(tf.constant(ids, tf.int32), training=False)
    return tf.nn.softmax(logits).numpy()


@pytest.fixture(scope="module")
def word_run(tmp_path_factory) -> Path:
    raw = translation_config(
        data={"num_train": 400, "num_validation": 8, "num_test": 8, "max_length": WORD_MAX_LENGTH},
        training=_translation_training(),
        decoding={"max_length": DECODING_MAX_LENGTH},
    )
    return _train(raw, tmp_path_factory.mktemp("word") / "run")


@pytest.fixture(scope="module")
def sentencepiece_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sentencepiece")
    pairs = toy_splits(300, 0, 0, seed=5)["train"]
    # Capitals and punctuation, which the SentencePiece model must keep.
    (root / "train.src").write_text(
        "".join(f"{s.capitalize()}.\n" for s, _ in pairs), encoding="utf-8"
    )
    (root / "train.tgt").write_text(
        "".join(f"{t.capitalize()}.\n" for _, t in pairs), encoding="utf-8"
    )
    raw = translation_config(
        training=_translation_training(), decoding={"max_length": DECODING_MAX_LENGTH}
    )
    raw["data"] = {
        "source": "parallel_text",
        "splits": {"train": {"source": str(root / "train.src"), "target": str(root / "train.tgt")}},
        "tokenizer": "sentencepiece",
        "vocab_size": 80,
        "max_length": 48,
    }
    return _train(raw, root / "run")


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory) -> Path:
    data = make_imdb_folder(tmp_path_factory.mktemp("imdb"), per_class=20)
    raw = classification_config(data, steps=2, eval_every=1000, checkpoint_every=2)
    # The naive-Bayes path (sort, gather, distinct tokens) must survive the export too.
    raw["model"].update(naive_bayes=True, token_dropout=0.25)
    return _train(raw, tmp_path_factory.mktemp("classification") / "run")


@pytest.fixture(scope="module")
def exports(word_run, sentencepiece_run, classification_run, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("exports")
    # An existing empty directory is a valid target (the rename replaces it).
    (root / "word").mkdir()
    return {
        "word": export_run(word_run, root / "word"),
        "sentencepiece": export_run(
            sentencepiece_run, root / "nested" / "sp", beam_size=SP_BEAM_SIZE
        ),
        "classification": export_run(classification_run, root / "classification"),
    }


@pytest.fixture(scope="module")
def served(exports) -> dict:
    """The outputs of every export, from one fresh process without transformer_tf."""
    jobs = {
        "word": {"path": str(exports["word"]), "texts": WORD_TEXTS},
        "sentencepiece": {"path": str(exports["sentencepiece"]), "texts": SP_TEXTS},
        "classification": {
            "path": str(exports["classification"]),
            "texts": CLASSIFICATION_TEXTS,
        },
    }
    # Not from the repository: only the installed TensorFlow is on the path, and the child checks
    # that transformer_tf was never imported.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        cwd=exports["word"].parent,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _provenance(path: Path) -> dict:
    return json.loads((path / PROVENANCE_DIR / PROVENANCE_FILE).read_text(encoding="utf-8"))


def test_word_export_translates_like_translate(served, word_run):
    expected = _reference_translations(word_run, WORD_TEXTS, beam_size=2)
    assert served["word"]["outputs"]["translation"] == expected
    assert served["word"]["empty"]["translation"] == []
    # The test is only meaningful if decoding did something: varied, non-empty outputs.
    assert len({t for t in expected if t}) >= 3


def test_sentencepiece_export_translates_like_translate(served, sentencepiece_run):
    expected = _reference_translations(sentencepiece_run, SP_TEXTS, beam_size=SP_BEAM_SIZE)
    assert served["sentencepiece"]["outputs"]["translation"] == expected
    assert served["sentencepiece"]["empty"]["translation"] == []
    assert len({t for t in expected if t}) >= 2


def test_long_input_is_truncated_in_graph(served):
    long, prefix, extended = served["word"]["outputs"]["translation"][-3:]
    assert long == prefix == extended
    # The `truncated` output says which inputs were cut: LONG and the one a word too long.
    assert served["word"]["outputs"]["truncated"] == [False] * 6 + [True, False, True]
    assert len(served["word"]["outputs"]["scores"]) == len(WORD_TEXTS)


def test_classification_export_matches_the_model(served, classification_run):
    expected = _reference_probabilities(classification_run, CLASSIFICATION_TEXTS)
    outputs = served["classification"]["outputs"]
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    assert outputs["label"] == expected.argmax(axis=-1).tolist()
    assert served["classification"]["empty"] == {"probabilities": [], "label": []}


def test_provenance_records_the_run_and_the_beam_size(exports, word_run, sentencepiece_run):
    word = _provenance(exports["word"])
    assert word["task"] == "translation"
    assert word["run_dir"] == str(word_run.resolve())
    assert word["step"] == 2 and word["checkpoint"].endswith("ckpt-2")
    assert word["beam_size"] == 2  # the config's decoding.beam_size
    assert word["tokenizer"]["source"] == word["tokenizer"]["target"] == "word"
    assert word["requires"] == ["tensorflow"]
    assert word["versions"]["tensorflow"] == tf.__version__
    sp = _provenance(exports["sentencepiece"])
    assert sp["beam_size"] == SP_BEAM_SIZE  # the override
    assert sp["tokenizer"]["source"] == "sentencepiece" and sp["tokenizer"]["shared"]
    assert "tensorflow_text" in sp["requires"] and "tensorflow_text" in sp["versions"]
    assert _provenance(exports["classification"])["task"] == "classification"


def _listing(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_refuses_a_non_empty_directory(word_run, tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(UserError, match=str(target)):
        export_run(word_run, target)
    assert _listing(target) == {"keep.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary leftovers


def test_cli_refuses_a_non_empty_directory_with_exit_2(word_run, tmp_path, capsys):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine", encoding="utf-8")
    assert main(["export", str(word_run), str(target), "--beam-size", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(target) in err and "Traceback" not in err
    assert _listing(target) == {"keep.txt": b"mine"}


def test_refuses_a_file_and_a_bad_beam_size(word_run, tmp_path):
    path = tmp_path / "file"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="not a directory"):
        export_run(word_run, path)
    with pytest.raises(UserError, match="beam"):
        export_run(word_run, tmp_path / "new", beam_size=0)
    assert not (tmp_path / "new").exists()


def test_a_failed_export_leaves_no_directory(word_run, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export.tf.saved_model, "save", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(word_run, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
