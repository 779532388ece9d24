"""The toy translation task: determinism, splits, and that it needs reordering and agreement."""

from __future__ import annotations

import collections
import random

import pytest

from transformer_tf.data import toy
from transformer_tf.data.toy import (
    NounPhrase,
    Pronoun,
    ToySentence,
    generate_toy_pairs,
    render_english,
    toy_splits,
    translate_toy,
)
from transformer_tf.errors import UserError


def _noun(word: str) -> int:
    return [n[0] for n in toy._NOUNS].index(word)


def _adjective(word: str) -> int:
    return [a[0] for a in toy._ADJECTIVES].index(word)


def _verb(word: str) -> int:
    return [v[0] for v in toy._VERBS].index(word)


def _pronoun(word: str) -> Pronoun:
    return Pronoun([p[0] for p in toy._PRONOUNS].index(word))


@pytest.fixture(scope="module")
def splits():
    return toy_splits(2000, 300, 300, seed=7)


def test_splits_have_requested_sizes_and_are_deterministic(splits):
    assert {k: len(v) for k, v in splits.items()} == {"train": 2000, "validation": 300, "test": 300}
    assert toy_splits(2000, 300, 300, seed=7) == splits
    assert toy_splits(2000, 300, 300, seed=8)["train"] != splits["train"]


def test_splits_are_disjoint_in_source_sentence(splits):
    sources = {name: [s for s, _ in pairs] for name, pairs in splits.items()}
    for name, values in sources.items():
        assert len(set(values)) == len(values), name
    assert not set(sources["train"]) & set(sources["validation"])
    assert not set(sources["train"]) & set(sources["test"])
    assert not set(sources["validation"]) & set(sources["test"])


def test_held_out_splits_do_not_depend_on_the_training_size(splits):
    smaller = toy_splits(100, 300, 300, seed=7)
    assert smaller["test"] == splits["test"]
    assert smaller["validation"] == splits["validation"]
    assert generate_toy_pairs(50, seed=7) == generate_toy_pairs(80, seed=7)[:50]


def test_sentences_are_lowercase_tokens_of_bounded_length(splits):
    pairs = [pair for split in splits.values() for pair in split]
    for source, target in pairs:
        for side in (source, target):
            assert side == side.lower() == " ".join(side.split())
            assert toy.MIN_TOKENS <= len(side.split()) <= toy.MAX_TOKENS
    source_vocab = {w for s, _ in pairs for w in s.split()}
    target_vocab = {w for _, t in pairs for w in t.split()}
    assert 100 <= len(source_vocab) <= 300
    assert 100 <= len(target_vocab) <= 320


def test_translation_is_a_function_of_the_source_sentence():
    # Sample structures directly (duplicates included): one English string, one translation.
    rng = random.Random(0)
    translations: dict[str, str] = {}
    for _ in range(20_000):
        sentence = toy._sample_sentence(rng)
        source, target = render_english(sentence), translate_toy(sentence)
        assert translations.setdefault(source, target) == target, source


def test_source_and_target_lengths_differ(splits):
    pairs = splits["train"]
    differing = sum(len(s.split()) != len(t.split()) for s, t in pairs)
    assert differing / len(pairs) > 0.3
    assert any(len(s.split()) > len(t.split()) for s, t in pairs)
    assert any(len(s.split()) < len(t.split()) for s, t in pairs)


@pytest.mark.parametrize(
    ("sentence", "english", "target"),
    [
        (
            ToySentence(
                NounPhrase(_noun("dog")),
                _verb("buy"),
                "present",
                False,
                NounPhrase(_noun("apple"), determiner="a", adjectives=(_adjective("red"),)),
            ),
            "the dog buys a red apple",
            "der hund einen roten apfel kauft",
        ),
        (  # plural subject -> plural verb; the verb moves to the end
            ToySentence(
                NounPhrase(_noun("dog"), plural=True),
                _verb("buy"),
                "present",
                False,
                NounPhrase(_noun("apple"), determiner="a", adjectives=(_adjective("red"),)),
            ),
            "the dogs buy a red apple",
            "die hunde einen roten apfel kaufen",
        ),
        (  # past: auxiliary in second position, negation and participle at the end
            ToySentence(
                NounPhrase(_noun("man"), adjectives=(_adjective("old"),)),
                _verb("buy"),
                "past",
                True,
                NounPhrase(_noun("apple"), plural=True),
            ),
            "the old man did not buy the apples",
            "der alte mann hat die aepfel nicht gekauft",
        ),
        (  # number words reorder; strong adjective ending without article; "an" before a vowel
            ToySentence(
                NounPhrase(
                    _noun("dog"),
                    plural=True,
                    determiner=None,
                    number=23,
                    adjectives=(_adjective("big"),),
                ),
                _verb("fetch"),
                "future",
                False,
                NounPhrase(_noun("egg"), determiner="a"),
                "for",
                NounPhrase(_noun("queen"), determiner="my"),
            ),
            "twenty three big dogs will fetch an egg for my queen",
            "drei und zwanzig grosse hunde werden ein ei fuer meine koenigin holen",
        ),
        (
            ToySentence(_pronoun("you"), _verb("search"), "past", False, Pronoun(0)),
            "you searched me",
            "du hast mich gesucht",
        ),
        (  # "she"/"they" both become "sie"; only the verb ending tells them apart
            ToySentence(_pronoun("she"), _verb("know"), "present", True, _pronoun("they")),
            "she does not know them",
            "sie sie nicht kennt",
        ),
        (
            ToySentence(_pronoun("they"), _verb("know"), "present", True, _pronoun("she")),
            "they do not know her",
            "sie sie nicht kennen",
        ),
        (  # mixed declension: masculine nominative -er, neuter -es
            ToySentence(
                NounPhrase(_noun("friend"), determiner="my", adjectives=(_adjective("young"),)),
                _verb("paint"),
                "present",
                False,
                NounPhrase(_noun("house"), determiner="your", adjectives=(_adjective("new"),)),
            ),
            "my young friend paints your new house",
            "mein junger freund dein neues haus malt",
        ),
    ],
)
def test_grammar_examples(sentence, english, target):
    assert render_english(sentence) == english
    assert translate_toy(sentence) == target


def test_verb_agrees_with_subject_number_and_goes_last():
    rng = random.Random(1)
    checked = 0
    for _ in range(3000):
        sentence = toy._sample_sentence(rng)
        if sentence.tense != "present" or not isinstance(sentence.subject, NounPhrase):
            continue
        english, target = render_english(sentence).split(), translate_toy(sentence).split()
        stem = toy._VERBS[sentence.verb][3]
        expected = stem + ("en" if sentence.subject.plural else "t")
        assert target[-1] == expected
        if not sentence.negated:
            english_verb = toy._VERBS[sentence.verb][0 if sentence.subject.plural else 1]
            assert english_verb in english[:-1]  # in English an object always follows the verb
        checked += 1
    assert checked > 500


def _dice_dictionary(pairs):
    """Word-by-word translation table: each source word -> the target word with the highest
    Dice co-occurrence score (alignment-free)."""
    source_counts, target_counts = collections.Counter(), collections.Counter()
    joint = collections.Counter()
    for source, target in pairs:
        s_words, t_words = set(source.split()), set(target.split())
        source_counts.update(s_words)
        target_counts.update(t_words)
        joint.update((s, t) for s in s_words for t in t_words)
    best: dict[str, tuple[float, str]] = {}
    for (s, t), c in joint.items():
        score = 2 * c / (source_counts[s] + target_counts[t])
        if score > best.get(s, (-1.0, ""))[0]:
            best[s] = (score, t)
    return {s: t for s, (_, t) in best.items()}


def test_copying_and_word_by_word_substitution_fail(splits):
    test = splits["test"]
    copy_exact = sum(source == target for source, target in test) / len(test)
    assert copy_exact == 0.0

    dictionary = _dice_dictionary(splits["train"])
    outputs = [" ".join(dictionary.get(w, w) for w in source.split()) for source, _ in test]
    word_exact = sum(o == t for o, (_, t) in zip(outputs, test, strict=True)) / len(test)
    assert word_exact < 0.01
    # The dictionary itself is good (most output words occur in the reference): what fails is
    # order and agreement, which need a model that looks at the whole sentence.
    hits = total = 0
    for output, (_, target) in zip(outputs, test, strict=True):
        reference = collections.Counter(target.split())
        hits += sum((collections.Counter(output.split()) & reference).values())
        total += len(output.split())
    assert hits / total > 0.5


def test_impossible_requests_raise_user_error():
    with pytest.raises(UserError, match="at most"):
        toy_splits(toy.MAX_TOY_PAIRS, 1, 0, seed=0)
    with pytest.raises(UserError, match=">= 0"):
        toy_splits(-1, 10, 10, seed=0)
    with pytest.raises(UserError, match=">= 0"):
        generate_toy_pairs(-5, seed=0)
