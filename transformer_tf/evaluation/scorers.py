"""Corpus-level translation scorers: sacreBLEU BLEU and chrF, and exact match.

Every scorer takes detokenized hypothesis and reference strings, one reference per sentence,
in the same order (``hypotheses``: the system outputs; ``references``: one per sentence, as many
as hypotheses, else a ValueError), and returns a float (BLEU and chrF on sacreBLEU's 0-100
scale, exact match as a share in [0, 1]). :data:`SCORERS` maps each scorer's name to its
function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sacrebleu

__all__ = ["SCORERS", "bleu", "chrf", "exact_match", "score_translations"]


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list, list]:
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(
            "hypotheses and references must pair up one to one, got "
            f"{len(hypotheses)} hypotheses and {len(references)} references"
        )
    return hypotheses, references


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacreBLEU defaults: 13a tokenization, exp smoothing, n-grams up to 4), in
    [0, 100]; 0.0 for an empty corpus (sacreBLEU itself rejects one)."""
    return _sacrebleu(sacrebleu.corpus_bleu, hypotheses, references)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacreBLEU defaults: character n-grams 1-6 without whitespace, beta = 2), in
    [0, 100]; 0.0 for an empty corpus."""
    return _sacrebleu(sacrebleu.corpus_chrf, hypotheses, references)


def _sacrebleu(corpus_score: Callable, hypotheses, references) -> float:
    hypotheses, references = _check_pairs(hypotheses, references)
    if not hypotheses:
        return 0.0
    return float(corpus_score(hypotheses, [references]).score)


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Share of sentences whose hypothesis equals its reference after ``str.strip()``, in
    [0, 1]; 0.0 for an empty corpus."""
    hypotheses, references = _check_pairs(hypotheses, references)
    if not hypotheses:
        return 0.0
    matches = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True))
    return matches / len(hypotheses)


#: Scorer name -> function ``(hypotheses, references) -> float``.
SCORERS: dict[str, Callable[[Sequence[str], Sequence[str]], float]] = {
    "exact_match": exact_match,
    "bleu": bleu,
    "chrf": chrf,
}


def score_translations(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """Every scorer of :data:`SCORERS` on one corpus.

    Args:
        hypotheses: list[str], the system outputs, one per sentence.
        references: list[str], one reference per sentence, same length as ``hypotheses``.

    Returns: ``{"exact_match": float, "bleu": float, "chrf": float}``.

    Raises: ValueError when the two lists differ in length.
    """
    hypotheses, references = _check_pairs(hypotheses, references)
    return {name: scorer(hypotheses, references) for name, scorer in SCORERS.items()}
