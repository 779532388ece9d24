"""Translate text with a trained model: batching, tokenization and the run's decoding settings.

Sources longer than ``data.max_length - 1`` tokens (the source EOS is implicit) are cut to that
length with a warning that counts them, or refused (``truncate=False``, ``translate
--no-truncate``) with :class:`OverlongInputError`.

One entry point, :func:`translate`, decodes with a
:class:`~transformer_tf.inference.options.DecodingOptions` (a run's:
``DecodingOptions.from_config(run.config)``) and returns each source's ``n_best`` hypotheses.

Scores (``translate --with-scores``, :attr:`Translation.score`): beam search gives each hypothesis
its summed natural-log probability divided by the GNMT length penalty ``((5 + length) / 6) **
decoding.length_penalty`` (``length`` counts the generated tokens, EOS included); greedy search
and sampling give the summed log-probability.

Alignments (``translate --alignment``, ``translate(..., alignment=True)``): after decoding,
one teacher-forced pass of the decoder over each hypothesis (BOS + its tokens) gives the last
decoder block's cross-attention, averaged over heads: a ``(target tokens, source tokens)`` matrix
on the tokens the tokenizers made (source padding and target EOS excluded). Each target token is
aligned with its most attended source token, written in Pharaoh format ``SOURCE-TARGET``
(``0-0 2-1 1-2``: 0-based indices, one pair per target token in target order). An ensemble aligns
with its first model's attention.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from transformer_tf.data.special_tokens import BOS_ID, EOS_ID, PAD_ID
from transformer_tf.errors import UserError
from transformer_tf.inference.options import DecodingOptions
from transformer_tf.inference.search import make_decoder

log = logging.getLogger(__name__)


class OverlongInputError(UserError):
    """A source is longer than the model takes and truncation was turned off.

    Attributes:
        line: int, the 1-based position of the first over-long input.
        length: int, its token count.
        limit: int, the most tokens a source may have (``data.max_length - 1``).
    """

    def __init__(self, line: int, length: int, limit: int):
        self.line, self.length, self.limit = line, length, limit
        super().__init__(
            f"input line {line} has {length} tokens, more than the {limit} a source may have "
            "(data.max_length - 1); shorten it, or allow truncation"
        )


@dataclasses.dataclass
class Translation:
    """One hypothesis for one source.

    Attributes:
        text: str, the detokenized translation.
        tokens: list[str], the target tokenizer's token strings (EOS excluded).
        ids: list[int], the target ids (EOS and padding excluded).
        score: float, the search's score (see the module docstring).
        alignment: str or None, the Pharaoh alignment (see the module docstring) when asked for.
        attention: ``(len(tokens), len(source_tokens))`` float32 array or None, the averaged
            cross-attention the alignment comes from (each row sums to 1).
        source_tokens: list[str] or None, the source tokenizer's tokens (with ``attention``).
    """

    text: str
    tokens: list[str]
    ids: list[int]
    score: float
    alignment: str | None = None
    attention: np.ndarray | None = dataclasses.field(default=None, repr=False)
    source_tokens: list[str] | None = None

    def as_dict(self) -> dict:
        """``{"text", "tokens", "score"}`` (and ``"alignment"`` when computed), the JSON form of
        ``translate --format jsonl``."""
        result = {"text": self.text, "tokens": self.tokens, "score": self.score}
        if self.alignment is not None:
            result["alignment"] = self.alignment
        return result


def encode_sources(
    tokenizer, texts: list[str], max_input_length: int, *, truncate: bool = True
) -> tuple[list[list[int]], list[bool]]:
    """Tokenize sources and cut those over ``max_input_length - 1`` tokens.

    Args:
        tokenizer: the source :class:`~transformer_tf.data.tokenizers.Tokenizer`.
        texts: list[str], the sources.
        max_input_length: int, ``data.max_length``; a source keeps ``max_input_length - 1``
            tokens (its EOS is implicit).
        truncate: bool, cut over-long sources with a warning (True, the default) or raise.

    Returns:
        The ids of each source and whether it was cut.

    Raises:
        OverlongInputError: ``truncate`` is False and a source is too long (the first one).
    """
    keep = max_input_length - 1
    encoded = tokenizer.encode_batch(texts)
    cut = [len(ids) > keep for ids in encoded]
    if any(cut):
        first = cut.index(True)
        if not truncate:
            raise OverlongInputError(first + 1, len(encoded[first]), keep)
        log.warning(
            "%d of %d inputs are longer than %d tokens (data.max_length - 1) and were cut to "
            "%d tokens (the first is input line %d, %d tokens)",
            sum(cut), len(texts), keep, keep, first + 1, len(encoded[first]),
        )  # fmt: skip
    return [ids[:keep] for ids in encoded], cut


def _batches(source_ids: list[list[int]], batch_size: int):
    """Length-sorted batches: ``(input indices, (batch, longest) int32 padded ids)``.

    Sorting by length keeps padding (and so wasted decoding work) small.
    """
    order = np.argsort([len(ids) for ids in source_ids], kind="stable")
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        longest = max(1, max(len(source_ids[i]) for i in chunk))
        batch = np.zeros((len(chunk), longest), "int32")
        for row, i in enumerate(chunk):
            batch[row, : len(source_ids[i])] = source_ids[i]
        yield chunk, tf.constant(batch)


def translate_ids(source_ids: list[list[int]], *, batch_size: int, decoder) -> list[list[int]]:
    """Decode lists of source ids in length-sorted batches; returns ids in input order.

    ``decoder`` maps ``(batch, length)`` source ids to ``(batch, length)`` output ids (see
    :func:`~transformer_tf.inference.search.make_decoder`, ``with_scores=False``).
    """
    outputs: list[list[int] | None] = [None] * len(source_ids)
    for chunk, batch in _batches(source_ids, batch_size):
        decoded = decoder(batch).numpy()
        for row, i in enumerate(chunk):
            outputs[i] = _strip(decoded[row])
    return outputs


def translate_ids_nbest(
    source_ids: list[list[int]], *, batch_size: int, decoder
) -> list[list[tuple[list[int], float]]]:
    """Like :func:`translate_ids` with an n-best decoder (``make_decoder(model, options,
    with_scores=True)``: ``(ids (batch, N, length), scores (batch, N))``); returns, in input
    order, the ``(ids, score)`` pairs of each source, best first."""
    outputs: list = [None] * len(source_ids)
    for chunk, batch in _batches(source_ids, batch_size):
        ids, scores = decoder(batch)
        ids, scores = ids.numpy(), scores.numpy()
        for row, i in enumerate(chunk):
            outputs[i] = [(_strip(h), float(s)) for h, s in zip(ids[row], scores[row], strict=True)]
    return outputs


def attention_matrices(
    model, sources: list[list[int]], targets: list[list[int]], *, batch_size: int
) -> list[np.ndarray]:
    """The last decoder block's cross-attention, averaged over heads, of each (source, target).

    Args:
        model: a model with ``cross_attention(source, target)`` (``Seq2SeqTransformer``, or an
            ``Ensemble``: its first model).
        sources: source ids per pair (no padding).
        targets: the hypotheses' target ids per pair (EOS and padding excluded).
        batch_size: int, pairs per teacher-forced pass.

    Returns:
        Per pair a float32 ``(len(target), len(source))`` array; row ``t`` is the attention of
        the step that produced target token ``t`` (it sums to 1 when the source is not empty).

    Raises:
        UserError: the model's decoder layer does not return attention weights.
    """
    if not hasattr(model, "cross_attention"):
        raise UserError(
            f"--alignment: {type(model).__name__} does not expose its cross-attention "
            "(a cross_attention(source, target) method)"
        )
    matrices: list = []
    for start in range(0, len(sources), batch_size):
        chunk = range(start, min(start + batch_size, len(sources)))
        source = np.zeros((len(chunk), max(1, *(len(sources[i]) for i in chunk))), "int32")
        target = np.zeros((len(chunk), 1 + max(len(targets[i]) for i in chunk)), "int32")
        for row, i in enumerate(chunk):
            source[row, : len(sources[i])] = sources[i]
            target[row, 0] = BOS_ID
            target[row, 1 : 1 + len(targets[i])] = targets[i]
        try:
            weights = model.cross_attention(tf.constant(source), tf.constant(target))
        except NotImplementedError as error:
            raise UserError(f"--alignment: {error}") from error
        weights = np.asarray(weights, "float32").mean(axis=1)  # (batch, target, source)
        for row, i in enumerate(chunk):
            matrices.append(weights[row, : len(targets[i]), : len(sources[i])])
    return matrices


def pharaoh(attention: np.ndarray) -> str:
    """``(target, source)`` weights -> ``"s0-0 s1-1 ..."``: for each target token ``t`` its most
    attended source position ``s_t`` (Pharaoh ``SOURCE-TARGET`` pairs, target order); empty
    when either side is empty."""
    if attention.size == 0:
        return ""
    return " ".join(f"{s}-{t}" for t, s in enumerate(np.argmax(attention, axis=1)))


def _strip(ids) -> list[int]:
    """Ids up to (not including) EOS, without padding."""
    result = []
    for token in ids:
        token = int(token)
        if token == EOS_ID:
            break
        if token != PAD_ID:
            result.append(token)
    return result


class Translations(list):
    """What :func:`translate` returns: for each source, in input order, its ``options.n_best``
    :class:`Translation` hypotheses, best first (a list of lists)."""

    @property
    def texts(self) -> list[str]:
        """list[str], the best translation of each source."""
        return [hypotheses[0].text for hypotheses in self]


def translate(
    model,
    source_tokenizer,
    target_tokenizer,
    texts: list[str],
    options: DecodingOptions,
    *,
    truncate: bool = True,
    alignment: bool = False,
) -> Translations:
    """Translate sources with the decoder that ``options`` describe (see
    :func:`~transformer_tf.inference.search.make_decoder`).

    The one translation entry point: the CLI's ``translate``, evaluation's decoding and
    ensembles (an :class:`~transformer_tf.inference.ensemble.Ensemble` as ``model``) call it; an
    export serves the same decoder in graph
    (:func:`~transformer_tf.inference.export.build_translation_module`).

    Args:
        model: a decoding model (see :mod:`transformer_tf.inference.search`).
        source_tokenizer, target_tokenizer: the run's tokenizers.
        texts: list[str], the sources.
        options: :class:`~transformer_tf.inference.options.DecodingOptions` (a run's:
            ``DecodingOptions.from_config(run.config, beam_size=..., n_best=...)``): the
            search, ``n_best`` hypotheses per source, the lengths (see :func:`encode_sources`)
            and ``batch_size`` sources per decoding batch.
        truncate: bool, cut over-long sources with a warning, or raise
            :class:`OverlongInputError`. Defaults to True.
        alignment: bool, also fill each translation's ``alignment``, ``attention`` and
            ``source_tokens`` (see the module docstring). Defaults to False.

    Returns:
        :class:`Translations`: per source its ``options.n_best`` hypotheses with their scores
        and tokens, best first; ``.texts`` the best translation of each.

    Raises:
        UserError: ``alignment`` with a decoder layer that does not return attention weights.
        OverlongInputError: see ``truncate``.
    """
    decoder = make_decoder(model, options, with_scores=True)
    source_ids, _ = encode_sources(
        source_tokenizer, texts, options.max_input_length, truncate=truncate
    )
    decoded = translate_ids_nbest(source_ids, batch_size=options.batch_size, decoder=decoder)
    results = Translations(
        [
            Translation(target_tokenizer.decode(ids), target_tokenizer.tokens(ids), ids, score)
            for ids, score in hypotheses
        ]
        for hypotheses in decoded
    )
    if alignment:
        pairs = [(i, h) for i, hypotheses in enumerate(results) for h in hypotheses]
        matrices = attention_matrices(
            model,
            [source_ids[i] for i, _ in pairs],
            [h.ids for _, h in pairs],
            batch_size=options.batch_size,
        )
        for (i, h), matrix in zip(pairs, matrices, strict=True):
            h.attention, h.alignment = matrix, pharaoh(matrix)
            h.source_tokens = source_tokenizer.tokens(source_ids[i])
    return results


#: Resolution of :func:`plot_attention`'s PNG; sizes in inches are multiples of 1/4, so the
#: pixel sizes are exact (see :func:`attention_plot_size`).
PLOT_DPI = 100


def attention_plot_size(num_source: int, num_target: int) -> tuple[int, int]:
    """The ``(width, height)`` in pixels of :func:`plot_attention`'s PNG: 50 pixels per token
    plus room for the labels and the colour bar."""
    width = 2.5 + 0.5 * max(num_source, 1)
    height = 2.0 + 0.5 * max(num_target, 1)
    return round(width * PLOT_DPI), round(height * PLOT_DPI)


def require_matplotlib() -> None:
    """Raise a UserError saying how to install matplotlib (``--attention-plot``) if it is not."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise UserError(
            "--attention-plot needs matplotlib: pip install 'transformer-tf[plot]' "
            "(or pip install 'matplotlib>=3.8,<4')"
        ) from error


def plot_attention(path, attention: np.ndarray, source_tokens, target_tokens) -> None:
    """Draw a cross-attention heatmap as a PNG (matplotlib, no display needed).

    Args:
        path: str or Path, the PNG to write.
        attention: ``(len(target_tokens), len(source_tokens))`` weights in [0, 1].
        source_tokens: list[str], the x-axis labels.
        target_tokens: list[str], the y-axis labels.

    Raises:
        UserError: matplotlib is not installed, or a side is empty.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if attention.size == 0:
        raise UserError("--attention-plot: the source or the translation is empty, nothing to draw")
    width, height = attention_plot_size(len(source_tokens), len(target_tokens))
    # A Figure with its own Agg canvas, not pyplot: no global backend state, no display.
    figure = Figure(figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(attention, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(source_tokens)), labels=source_tokens, rotation=90)
    axes.set_yticks(range(len(target_tokens)), labels=target_tokens)
    axes.set_xlabel("source")
    axes.set_ylabel("target")
    figure.colorbar(image, ax=axes)
    figure.tight_layout()  # moves the axes inside the figure; the size stays
    figure.savefig(path, format="png", dpi=PLOT_DPI)
