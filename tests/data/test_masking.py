"""transformer_tf.data.masking: BERT masked-LM corruption, its loss, BART text infilling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from transformer_tf.data import masking
from transformer_tf.data.masking import (
    infill_spans,
    mask_tokens,
    masked_token_accuracy,
    masked_token_loss,
    sample_spans,
    span_start_probability,
)
from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, UNK_ID

VOCAB = 1000
MASK_ID = VOCAB - 1  # the last id, as in practice; it is also inside the random tokens' range
FIRST = 4  # the first ordinary id
MASKING = {"mask_id": MASK_ID, "vocab_size": VOCAB}


def _rows(seed: int, rows: int, length: int, unk_share: float = 0.05) -> np.ndarray:
    """Padded int32 rows: BOS, distinct ordinary ids in [FIRST, MASK_ID) with some UNK among
    them, EOS, then padding; real lengths from ``length // 2`` to ``length``. The ordinary ids
    are distinct within a row, so that a corrupted row can be aligned with its original."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((rows, length), np.int32)
    for r in range(rows):
        n = int(rng.integers(length // 2, length + 1))
        row = rng.choice(np.arange(FIRST, MASK_ID), size=n, replace=False)
        row[rng.random(n) < unk_share] = UNK_ID
        row[0], row[-1] = BOS_ID, EOS_ID
        ids[r, :n] = row
    return ids


def _assert_binomial(
    successes: int, trials: int, probability: float, deviations: float = 4.0
) -> None:
    """The share ``successes / trials`` of independent Bernoulli(``probability``) draws is
    within ``deviations`` standard deviations of ``probability``: with 4, a correct sampler
    misses this bound about 6e-5 of the time (normal approximation); the seeds here are fixed."""
    share = successes / trials
    bound = deviations * math.sqrt(probability * (1.0 - probability) / trials)
    assert abs(share - probability) < bound, (share, probability, bound)


# -- mask_tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask_probability", "mask_fraction", "random_fraction"), [(0.15, 0.8, 0.1), (0.4, 0.5, 0.3)]
)
def test_mask_tokens_rates_within_binomial_noise(mask_probability, mask_fraction, random_fraction):
    ids = _rows(0, 64, 128)
    maskable = ids >= FIRST
    totals = dict.fromkeys(("maskable", "chosen", "masked", "random", "kept"), 0)
    for seed in range(8):
        inputs, labels, weights = (
            t.numpy()
            for t in mask_tokens(
                ids,
                tf.constant([seed, 17]),
                **MASKING,
                mask_probability=mask_probability,
                mask_fraction=mask_fraction,
                random_fraction=random_fraction,
            )
        )
        assert inputs.shape == labels.shape == weights.shape == ids.shape
        assert inputs.dtype == labels.dtype == np.int32 and weights.dtype == np.float32
        assert set(np.unique(weights)) == {0.0, 1.0}
        chosen = weights == 1.0
        assert not (chosen & ~maskable).any()  # never padding, UNK, BOS or EOS
        np.testing.assert_array_equal(labels, np.where(chosen, ids, 0))
        np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])
        replaced = chosen & (inputs != MASK_ID) & (inputs != ids)
        assert ((inputs[replaced] >= FIRST) & (inputs[replaced] < VOCAB)).all()
        totals["maskable"] += int(maskable.sum())
        totals["chosen"] += int(chosen.sum())
        totals["masked"] += int((chosen & (inputs == MASK_ID)).sum())
        totals["kept"] += int((chosen & (inputs == ids)).sum())
        totals["random"] += int(replaced.sum())

    _assert_binomial(totals["chosen"], totals["maskable"], mask_probability)
    # Among the chosen (independent given the choice): a random token is one of VOCAB - FIRST
    # ids, the mask id or the original with probability 1 / (VOCAB - FIRST) each (the originals
    # are never the mask id), so those two outcomes read as masked or kept.
    hit = random_fraction / (VOCAB - FIRST)
    _assert_binomial(totals["masked"], totals["chosen"], mask_fraction + hit)
    _assert_binomial(totals["kept"], totals["chosen"], 1.0 - mask_fraction - random_fraction + hit)
    _assert_binomial(totals["random"], totals["chosen"], random_fraction - 2 * hit)


def test_mask_tokens_same_seed_same_result_other_seed_differs():
    ids = _rows(1, 8, 32)
    for dtype in (tf.int32, tf.int64):
        first = mask_tokens(ids, tf.constant([3, 4], dtype), **MASKING)
        again = mask_tokens(ids, tf.constant([3, 4], dtype), **MASKING)
        other = mask_tokens(ids, tf.constant([3, 5], dtype), **MASKING)
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert (first[2].numpy() != other[2].numpy()).any()  # other positions chosen


def _mask(ids, seed):
    return mask_tokens(ids, seed, **MASKING)


def _assert_traced_once_and_equal_to_eager(function, ids):
    """``function(ids, seed)`` under tf.function equals the eager call for two seeds, traced
    once: the seed is an input of the graph, not a constant baked into it."""
    compiled = tf.function(function)
    for seed in ([1, 2], [1, 3]):
        eager = function(ids, tf.constant(seed))
        graph = compiled(tf.constant(ids), tf.constant(seed))
        for a, b in zip(eager, graph, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert compiled.experimental_get_tracing_count() == 1


def test_mask_tokens_in_tf_function_and_dataset_map_match_eager():
    ids = _rows(2, 6, 24)
    _assert_traced_once_and_equal_to_eager(_mask, ids)

    # One example at a time, seeded by (run seed, example index), as a pipeline would.
    dataset = (
        tf.data.Dataset.from_tensor_slices(ids)
        .enumerate()
        .map(lambda index, row: _mask(row, tf.stack([tf.constant(9, tf.int64), index])))
    )
    count = 0
    for index, got in enumerate(dataset):
        expected = _mask(ids[index], tf.constant([9, index], tf.int64))
        for a, b in zip(expected, got, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        count += 1
    assert count == len(ids)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mask_probability": 0.0}, "mask_probability"),
        ({"mask_probability": 1.0}, "mask_probability"),
        ({"mask_fraction": -0.1}, "mask_fraction"),
        ({"random_fraction": 1.5}, "random_fraction"),
        ({"mask_fraction": 0.8, "random_fraction": 0.3}, r"mask_fraction \+ random_fraction"),
        ({"first_maskable_id": 0}, "first_maskable_id"),
        ({"vocab_size": FIRST}, "vocab_size"),
        ({"mask_id": 0}, "mask_id"),
    ],
)
def test_mask_tokens_rejects_bad_arguments(changes, message):
    with pytest.raises(ValueError, match=message):
        mask_tokens(tf.constant([[2, 5, 3]]), tf.constant([1, 2]), **{**MASKING, **changes})


def test_mask_tokens_fractions_may_sum_to_one():
    """0.7 + 0.3 is 1.0000000000000002 in floating point: accepted, and nothing is kept
    unchanged except where a random token happens to be the original."""
    ids = _rows(3, 16, 64)
    inputs, _, weights = (
        t.numpy()
        for t in mask_tokens(
            ids, tf.constant([0, 1]), **MASKING, mask_fraction=0.7, random_fraction=0.3
        )
    )
    chosen = weights == 1.0
    assert chosen.sum() > 0
    assert (chosen & (inputs == ids)).sum() <= 1


# -- masked_token_loss, masked_token_accuracy ------------------------------------------------

LN = math.log
# Row of 3 positions, the middle one not chosen. Position 0: the softmax of label 3 is
# 4 / (1 + 2 + 3 + 4) = 0.4; position 2: uniform over 4 ids, 0.25. Loss -ln 0.4 - ln 0.25 = ln 10.
KNOWN_LABELS = [[3, 0, 1]]
KNOWN_WEIGHTS = [[1.0, 0.0, 1.0]]
KNOWN_LOGITS = np.array(
    [[[0.0, LN(2), LN(3), LN(4)], [5.0, -7.0, 2.0, 0.5], [0.0, 0.0, 0.0, 0.0]]], np.float32
)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    return z - z.max() - np.log(np.exp(z - z.max()).sum())


def test_masked_token_loss_known_answer_and_unchosen_positions_do_not_count():
    loss_sum, count = masked_token_loss(KNOWN_LABELS, KNOWN_LOGITS, KNOWN_WEIGHTS)
    assert loss_sum.dtype == count.dtype == tf.float32
    assert loss_sum.shape == count.shape == ()
    np.testing.assert_allclose(float(loss_sum), math.log(10.0), rtol=1e-6)
    assert float(count) == 2.0

    # Anything at the unchosen position (logits, even NaN, and label) leaves the loss as it is.
    for middle in ([1e4, -1e4, 3.0, 0.0], [np.nan] * 4):
        changed = KNOWN_LOGITS.copy()
        changed[0, 1] = middle
        loss, count = masked_token_loss([[3, -100, 1]], changed, KNOWN_WEIGHTS)
        assert float(loss) == float(loss_sum)
        assert float(count) == 2.0

    # Accuracy: position 0 is right (argmax 3), position 2 wrong (a tie goes to id 0, not 1);
    # the unchosen one would be right (argmax 0 = label 0) but does not count.
    correct, count = masked_token_accuracy(KNOWN_LABELS, KNOWN_LOGITS, KNOWN_WEIGHTS)
    assert correct.dtype == tf.float32
    assert (float(correct), float(count)) == (1.0, 2.0)


@pytest.mark.parametrize(
    ("dtype", "unit_roundoff"), [(tf.bfloat16, 2.0**-8), (tf.float16, 2.0**-11)]
)
def test_masked_token_loss_half_precision_logits_computed_in_float32(dtype, unit_roundoff):
    half = tf.cast(KNOWN_LOGITS, dtype)
    loss_sum, count = masked_token_loss(KNOWN_LABELS, half, KNOWN_WEIGHTS)
    assert loss_sum.dtype == count.dtype == tf.float32
    # The float32 loss of the rounded logits (computed here in float64): a loss computed in
    # half precision would be off by ~1e-3 (bfloat16) or ~1e-4 (float16) relative.
    rounded = tf.cast(half, tf.float32).numpy()[0].astype(np.float64)
    expected = -(_log_softmax(rounded[0])[3] + _log_softmax(rounded[2])[1])
    np.testing.assert_allclose(float(loss_sum), expected, rtol=1e-6)
    # And the float32 answer within the rounding: every logit moves by at most unit_roundoff *
    # |logit| <= unit_roundoff * ln 4, a cross-entropy by at most twice the largest move (its
    # gradient, softmax - one_hot, has l1 norm <= 2), and position 2's zeros do not move.
    assert abs(float(loss_sum) - math.log(10.0)) <= 2.0 * unit_roundoff * math.log(4.0)


def test_masked_token_loss_and_accuracy_on_mask_tokens_output():
    ids = _rows(4, 16, 40)
    inputs, labels, weights = mask_tokens(ids, tf.constant([5, 6]), **MASKING)
    chosen = weights.numpy() == 1.0
    n = int(chosen.sum())
    assert n > 0
    # Uniform logits: every chosen position costs ln VOCAB.
    loss_sum, count = masked_token_loss(labels, tf.zeros([16, 40, VOCAB]), weights)
    assert float(count) == n
    np.testing.assert_allclose(float(loss_sum), n * math.log(VOCAB), rtol=1e-6)
    # Predicting the originals is right at every chosen position; predicting the corrupted
    # input only where it was kept (or a random token happened to be the original).
    correct, count = masked_token_accuracy(labels, tf.one_hot(ids, VOCAB), weights)
    assert (float(correct), float(count)) == (n, n)
    correct, _ = masked_token_accuracy(labels, tf.one_hot(inputs, VOCAB), weights)
    assert float(correct) == int((chosen & (inputs.numpy() == ids)).sum())


# -- span_start_probability, sample_spans, infill_spans --------------------------------------


def _survival(poisson_lambda: float, count: int) -> list[float]:
    """[P(L > k) for k < count], L ~ Poisson(poisson_lambda), by the pmf's recurrence."""
    pmf, cdf, survival = math.exp(-poisson_lambda), 0.0, []
    for k in range(count):
        if k:
            pmf *= poisson_lambda / k
        cdf += pmf
        survival.append(max(0.0, 1.0 - cdf))
    return survival


def _coverage(start_probability: float, poisson_lambda: float, count: int) -> list[float]:
    """P(covered) of the positions d = 0 .. count-1 of a run of maskable tokens: not covered
    unless some position d - k (k = 0..d) starts a span longer than k."""
    survival = _survival(poisson_lambda, count)
    return [
        1.0 - math.prod(1.0 - start_probability * s for s in survival[: d + 1])
        for d in range(count)
    ]


@pytest.mark.parametrize(("mask_ratio", "poisson_lambda"), [(0.3, 3.0), (0.15, 1.0), (0.5, 10.0)])
def test_span_start_probability_covers_mask_ratio_far_from_the_start(mask_ratio, poisson_lambda):
    q = span_start_probability(mask_ratio, poisson_lambda)
    assert 0.0 < q < 1.0
    assert _coverage(q, poisson_lambda, 200)[-1] == pytest.approx(mask_ratio, abs=1e-9)


def test_span_start_probability_is_one_when_the_ratio_is_out_of_reach():
    # Mean span length 0.1: even a span at every position covers only ~10% of the tokens.
    assert span_start_probability(0.9, 0.1) == 1.0
    assert _coverage(1.0, 0.1, 50)[-1] < 0.9


def _infill_reference(row, starts, span_lengths, mask_id) -> list[int]:
    """The corrupted row by the letter of infill_spans's definition, one position at a time."""
    length = len(row)
    covered = [False] * length
    for p in range(length):
        if starts[p]:
            q = p
            while q < p + span_lengths[p] and q < length and row[q] >= FIRST:
                covered[q] = True
                q += 1
    corrupted = []
    for p in range(length):
        if (covered[p] or starts[p]) and not (p > 0 and covered[p - 1]):
            corrupted.append(mask_id)
        if not covered[p] and row[p] != 0:
            corrupted.append(int(row[p]))
    return corrupted


def _span_cases(ids, starts, span_lengths) -> dict[str, int]:
    """How many spans of each kind: of length 0, cut short (by a special token, padding or the
    row end), overlapping a span that started earlier in the same run."""
    cases = {"empty": 0, "cut": 0, "overlapping": 0}
    for row, row_starts, row_lengths in zip(ids, starts, span_lengths, strict=True):
        reach = -1  # the end (excluded) of the spans started so far in the current run
        for p, token in enumerate(row):
            if token < FIRST:
                reach = -1
                continue
            if not row_starts[p]:
                continue
            stop = p
            while stop < len(row) and row[stop] >= FIRST:
                stop += 1
            end = p + row_lengths[p]
            cases["empty"] += int(row_lengths[p] == 0)
            cases["cut"] += int(end > stop)
            cases["overlapping"] += int(row_lengths[p] > 0 and p < reach)
            reach = max(reach, min(end, stop))
    return cases


def test_infill_spans_known_answer(monkeypatch):
    """Hand-made spans (sample_spans replaced): every rule of the definition, one example each."""
    #       0       1   2   3   4   5       6   7   8       9  10
    ids = [
        [BOS_ID, 10, 11, 12, 13, UNK_ID, 14, 15, EOS_ID, 0, 0],
        [BOS_ID, 20, 21, 22, EOS_ID, 0, 0, 0, 0, 0, 0],
        [0] * 11,
    ]
    starts = np.zeros((3, 11), bool)
    span_lengths = np.zeros((3, 11), np.int32)
    # Row 0: [1, 3) and [2, 7) overlap and merge; [2, 7) stops before the UNK at 5. A length-0
    # span at 6 inserts a mask before 14. [7, 16) stops before the EOS at 8.
    for p, n in ((1, 2), (2, 5), (6, 0), (7, 9)):
        starts[0, p], span_lengths[0, p] = True, n
    # Row 1: [1, 2) covers 20; a length-0 span at 2 touches it and merges; one at 3 does not.
    for p, n in ((1, 1), (2, 0), (3, 0)):
        starts[1, p], span_lengths[1, p] = True, n
    planned = (tf.constant(starts), tf.constant(span_lengths))
    monkeypatch.setattr(masking, "sample_spans", lambda *args, **kwargs: planned)

    corrupted, lengths = infill_spans(tf.constant(ids), tf.constant([0, 0]), mask_id=MASK_ID)
    m = MASK_ID
    assert corrupted.numpy().tolist() == [
        [BOS_ID, m, UNK_ID, m, 14, m, EOS_ID],
        [BOS_ID, m, 21, m, 22, EOS_ID, 0],
        [0] * 7,
    ]
    assert lengths.numpy().tolist() == [7, 6, 0]
    assert lengths.dtype == tf.int32


@pytest.mark.parametrize(("mask_ratio", "poisson_lambda"), [(0.3, 3.0), (0.5, 1.0)])
def test_infill_spans_follows_its_definition(mask_ratio, poisson_lambda):
    ids = _rows(5, 32, 48, unk_share=0.1)
    ids[0] = 0  # a row of padding only
    ids[1] = 0
    ids[1, :2] = [BOS_ID, EOS_ID]  # a row of special tokens only
    seed = tf.constant([11, 12])
    options = {"mask_ratio": mask_ratio, "poisson_lambda": poisson_lambda}
    starts, span_lengths = (t.numpy() for t in sample_spans(ids, seed, **options))
    assert not (starts & (ids < FIRST)).any()  # spans start on ordinary tokens only
    assert not span_lengths[~starts].any()
    corrupted, lengths = (t.numpy() for t in infill_spans(ids, seed, mask_id=MASK_ID, **options))

    expected = [
        _infill_reference(*rows, MASK_ID) for rows in zip(ids, starts, span_lengths, strict=True)
    ]
    assert lengths.tolist() == [len(row) for row in expected]
    assert corrupted.shape == (len(ids), max(lengths))
    for row, expected_row, n in zip(corrupted, expected, lengths, strict=True):
        assert row[:n].tolist() == expected_row
        assert not row[n:].any()  # re-padded with 0
    assert lengths[0] == 0 and lengths[1] == 2
    # The draws exercise every rule, so that the comparison can fail on each.
    cases = _span_cases(ids, starts, span_lengths)
    assert min(cases.values()) > 0, cases


def _gaps(original, corrupted, mask_id) -> list[tuple[list[int], int]]:
    """Align a corrupted row (its real tokens) with its original (ordinary ids distinct): for
    each gap between consecutive kept tokens, and before the first and after the last, the
    original tokens skipped there and the number of mask tokens there. Fails (IndexError) when
    the kept tokens are not a subsequence of the original, in order."""
    original = [int(t) for t in original if t != 0]
    gaps, position, masks = [], 0, 0
    for token in corrupted:
        if token == mask_id:
            masks += 1
            continue
        start = position
        while original[position] != token:
            position += 1
        gaps.append((original[start:position], masks))
        position, masks = position + 1, 0
    gaps.append((original[position:], masks))
    return gaps


def test_infill_spans_structure_replaces_each_span_by_one_mask():
    ids = _rows(6, 64, 64, unk_share=0.1)
    seed = tf.constant([7, 8])
    corrupted, lengths = (t.numpy() for t in infill_spans(ids, seed, mask_id=MASK_ID))
    starts, span_lengths = (t.numpy() for t in sample_spans(ids, seed))
    removed = insertions = 0
    for original, row, n, row_starts, row_lengths in zip(
        ids, corrupted, lengths, starts, span_lengths, strict=True
    ):
        assert row[0] == BOS_ID and row[n - 1] == EOS_ID and not row[n:].any()
        row_removed = 0
        for skipped, masks in _gaps(original, row[:n], MASK_ID):
            if skipped:
                # A span: ordinary tokens only, replaced by exactly one mask.
                assert masks == 1 and min(skipped) >= FIRST, (skipped, masks)
                row_removed += len(skipped)
            else:
                assert masks <= 1  # at most an inserted mask (a span of length 0)
                insertions += masks
        # The removed tokens are exactly as many as the drawn spans cover (each span runs
        # until its length or the next special token; the rows end with EOS).
        covered = set()
        for p in np.flatnonzero(row_starts):
            q = p
            while q < p + row_lengths[p] and original[q] >= FIRST:
                covered.add(q)
                q += 1
        assert row_removed == len(covered)
        removed += row_removed
    assert removed > 0 and insertions > 0


def test_infill_spans_covers_mask_ratio_of_the_tokens():
    """2048 rows of BOS, 62 ordinary tokens, EOS and padding. Each position d of the run is
    covered with probability _coverage(q)[d] (mask_ratio from a few tokens in on); each
    position's share over the rows is binomial, and each row's share an independent draw."""
    rows, n, mask_ratio = 2048, 62, 0.3
    rng = np.random.default_rng(7)
    ids = np.zeros((rows, n + 6), np.int32)
    for r in range(rows):
        ids[r, : n + 2] = [BOS_ID, *rng.choice(np.arange(FIRST, MASK_ID), n, replace=False), EOS_ID]
    seed = tf.constant([21, 22])
    corrupted, lengths = (t.numpy() for t in infill_spans(ids, seed, mask_id=MASK_ID))
    starts, span_lengths = (t.numpy() for t in sample_spans(ids, seed))

    q = span_start_probability(mask_ratio, 3.0)
    _assert_binomial(int(starts.sum()), rows * n, q)  # float32 rounding of q: < 1e-7
    # Span lengths Poisson(3): mean 3, variance 3; 4 standard deviations of the mean.
    drawn = span_lengths[starts]
    assert abs(drawn.mean() - 3.0) < 4.0 * math.sqrt(3.0 / drawn.size)

    # Covered: the ordinary tokens missing from the corrupted row (ids distinct within a row).
    covered = np.stack(
        [np.isin(ids[r, 1 : n + 1], corrupted[r, : lengths[r]], invert=True) for r in range(rows)]
    )  # (rows, n)
    expected = _coverage(q, 3.0, n)
    for d in range(n):
        # 62 bounds at once: 5 deviations each (5.7e-7), so that all hold but ~4e-5 of the time.
        _assert_binomial(int(covered[:, d].sum()), rows, expected[d], deviations=5.0)
    shares = covered.mean(axis=1)  # (rows,): independent, mean sum(expected) / n
    assert abs(shares.mean() - np.mean(expected)) < 4.0 * shares.std(ddof=1) / math.sqrt(rows)
    # mask_ratio from the 12th token on; the first ones are covered less, which costs the
    # row's share about 0.4 tokens of 62.
    assert expected[11:] == pytest.approx([mask_ratio] * (n - 11), abs=1e-3)
    assert np.mean(expected) == pytest.approx(mask_ratio - 0.4 / n, abs=0.002)


def test_infill_spans_leaves_rows_unchanged_when_no_span_starts():
    ids = tf.constant(
        [
            [BOS_ID, 10, 11, 12, EOS_ID, 0, 0],
            [BOS_ID, 20, 21, UNK_ID, 23, 24, EOS_ID],
            [BOS_ID, EOS_ID, 0, 0, 0, 0, 0],
            [0] * 7,
        ]
    )
    seed = tf.constant([1, 2])
    # q ~ 3e-10: no float32 uniform of these 28 is below it (only an exact 0 would be).
    starts, _ = sample_spans(ids, seed, mask_ratio=1e-9)
    assert not starts.numpy().any()
    corrupted, lengths = infill_spans(ids, seed, mask_id=MASK_ID, mask_ratio=1e-9)
    np.testing.assert_array_equal(corrupted.numpy(), ids.numpy())  # width: the longest row
    assert lengths.numpy().tolist() == [5, 7, 2, 0]


def _infill(ids, seed):
    return infill_spans(ids, seed, mask_id=MASK_ID)


def test_infill_spans_reproducible_and_graph_compatible():
    ids = _rows(8, 8, 24)
    first = _infill(ids, tf.constant([1, 2]))
    again = _infill(ids, tf.constant([1, 2]))
    other = _infill(ids, tf.constant([1, 3]))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert first[0].shape != other[0].shape or (first[0].numpy() != other[0].numpy()).any()

    _assert_traced_once_and_equal_to_eager(_infill, ids)

    # One row at a time inside Dataset.map, seeded per example, then padded into batches.
    dataset = (
        tf.data.Dataset.from_tensor_slices(ids)
        .enumerate()
        .map(lambda index, row: _infill(row, tf.stack([tf.constant(9, tf.int64), index])))
    )
    rows = [_infill(ids[i], tf.constant([9, i], tf.int64)) for i in range(len(ids))]
    for (row, length), (expected_row, expected_length) in zip(dataset, rows, strict=True):
        assert row.shape == (int(expected_length),) and int(length) == int(expected_length)
        np.testing.assert_array_equal(row.numpy(), expected_row.numpy())
    batch, batch_lengths = next(iter(dataset.padded_batch(8)))
    assert batch_lengths.numpy().tolist() == [int(length) for _, length in rows]
    for got, (expected_row, length) in zip(batch.numpy(), rows, strict=True):
        np.testing.assert_array_equal(got[: int(length)], expected_row.numpy())
        assert not got[int(length) :].any()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mask_ratio": 0.0}, "mask_ratio"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"poisson_lambda": 0.0}, "poisson_lambda"),
        ({"poisson_lambda": float("inf")}, "poisson_lambda"),
        ({"first_maskable_id": 0}, "first_maskable_id"),
        ({"mask_id": 0}, "mask_id"),
    ],
)
def test_infill_spans_rejects_bad_arguments(changes, message):
    with pytest.raises(ValueError, match=message):
        infill_spans(
            tf.constant([[2, 5, 3]]), tf.constant([1, 2]), **{"mask_id": MASK_ID, **changes}
        )


def test_infill_spans_rejects_ids_of_rank_three():
    with pytest.raises(ValueError, match="rank 1 or 2"):
        infill_spans(tf.zeros([2, 3, 4], tf.int32), tf.constant([1, 2]), mask_id=MASK_ID)
