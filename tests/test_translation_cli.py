"""Translation through the CLI: toy corpus and parallel text files, evaluate, translate."""

from __future__ import annotations

import json
import random

import pytest

from tests.fixtures import assert_evaluation_scores, translation_config, write_config
from transformer_tf.cli import main

# `translate` and the tests load each run once per set of arguments (tests/shared_runs.py): the
# same model object, whose traced decoders later commands reuse. Every run is loaded only once
# its training has finished.
pytestmark = pytest.mark.usefixtures("load_each_run_once")


@pytest.fixture(scope="module")
def toy_run(request):
    """The toy run shared with other files (tests/shared_runs.py): 60 steps, data.max_length 16
    (long test sentences are cut, alike by evaluate and translate), decoding.beam_size 3 (the
    tests below give --beam-size)."""
    return request.getfixturevalue("toy_translation_run")


def test_evaluate_reports_teacher_forced_and_decoding_scores(toy_run, capsys, tmp_path):
    out = tmp_path / "scores.json"
    assert (
        main(
            [
                "evaluate",
                str(toy_run),
                "--split",
                "test",
                "--beam-size",
                "1",
                "--output-json",
                str(out),
            ]
        )
        == 0
    )
    scores = json.loads(out.read_text())
    table = capsys.readouterr().out
    assert "bleu" in table and "token_accuracy" in table
    from transformer_tf.assembly import load_run

    sources = [source for source, _ in load_run(toy_run).task.raw_splits["test"]]
    assert main(["translate", str(toy_run), "--beam-size", "1", *sources]) == 0
    assert_evaluation_scores(scores, toy_run, "test", capsys.readouterr().out.splitlines())


def test_translate_text_file_and_stdout_agree(toy_run, capsys, tmp_path):
    sentences = ["the big dog sees a cat", "we love the old tree"]
    assert main(["translate", str(toy_run), "--beam-size", "2", *sentences]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2
    source = tmp_path / "in.txt"
    source.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    target = tmp_path / "out.txt"
    assert (
        main(
            [
                "translate",
                str(toy_run),
                "--beam-size",
                "2",
                "--input",
                str(source),
                "--output",
                str(target),
            ]
        )
        == 0
    )
    assert target.read_text(encoding="utf-8").splitlines() == printed


def test_translate_on_a_classification_run_or_missing_input_is_a_user_error(
    toy_run, capsys, tmp_path
):
    assert main(["translate", str(toy_run), "--input", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err


def _write_corpus(root, n, seed=0, trailing_blank=True):
    rng = random.Random(seed)
    nouns = {"hund": "dog", "katze": "cat", "haus": "house", "baum": "tree", "mann": "man"}
    adjectives = {"gross": "big", "klein": "small", "alt": "old", "rot": "red"}
    de, en = [], []
    for _ in range(n):
        noun, adjective = rng.choice(list(nouns)), rng.choice(list(adjectives))
        de.append(f"der {adjective}e {noun} schläft.")
        en.append(f"the {adjectives[adjective]} {nouns[noun]} sleeps.")
    tail = "\n\n" if trailing_blank else "\n"
    (root / "train.de").write_text("\n".join(de) + tail, encoding="utf-8")
    (root / "train.en").write_text("\n".join(en) + tail, encoding="utf-8")
    (root / "val.de").write_text("\n".join(de[:10]) + "\n", encoding="utf-8")
    (root / "val.en").write_text("\n".join(en[:10]) + "\n", encoding="utf-8")


def _parallel_config(root, **data):
    return translation_config(
        data={
            "source": "parallel_text",
            "splits": {
                "train": {"source": str(root / "train.de"), "target": str(root / "train.en")},
                "validation": {"source": str(root / "val.de"), "target": str(root / "val.en")},
            },
            "tokenizer": "sentencepiece",
            "vocab_size": 60,
            "max_length": 24,
            **data,
        },
        # Validation without decoding: evaluate below decodes (and detokenizes) the SentencePiece
        # run; validation decoding is tested on the toy task further down.
        training={"steps": 10, "eval_every": 10, "validation": {"decode": False}},
    )


def test_parallel_text_with_sentencepiece_trains_and_saves_its_vocabulary(tmp_path, capsys):
    _write_corpus(tmp_path, 200)
    raw = _parallel_config(tmp_path)
    for key in ("num_train", "num_validation", "num_test"):
        raw["data"].pop(key)
    config = write_config(tmp_path / "p.yaml", raw)
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run_dir), "--no-progress"]) == 0
    manifest = json.loads((run_dir / "vocab" / "tokenizer.json").read_text())
    assert manifest["source"]["kind"] == "sentencepiece" and manifest["shared"] is True
    assert (run_dir / "vocab" / "shared.model").is_file()
    capsys.readouterr()
    # A test split kept elsewhere is scored by repointing the data with --set.
    test_de, test_en = tmp_path / "test.de", tmp_path / "test.en"
    test_de.write_text("der alte hund schläft.\n", encoding="utf-8")
    test_en.write_text("the old dog sleeps.\n", encoding="utf-8")
    code = main(
        ["evaluate", str(run_dir), "--split", "test", "--beam-size", "1",
         "--set", f"data.splits.test.source={test_de}", "--set", f"data.splits.test.target={test_en}"]
    )  # fmt: skip
    assert code == 0
    assert "bleu" in capsys.readouterr().out


def test_mismatched_line_counts_exit_2_naming_both_files(tmp_path, capsys):
    _write_corpus(tmp_path, 50, trailing_blank=False)
    with open(tmp_path / "train.en", "a", encoding="utf-8") as f:
        f.write("one extra line\n")
    raw = _parallel_config(tmp_path)
    for key in ("num_train", "num_validation", "num_test"):
        raw["data"].pop(key)
    config = write_config(tmp_path / "p.yaml", raw)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train.de" in err and "train.en" in err and "50" in err and "51" in err


def test_validation_decodes_and_selects_best_by_bleu(tmp_path):
    """Validation BLEU during training: logged, chosen for best/, and equal to evaluate's."""
    from transformer_tf.assembly import load_run
    from transformer_tf.evaluation.evaluator import evaluate_run

    stopping = {"metric": "bleu", "patience": 10}
    raw = translation_config(
        training={
            "steps": 30,
            "eval_every": 10,
            "early_stopping": stopping,
            "checkpoint_every": 10,
            "validation": {"decode": True},
        }
    )
    config = write_config(tmp_path / "bleu.yaml", raw)
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run_dir), "--no-progress"]) == 0
    records = [
        json.loads(line) for line in (run_dir / "validation_log.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == [10, 20, 30]
    for record in records:
        assert set(record) == {"step", "loss", "token_accuracy", "exact_match", "bleu", "chrf"}
    best = max(records, key=lambda r: (r["bleu"], -r["step"]))  # the first of equal maxima
    assert load_run(run_dir, checkpoint="best").step == best["step"]
    # The validation's BLEU is the evaluate command's on the same checkpoint.
    scores = evaluate_run(run_dir, split="validation", checkpoint=str(records[-1]["step"]))
    assert scores["bleu"] == pytest.approx(records[-1]["bleu"], abs=1e-9)
    assert scores["exact_match"] == pytest.approx(records[-1]["exact_match"], abs=1e-9)


def test_validation_can_decode_greedily_a_few_sentences(tmp_path):
    from transformer_tf.assembly import load_run
    from transformer_tf.tasks.translation import decoding_scores

    validation = {"beam_size": 1, "max_sentences": 5}
    raw = translation_config(training={"steps": 10, "eval_every": 10, "validation": validation})
    config = write_config(tmp_path / "greedy.yaml", raw)
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run_dir), "--no-progress"]) == 0
    record = json.loads((run_dir / "validation_log.jsonl").read_text())
    run = load_run(run_dir)
    expected = decoding_scores(run.task, run.model, "validation", beam_size=1, max_sentences=5)
    assert record["bleu"] == pytest.approx(expected["bleu"], abs=1e-9)
    assert record["chrf"] == pytest.approx(expected["chrf"], abs=1e-9)
    # exact match over 5 sentences moves in steps of 1/5
    assert round(record["exact_match"] * 5, 9) == round(record["exact_match"] * 5)


def test_early_stopping_on_bleu_without_decoding_is_a_config_error(tmp_path, capsys):
    raw = translation_config(
        training={"early_stopping": {"metric": "bleu"}, "validation": {"decode": False}}
    )
    config = write_config(tmp_path / "nodecode.yaml", raw)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert (
        "training.early_stopping.metric: expected a validation metric of task 'translation': "
        in err
    )
    assert "(decoding scores need training.validation.decode: true), found 'bleu'" in err
    assert not (tmp_path / "run").exists()


# Relative and rotary positions through evaluate, translate and the exports: on the runs of
# tests/training/test_positions.py, which trains them to learn.
