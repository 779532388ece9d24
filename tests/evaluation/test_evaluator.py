"""Evaluation: the decoding scores of a translation split (what each scorer compares), and an
evaluator scoring a split again."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from transformer_tf.config.schema import DecodingConfig, TrainingConfig
from transformer_tf.data.tokenizers import WordTokenizer
from transformer_tf.evaluation import scorers
from transformer_tf.tasks import translation

PAIRS = [
    ("ein hund, eine katze.", "a dog, a cat."),
    ("was?", "what?"),
    ("der baum", "the tree"),
]


def _task(lowercase=False):
    tokenizer = WordTokenizer.build(
        [t for _, t in PAIRS], lowercase=lowercase, split_punctuation=True
    )
    config = SimpleNamespace(
        data=SimpleNamespace(lowercase=lowercase, max_length=64),
        decoding=DecodingConfig(),
        training=TrainingConfig(),
    )
    return SimpleNamespace(
        raw_splits={"test": PAIRS},
        source_tokenizer=None,
        target_tokenizer=tokenizer,
        config=config,
    )


@pytest.fixture
def decoded(monkeypatch):
    """Replace decoding with fixed hypotheses, as a word tokenizer writes them."""
    outputs = {}

    def translate(model, source_tokenizer, target_tokenizer, texts, options):
        return SimpleNamespace(texts=[outputs[text] for text in texts])

    monkeypatch.setattr(translation, "translate", translate)
    return outputs


def test_exact_match_compares_a_word_tokenizer_output_with_the_reference_written_alike(decoded):
    # The detokenized output of a word model keeps punctuation split off: `a dog , a cat .`.
    decoded.update({"ein hund, eine katze.": "a dog , a cat .", "was?": "what ?"})
    decoded["der baum"] = "the house"
    scores = translation.decoding_scores(_task(), model=None, split="test")
    assert scores["exact_match"] == pytest.approx(2 / 3)
    # BLEU and chrF score the raw references, as published scores do.
    hypotheses = ["a dog , a cat .", "what ?", "the house"]
    references = [t for _, t in PAIRS]
    assert scores["bleu"] == scorers.bleu(hypotheses, references)
    assert scores["chrf"] == scorers.chrf(hypotheses, references)


def test_an_unknown_word_in_the_reference_never_matches_an_unk_output(decoded):
    task = _task()
    decoded.update({"ein hund, eine katze.": "a dog , a cat .", "was?": "what ?"})
    decoded["der baum"] = "the <unk>"
    pairs = [*PAIRS[:2], ("der baum", "the elephant")]
    task.raw_splits = {"test": pairs}
    scores = translation.decoding_scores(task, model=None, split="test")
    assert scores["exact_match"] == pytest.approx(2 / 3)


def test_lowercased_runs_compare_lowercased_references(decoded):
    decoded.update({"ein hund, eine katze.": "a dog , a cat .", "was?": "what ?"})
    decoded["der baum"] = "the tree"
    task = _task(lowercase=True)
    task.raw_splits = {"test": [(s, t.capitalize()) for s, t in PAIRS]}
    scores = translation.decoding_scores(task, model=None, split="test")
    assert scores["exact_match"] == 1.0
    assert scores["bleu"] == pytest.approx(100.0)


def test_an_evaluator_builds_a_split_once_and_scores_it_alike_each_time(classification_run):
    # Validation during training calls the same evaluator every eval_every steps: the split's
    # pipeline is built at the first call and read again, whole, at each later one.
    from transformer_tf.assembly import load_run
    from transformer_tf.evaluation.evaluator import Evaluator

    run = load_run(classification_run)
    built = []
    dataset = run.task.dataset
    run.task.dataset = lambda split, training: built.append(split) or dataset(split, training)
    evaluator = Evaluator(run.strategy, run.model, run.task)
    first = evaluator.run("validation")
    assert evaluator.run("validation") == first
    assert built == ["validation"]
    assert evaluator.run("test") != first and built == ["validation", "test"]
    # A new evaluator, which builds the split anew, gives the same numbers.
    assert Evaluator(run.strategy, run.model, run.task).run("validation") == first
    assert set(first) == {"loss", "accuracy"}
