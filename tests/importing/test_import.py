"""``transformer-tf import``: OpenNMT-tf and Marian (OPUS-MT) models against their own outputs.

The fixtures were made once with the toolkits themselves (tests/importing/*/make_fixture.py, in
scratch venvs; neither toolkit is a dependency): OpenNMT-tf 2.32's checkpoints with its
``onmt-main infer`` output and teacher-forced log-probabilities, and a Hugging Face
``MarianMTModel`` with its logits and greedy output (tests/importing/*/NOTES.md). The
OpenNMT-tf files compared are those its beam search prints correctly: ``beam_nbest4.txt`` and
``beam_lp.txt`` also hold a few scores that OpenNMT-tf gets wrong (a finished hypothesis that
changes slot keeps a stale score, OpenNMT-tf issue #432), which ours do not copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.fixtures import write_config
from transformer_tf.assembly import load_run
from transformer_tf.cli import main

# The commands load an imported run once per set of arguments (tests/shared_runs.py): the same
# model object, whose traced decoders later commands with the same options reuse. No test
# writes into an imported run (the one that tries is refused and checks that nothing changed).
pytestmark = pytest.mark.usefixtures("load_each_run_once")

FIXTURES = Path(__file__).parent
ONMT = FIXTURES / "opennmt_tf"
MARIAN = FIXTURES / "marian"


def _import_opennmt(variant: str, run_dir: Path, *extra: str) -> int:
    model = ONMT / variant
    vocab = ["--source-vocab", str(model / "src_vocab.txt"), "--target-vocab", str(model / "tgt_vocab.txt")]  # fmt: skip
    if variant == "shared":
        vocab = ["--source-vocab", str(model / "vocab.txt"), "--target-vocab", str(model / "vocab.txt")]  # fmt: skip
    return main(["import", "opennmt-tf", str(model), "--run-dir", str(run_dir), *vocab, "--num-heads", "4", *extra])  # fmt: skip


@pytest.fixture(scope="module", params=["separate", "shared"])
def opennmt_run(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("onmt") / "run"
    assert _import_opennmt(request.param, run_dir) == 0
    return request.param, run_dir


def _scored(lines: list[str]) -> list[tuple[float, str]]:
    return [(float(score), text) for score, text in (line.split(" ||| ") for line in lines)]


def _translate(run_dir, source_file, *options, capsys) -> list[str]:
    capsys.readouterr()
    assert main(["translate", str(run_dir), "--input", str(source_file), *options]) == 0
    return capsys.readouterr().out.splitlines()


def test_opennmt_tf_translations_and_scores_are_its_own(opennmt_run, capsys):
    variant, run_dir = opennmt_run
    model = ONMT / variant
    test = model / "test.src"
    greedy = _translate(run_dir, test, "--beam-size", "1", capsys=capsys)
    assert greedy == (model / "greedy.txt").read_text().splitlines()
    for options, expected in (
        (["--beam-size", "1", "--with-scores"], "greedy_scores.txt"),
        (["--beam-size", "4", "--with-scores"], "beam.txt"),
        (["--beam-size", "4", "--n-best", "2", "--with-scores"], "beam_nbest.txt"),
    ):
        ours = _scored(_translate(run_dir, test, *options, capsys=capsys))
        theirs = _scored((model / expected).read_text().splitlines())
        assert [t for _, t in ours] == [t for _, t in theirs], expected
        np.testing.assert_allclose([s for s, _ in ours], [s for s, _ in theirs], atol=1e-4)


def test_opennmt_tf_teacher_forced_log_probabilities(opennmt_run):
    variant, run_dir = opennmt_run
    reference = json.loads((ONMT / variant / "reference.json").read_text())
    run = load_run(run_dir)
    source, target = run.task.source_tokenizer, run.task.target_tokenizer
    vocab_size = reference["vocabulary_size"]["target"]
    # Their ids -> ours: <blank> 0 -> 0, <s> 1 -> 2, </s> 2 -> 3, token k -> k + 1, <unk> -> 1.
    ours_of = np.array([0, 2, 3, *range(4, vocab_size), 1])
    for i, pair in enumerate(reference["pairs"]):
        source_ids = source.encode(pair["source"])
        assert source_ids == [int(ours_of[j]) for j in pair["source_ids"]]
        target_in = [int(ours_of[j]) for j in pair["target_input_ids"]]
        target_out = [int(ours_of[j]) for j in pair["target_output_ids"]]
        assert target_out == [*target.encode(pair["target"]), 3]
        inputs = {"source": np.array([source_ids], "int32"), "target": np.array([target_in], "int32")}  # fmt: skip
        logits = run.model(inputs, training=False).numpy()[0].astype("float64")
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        picked = log_probs[np.arange(len(target_out)), target_out]
        np.testing.assert_allclose(picked, pair["log_probs"], atol=1e-4)
        if i == 0:
            theirs = np.array(reference["logits_pair0"])  # (length, vocab) in their id order
            np.testing.assert_allclose(logits[:, ours_of], theirs, atol=1e-4)


def test_opennmt_tf_import_with_data_evaluates(tmp_path, capsys):
    """With --config the run has data: evaluating it on references equal to its own greedy
    translations gives exact match 1 and BLEU 100."""
    model = ONMT / "separate"
    shutil.copy(model / "test.src", tmp_path / "test.src")
    shutil.copy(model / "greedy.txt", tmp_path / "test.tgt")
    config = {
        "task": "translation",
        "data": {
            "source": "parallel_text",
            "tokenizer": "word",
            "splits": {
                "train": {"source": "test.src", "target": "test.tgt"},
                "test": {"source": "test.src", "target": "test.tgt"},
            },
        },
        "decoding": {"beam_size": 1, "max_length": 20},
    }
    path = write_config(tmp_path / "data.yaml", config)
    assert _import_opennmt("separate", tmp_path / "run", "--config", str(path)) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["positional_encoding"] == "opennmt_sinusoidal"
    assert saved["data"]["source"] == "parallel_text" and saved["decoding"]["max_length"] == 20
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(tmp_path / "run"), "--split", "test", "--output-json", str(out)]) == 0  # fmt: skip
    scores = json.loads(out.read_text())
    assert scores["exact_match"] == 1.0 and scores["bleu"] == pytest.approx(100.0)


def test_an_imported_run_without_data_says_how_to_evaluate(opennmt_run, capsys):
    _, run_dir = opennmt_run
    assert main(["evaluate", str(run_dir)]) == 2
    assert "has no data (data.source: none" in capsys.readouterr().err


def test_an_imported_run_is_not_trained_in_place(opennmt_run, tmp_path, capsys):
    _, run_dir = opennmt_run
    config = write_config(
        tmp_path / "c.yaml", yaml.safe_load((run_dir / "config.yaml").read_text())
    )
    before = sorted(p.name for p in run_dir.rglob("*"))
    assert main(["train", str(config), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "was imported from opennmt-tf" in err and f"--init-from {run_dir}" in err
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def _refused(capsys, run_dir: Path, code: int) -> str:
    assert code == 2
    assert not run_dir.exists()
    return capsys.readouterr().err


def test_opennmt_tf_bad_input(tmp_path, capsys):
    model = ONMT / "separate"
    run_dir = tmp_path / "run"
    err = _refused(capsys, run_dir, main(["import", "opennmt-tf", str(tmp_path / "nothing"), "--run-dir", str(run_dir), "--source-vocab", str(model / "src_vocab.txt"), "--target-vocab", str(model / "tgt_vocab.txt")]))  # fmt: skip
    assert "not an OpenNMT-tf checkpoint" in err
    # A partial checkpoint: its data file is missing.
    partial = tmp_path / "partial"
    shutil.copytree(model, partial)
    for data in partial.glob("ckpt-*.data-*"):
        data.unlink()
    err = _refused(capsys, run_dir, main(["import", "opennmt-tf", str(partial), "--run-dir", str(run_dir), "--source-vocab", str(model / "src_vocab.txt"), "--target-vocab", str(model / "tgt_vocab.txt")]))  # fmt: skip
    assert "cannot read the checkpoint (partial or damaged?)" in err
    # A vocabulary that is not the model's: one token short.
    short = tmp_path / "short.txt"
    short.write_text("\n".join((model / "tgt_vocab.txt").read_text().splitlines()[:-1]) + "\n")
    err = _refused(capsys, run_dir, main(["import", "opennmt-tf", str(model), "--run-dir", str(run_dir), "--source-vocab", str(model / "src_vocab.txt"), "--target-vocab", str(short)]))  # fmt: skip
    assert f"--target-vocab {short} has 32 entries" in err and "the checkpoint's have 34" in err
    # Not an OpenNMT-tf vocabulary at all.
    other = tmp_path / "other.txt"
    other.write_text("<pad>\n<unk>\nthe\n")
    err = _refused(capsys, run_dir, main(["import", "opennmt-tf", str(model), "--run-dir", str(run_dir), "--source-vocab", str(other), "--target-vocab", str(model / "tgt_vocab.txt")]))  # fmt: skip
    assert "an OpenNMT-tf vocabulary starts with <blank>, <s>, </s>" in err
    err = _refused(capsys, run_dir, main(["import", "opennmt-tf", str(model), "--run-dir", str(run_dir)]))  # fmt: skip
    assert "--source-vocab is required" in err
    # An existing directory is never written into.
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("mine")
    assert _import_opennmt("separate", run_dir) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in run_dir.iterdir()] == ["keep.txt"]


# --- Marian (OPUS-MT, the Hugging Face layout) -------------------------------------------------


@pytest.fixture(scope="module")
def marian_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("marian") / "run"
    assert main(["import", "marian", str(MARIAN / "model"), "--run-dir", str(run_dir)]) == 0
    return run_dir


def _marian_to_ours() -> np.ndarray:
    """For each Marian id, our id (its pad -> our <pad>; our <s> is its pad too)."""
    reference = json.loads((MARIAN / "reference.json").read_text())
    vocab = json.loads((MARIAN / "model" / "vocab.json").read_text())
    pad, eos, unk = reference["pad_token_id"], reference["eos_token_id"], reference["unk_token_id"]
    ours = np.zeros(len(vocab), np.int64)
    ours[pad], ours[unk], ours[eos] = 0, 1, 3
    others = [i for i in range(len(vocab)) if i not in (pad, unk, eos)]
    ours[others] = np.arange(4, 4 + len(others))
    return ours


def test_marian_logits_and_tokens_are_its_own(marian_run):
    reference = json.loads((MARIAN / "reference.json").read_text())
    ours_of = _marian_to_ours()
    run = load_run(marian_run)
    assert run.config.model.positional_encoding == "marian_sinusoidal"
    assert run.config.model.activation == "swish" and run.config.model.output_bias
    for pair in reference["pairs"]:
        # The tokenizers: pieces looked up in the joint vocabulary, </s> after the source.
        assert run.task.source_tokenizer.encode(pair["source"]) == [int(ours_of[i]) for i in pair["input_ids"]]  # fmt: skip
        labels = [int(ours_of[i]) for i in pair["labels"]]
        assert [*run.task.target_tokenizer.encode(pair["target"]), 3] == labels
        inputs = {
            "source": np.array([ours_of[pair["input_ids"]]], "int32"),
            "target": np.array([[2, *labels[:-1]]], "int32"),  # our BOS is Marian's start
        }
        logits = run.model(inputs, training=False).numpy()[0]
        np.testing.assert_allclose(logits[:, ours_of], np.array(pair["logits"]), atol=1e-4)


def test_marian_greedy_output_is_its_own(marian_run, capsys):
    generate = json.loads((MARIAN / "reference.json").read_text())["generate"]
    # Marian forces </s> as its 12th token; ours generates up to 11 tokens and stops there.
    capsys.readouterr()
    assert main(["translate", str(marian_run), "--beam-size", "1", "--set", "decoding.max_length=11", *generate["sources"]]) == 0  # fmt: skip
    assert capsys.readouterr().out.splitlines() == generate["text"]
    run = load_run(marian_run, overrides=["decoding.max_length=11"])
    from transformer_tf.inference.options import DecodingOptions
    from transformer_tf.inference.translate import translate

    ours_of = _marian_to_ours()
    options = DecodingOptions.from_config(run.config, n_best=1, beam_size=1)
    source, target = run.task.source_tokenizer, run.task.target_tokenizer
    hypotheses = translate(run.model, source, target, generate["sources"], options)
    for (best,), sequence in zip(hypotheses, generate["sequences_each_alone"], strict=True):
        expected = [int(ours_of[i]) for i in sequence[1:] if i != 0][:11]  # without start, </s>
        assert best.ids == expected


def test_fine_tune_an_imported_marian_model(marian_run, tmp_path, capsys):
    """``train --init-from`` with a config that has no model section: the imported model,
    fine-tuned on new pairs; before any step its logits are the imported model's."""
    reference = json.loads((MARIAN / "reference.json").read_text())
    sources = [p["source"] for p in reference["pairs"]] * 4
    targets = [p["target"] for p in reference["pairs"]] * 4
    (tmp_path / "train.src").write_text("\n".join(sources) + "\n")
    (tmp_path / "train.tgt").write_text("\n".join(targets) + "\n")
    config = {
        "task": "translation",
        "data": {
            "source": "parallel_text",
            "max_length": 40,
            "splits": {
                "train": {"source": "train.src", "target": "train.tgt"},
                "validation": {"source": "train.src", "target": "train.tgt"},
            },
        },
        "training": {
            "batch_size": 4,
            "steps": 4,
            "checkpoint_every": 2,
            "eval_every": 4,
            "learning_rate": 0.001,
            "warmup_steps": 1,
        },  # fmt: skip
        "decoding": {"beam_size": 1, "max_length": 12},
    }
    path = write_config(tmp_path / "finetune.yaml", config)
    from transformer_tf.config import load_config
    from transformer_tf.training.trainer import build_trainer

    trainer = build_trainer(load_config(path), tmp_path / "new", show_progress=False, init_from=str(marian_run))  # fmt: skip
    trainer.lock.release()
    source = load_run(marian_run)
    inputs = {"source": np.array([[5, 6, 7, 3]], "int32"), "target": np.array([[2, 8, 9]], "int32")}
    np.testing.assert_allclose(trainer.model(inputs).numpy(), source.model(inputs).numpy(), rtol=1e-6, atol=1e-6)  # fmt: skip
    assert trainer.config.model == source.config.model  # the model section came from the source
    del trainer
    shutil.rmtree(tmp_path / "new")
    assert main(["train", str(path), "--run-dir", str(tmp_path / "new"), "--init-from", str(marian_run), "--no-progress"]) == 0  # fmt: skip
    assert load_run(tmp_path / "new").step == 4
    assert sorted(int(p.name.split("-")[1].split(".")[0]) for p in (tmp_path / "new" / "checkpoints").glob("ckpt-*.index")) == [2, 4]  # fmt: skip


def test_marian_bad_input(tmp_path, capsys):
    run_dir = tmp_path / "run"
    partial = tmp_path / "partial"
    shutil.copytree(MARIAN / "model", partial)
    (partial / "target.spm").unlink()
    err = _refused(capsys, run_dir, main(["import", "marian", str(partial), "--run-dir", str(run_dir)]))  # fmt: skip
    assert "not a MarianMTModel directory (missing target.spm" in err
    shutil.copy(MARIAN / "model" / "target.spm", partial / "target.spm")
    config = json.loads((partial / "config.json").read_text())
    (partial / "config.json").write_text(json.dumps({**config, "share_encoder_decoder_embeddings": False}))  # fmt: skip
    err = _refused(capsys, run_dir, main(["import", "marian", str(partial), "--run-dir", str(run_dir)]))  # fmt: skip
    assert "cannot express: separate source and target vocabularies" in err
    (partial / "config.json").write_text(json.dumps(config))
    vocab = json.loads((partial / "vocab.json").read_text())
    vocab.pop(max(vocab, key=lambda piece: vocab[piece] if piece not in ("<pad>",) else -1))
    (partial / "vocab.json").write_text(json.dumps(vocab))
    err = _refused(capsys, run_dir, main(["import", "marian", str(partial), "--run-dir", str(run_dir)]))  # fmt: skip
    assert "vocab.json" in err
    err = _refused(capsys, run_dir, main(["import", "marian", str(MARIAN / "model"), "--run-dir", str(run_dir), "--num-heads", "2"]))  # fmt: skip
    assert "are opennmt-tf options" in err


def test_an_imported_marian_model_exports_to_ctranslate2(marian_run, tmp_path, capsys):
    """The export reads the pieces through the vocabulary and ends sources with </s>, as the
    README it writes says; CTranslate2's greedy output is ours."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    import sentencepiece as spm

    export_dir = tmp_path / "ct2"
    assert main(["export", str(marian_run), str(export_dir), "--format", "ctranslate2"]) == 0
    assert 'out_type=str) + ["</s>"]' in (export_dir / "README.md").read_text()
    sources = json.loads((MARIAN / "reference.json").read_text())["generate"]["sources"]
    translator = ctranslate2.Translator(str(export_dir), device="cpu", compute_type="float32")
    sp_source = spm.SentencePieceProcessor(str(export_dir / "source.model"))
    sp_target = spm.SentencePieceProcessor(str(export_dir / "target.model"))
    results = translator.translate_batch(
        [sp_source.encode(text, out_type=str) + ["</s>"] for text in sources],
        beam_size=1,
        max_decoding_length=11,
        min_decoding_length=0,
    )
    capsys.readouterr()
    assert main(["translate", str(marian_run), "--beam-size", "1", "--set", "decoding.max_length=11", *sources]) == 0  # fmt: skip
    ours = capsys.readouterr().out.splitlines()
    assert [sp_target.decode(r.hypotheses[0]) for r in results] == ours


def test_an_imported_marian_model_exports_to_a_saved_model(marian_run, tmp_path, capsys):
    """The SavedModel keeps the source and target SentencePiece models apart: its translations
    are the CLI's."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 (registers the SentencePiece ops the export uses)

    sources = json.loads((MARIAN / "reference.json").read_text())["generate"]["sources"]
    assert main(["export", str(marian_run), str(tmp_path / "saved"), "--beam-size", "1"]) == 0
    provenance = json.loads(
        (tmp_path / "saved" / "assets.extra" / "transformer_tf_export.json").read_text()
    )
    assert provenance["requires"] == ["tensorflow", "tensorflow_text"]
    serving = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    exported = [
        t.decode("utf-8") for t in serving(text=tf.constant(sources))["translation"].numpy()
    ]
    capsys.readouterr()
    assert main(["translate", str(marian_run), "--beam-size", "1", *sources]) == 0
    assert exported == capsys.readouterr().out.splitlines()
