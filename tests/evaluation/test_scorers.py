"""Known-answer tests for the corpus scorers.

Expected values are derived here from the metrics' definitions, not from sacreBLEU: BLEU on
whitespace tokens (the sentences have no punctuation, or punctuation already split off, so
sacreBLEU's 13a tokenizer leaves them unchanged) and chrF on character n-grams.
"""

from __future__ import annotations

import ast
import math
from collections import Counter
from pathlib import Path

import pytest

from transformer_tf.evaluation import scorers
from transformer_tf.evaluation.scorers import SCORERS, bleu, chrf, exact_match, score_translations


def _ngrams(sequence, n: int) -> Counter:
    return Counter(tuple(sequence[i : i + n]) for i in range(len(sequence) - n + 1))


def _bleu_by_definition(hypotheses: list[str], references: list[str]) -> float:
    """Papineni et al.'s corpus BLEU-4 with the NIST ('exp', sacreBLEU's default) smoothing:
    clipped n-gram matches and n-gram totals summed over the corpus; the k-th order with no
    match gets precision 1 / (2**k * total); brevity penalty exp(1 - r / c) when c < r."""
    matches, totals = [0] * 4, [0] * 4
    c = r = 0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = hypothesis.split(), reference.split()
        c, r = c + len(hyp), r + len(ref)
        for n in range(1, 5):
            hyp_ngrams, ref_ngrams = _ngrams(hyp, n), _ngrams(ref, n)
            totals[n - 1] += sum(hyp_ngrams.values())
            matches[n - 1] += sum(min(k, ref_ngrams[g]) for g, k in hyp_ngrams.items())
    if not any(matches) or not all(totals):
        return 0.0
    precisions, zeros = [], 0
    for match, total in zip(matches, totals, strict=True):
        if match == 0:
            zeros += 1
            precisions.append(1 / (2**zeros * total))
        else:
            precisions.append(match / total)
    brevity = math.exp(1 - r / c) if c < r else 1.0
    return 100 * brevity * math.prod(precisions) ** 0.25


def _chrf_by_definition(hypotheses: list[str], references: list[str], beta: float = 2) -> float:
    """Popović's chrF as sacreBLEU computes a corpus score: character n-grams, n = 1..6, with
    whitespace removed; per order, hypothesis / reference / clipped-match counts summed over
    sentences (a sentence whose reference has no n-gram of that order contributes no hypothesis
    n-grams either); precision and recall averaged over the orders where both the hypothesis
    and the reference counts are positive; then F_beta of the two averages, times 100."""
    stats = [[0, 0, 0] for _ in range(6)]
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
        for n in range(1, 7):
            hyp_ngrams, ref_ngrams = _ngrams(hyp, n), _ngrams(ref, n)
            if ref_ngrams:
                stats[n - 1][0] += sum(hyp_ngrams.values())
            stats[n - 1][1] += sum(ref_ngrams.values())
            stats[n - 1][2] += sum(min(k, ref_ngrams[g]) for g, k in hyp_ngrams.items())
    used = [(m / h, m / r) for h, r, m in stats if h > 0 and r > 0]
    if not used:
        return 0.0
    precision = sum(p for p, _ in used) / len(used)
    recall = sum(q for _, q in used) / len(used)
    if precision + recall == 0:
        return 0.0
    return 100 * (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


# ---------------------------------------------------------------------------------------- BLEU


def test_bleu_perfect_match_is_100():
    sentences = ["the cat is on the mat", "a dog runs in the park ."]
    assert bleu(sentences, sentences) == pytest.approx(100.0, rel=1e-12)


def test_bleu_brevity_penalty():
    # All n-grams of the 5-token hypothesis match (precisions 5/5, 4/4, 3/3, 2/2), but c = 5 < 6.
    expected = 100 * math.exp(1 - 6 / 5)
    got = bleu(["the cat is on the"], ["the cat is on the mat"])
    assert got == pytest.approx(expected, rel=1e-12)
    assert _bleu_by_definition(["the cat is on the"], ["the cat is on the mat"]) == pytest.approx(
        expected, rel=1e-12
    )


def test_bleu_no_four_gram_match_uses_exp_smoothing():
    # 1-grams 5/6 (the x2, cat, on, mat), 2-grams 3/5 (the cat, on the, the mat),
    # 3-grams 1/4 (on the mat), 4-grams 0/3 -> smoothed to 1 / (2 * 3). c = r = 6.
    expected = 100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert bleu(["the cat sat on the mat"], ["the cat is on the mat"]) == pytest.approx(
        expected, rel=1e-12
    )


def test_bleu_clips_counts_and_doubles_the_smoothing_per_missing_order():
    # "the" occurs once in the reference: 1-grams 1/4. No 2-, 3-, 4-gram matches (totals 3, 2,
    # 1): smoothed precisions 1/(2*3), 1/(4*2), 1/(8*1). c = 4 > r = 2, so no brevity penalty.
    expected = 100 * (1 / 4 * 1 / 6 * 1 / 8 * 1 / 8) ** 0.25
    assert bleu(["the the the the"], ["the cat"]) == pytest.approx(expected, rel=1e-12)


def test_bleu_pools_statistics_over_the_corpus():
    # Sentence 1 is perfect (6 tokens); sentence 2 "a dog" vs "a big dog" adds 2/2 1-gram and
    # 0/1 2-gram matches. Totals: 8/8, 5/6, 4/4, 3/3; c = 8, r = 9.
    hypotheses = ["the cat is on the mat", "a dog"]
    references = ["the cat is on the mat", "a big dog"]
    expected = 100 * math.exp(1 - 9 / 8) * (5 / 6) ** 0.25
    assert bleu(hypotheses, references) == pytest.approx(expected, rel=1e-12)
    # Averaging sentence scores instead would give a different number.
    assert expected != pytest.approx((100 + bleu(["a dog"], ["a big dog"])) / 2, rel=1e-3)


def test_bleu_matches_the_definition_on_a_small_corpus():
    hypotheses = [
        "there is a cat on the mat",
        "he read the book because he was interested in world history",
        "it is a guide to action which ensures that the military always obeys the commands",
        "we saw it yesterday ,",
    ]
    references = [
        "the cat is on the mat",
        "he was interested in world history because he read the book",
        "it is a guide to action that ensures that the military will forever heed party commands",
        "we saw it last week ,",
    ]
    expected = _bleu_by_definition(hypotheses, references)
    assert 0.0 < expected < 100.0
    assert bleu(hypotheses, references) == pytest.approx(expected, rel=1e-12)


def test_bleu_uses_13a_tokenization_and_needs_four_grams():
    # 13a splits the final period off "mat.", so these two are one and the same token sequence.
    assert bleu(["the cat is on the mat."], ["the cat is on the mat ."]) == pytest.approx(100.0)
    # A corpus without a single 4-gram has no BLEU-4 precision: sacreBLEU scores it 0.
    assert bleu(["a b c"], ["a b c"]) == pytest.approx(0.0, abs=1e-12)
    assert bleu(["x y z w"], ["a b c d"]) == 0.0


# ---------------------------------------------------------------------------------------- chrF


def test_chrf_perfect_match_and_whitespace_is_ignored():
    assert chrf(["ab c"], ["abc"]) == pytest.approx(100.0, rel=1e-12)
    assert chrf(["a cat"], ["a cat"]) == pytest.approx(100.0, rel=1e-12)


def test_chrf_equal_lengths():
    # n=1: a,b,c vs a,b,d -> P = R = 2/3; n=2: ab,bc vs ab,bd -> 1/2; n=3: abc vs abd -> 0;
    # n=4..6: no n-grams on either side, not averaged. P = R = 7/18, so F_2 = 7/18.
    assert chrf(["abc"], ["abd"]) == pytest.approx(100 * 7 / 18, rel=1e-12)


def test_chrf_weights_recall_with_beta_2():
    # "ab" vs "abc": n=1 P=1, R=2/3; n=2 P=1, R=1/2; n=3: the hypothesis has no 3-gram, so the
    # order is skipped. P = 1, R = 7/12: F_2 = 5 * P * R / (4 * P + R) = 7/11.
    assert chrf(["ab"], ["abc"]) == pytest.approx(100 * 7 / 11, rel=1e-12)
    # The mirror image has P and R swapped, and recall counts four times as much.
    assert chrf(["abc"], ["ab"]) == pytest.approx(100 * 5 * 7 / 12 / (4 * 7 / 12 + 1), rel=1e-12)


def test_chrf_hypothesis_longer_than_reference():
    # "abcd" vs "ab": n=1 P=2/4, R=1; n=2 P=1/3, R=1; n>=3: the reference has no n-grams.
    # P = 5/12, R = 1: F_2 = 5 * 5/12 / (4 * 5/12 + 1) = 25/32.
    assert chrf(["abcd"], ["ab"]) == pytest.approx(100 * 25 / 32, rel=1e-12)


def test_chrf_pools_statistics_and_drops_orders_the_reference_lacks():
    # Sentence 1 "abc"/"abc"; sentence 2 "xyzw"/"xy" whose 3- and 4-grams have no reference
    # n-grams and count for nothing. Pooled (hyp, ref, match): n=1 (7, 5, 5), n=2 (5, 3, 3),
    # n=3 (1, 1, 1). P = (5/7 + 3/5 + 1) / 3 = 27/35, R = 1: F_2 = 135/143.
    hypotheses, references = ["abc", "xyzw"], ["abc", "xy"]
    assert chrf(hypotheses, references) == pytest.approx(100 * 135 / 143, rel=1e-12)
    assert _chrf_by_definition(hypotheses, references) == pytest.approx(100 * 135 / 143)


def test_chrf_matches_the_definition_on_a_small_corpus():
    hypotheses = ["a cat sits on the mat", "he read a book", "nothing here", "Zwei Hunde"]
    references = ["the cat is on the mat", "he was reading the book", "x", "zwei Hunde laufen"]
    expected = _chrf_by_definition(hypotheses, references)
    assert 0.0 < expected < 100.0
    assert chrf(hypotheses, references) == pytest.approx(expected, rel=1e-12)


def test_chrf_no_common_character_is_zero():
    assert chrf(["abc"], ["xyz"]) == 0.0
    assert chrf([""], ["xyz"]) == 0.0


# --------------------------------------------------------------------------------- exact match


def test_exact_match_strips_outer_whitespace_only():
    hypotheses = [" a b ", "a b.", "A b", "a  b", "\tx y\n"]
    references = ["a b", "a b", "a b", "a b", "x y"]
    # Matches: 1 (outer spaces) and 5 (tab, newline); punctuation, case, inner spaces differ.
    assert exact_match(hypotheses, references) == pytest.approx(2 / 5, rel=1e-12)
    assert exact_match(["same"], ["same"]) == 1.0
    assert exact_match(["a"], ["b"]) == 0.0


def test_empty_corpus_scores_zero():
    assert exact_match([], []) == 0.0
    assert score_translations([], []) == {"exact_match": 0.0, "bleu": 0.0, "chrf": 0.0}


# ------------------------------------------------------------------------ the scorer table


def test_score_translations_reports_every_scorer():
    assert set(SCORERS) == {"exact_match", "bleu", "chrf"}
    assert SCORERS["bleu"] is bleu and SCORERS["chrf"] is chrf
    assert SCORERS["exact_match"] is exact_match
    hypotheses = ["the cat is on the", "abc"]
    references = ["the cat is on the", "abd"]
    result = score_translations(hypotheses, references)
    assert result == {name: scorer(hypotheses, references) for name, scorer in SCORERS.items()}
    assert result["exact_match"] == 0.5
    assert result["bleu"] == pytest.approx(_bleu_by_definition(hypotheses, references), rel=1e-12)
    assert result["chrf"] == pytest.approx(_chrf_by_definition(hypotheses, references), rel=1e-12)
    assert all(isinstance(value, float) for value in result.values())


@pytest.mark.parametrize("scorer", [*SCORERS.values(), score_translations])
def test_length_mismatch_is_an_error_naming_both_counts(scorer):
    with pytest.raises(ValueError, match="3 hypotheses and 2 references"):
        scorer(["a", "b", "c"], ["a", "b"])


def test_package_module_stays_import_light():
    # The package docstring promises that importing it loads no submodule (nor sacreBLEU).
    source = Path(scorers.__file__).with_name("__init__.py").read_text()
    tree = ast.parse(source)
    assert ast.get_docstring(tree).startswith("Metrics and scorers")
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
