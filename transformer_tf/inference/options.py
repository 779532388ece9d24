"""The decoding settings of a translation, as one frozen, validated object.

:class:`DecodingOptions` gathers what the CLI's ``translate``, ``evaluate`` and ``export``,
evaluation during training, :func:`~transformer_tf.inference.translate.translate`,
:func:`~transformer_tf.inference.search.make_decoder` and
:func:`~transformer_tf.inference.export.build_translation_module` need to decode: the search
(beam size, n-best count, length penalty, sampling), the lengths and the batch size. It is
validated once, when it is made (:meth:`DecodingOptions.from_config` from a run's config and the
command-line flags, or the constructor), so the functions that take it do not check it again.

This module imports neither TensorFlow nor the rest of the package (but :mod:`transformer_tf.errors`):
the CLI refuses a bad flag with it before TensorFlow starts.
"""

from __future__ import annotations

import dataclasses

from transformer_tf.errors import DecodingOptionsError

__all__ = ["DecodingOptions", "examples_per_batch"]

#: The fields that set sampling (with ``beam_size`` 1), as in ``decoding:``.
SAMPLING_FIELDS = ("sampling_topk", "sampling_topp", "sampling_temperature", "seed")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecodingOptions:
    """How to decode: search, lengths and batching. Frozen and hashable; validated when made.

    Sampling (OpenNMT-tf's convention, as ``decoding:``; see
    :class:`~transformer_tf.config.schema.DecodingConfig`) is on when ``sampling_topk`` is not 1
    or ``sampling_topp`` is below 1, and needs ``beam_size`` 1. The defaults are the config's:
    beam search of 4 without sampling.

    Attributes:
        beam_size: int >= 1, hypotheses kept per source (1: greedy search, or sampling).
        n_best: int in ``1 .. beam_size``, hypotheses returned per source, best first.
        length_penalty: float >= 0, the GNMT length-penalty exponent (beam search only).
        max_input_length: int >= 1, ``data.max_length``: a source keeps
            ``max_input_length - 1`` tokens (its EOS is implicit).
        max_output_length: int >= 1, the most generated tokens, EOS included
            (``decoding.max_length``).
        batch_size: int >= 1, sources per decoding batch (see :func:`examples_per_batch`).
        sampling_topk: int >= 0, sample among the k most probable tokens (0: all; 1: no
            sampling unless ``sampling_topp`` < 1).
        sampling_topp: float in (0, 1], sample within the top-p nucleus.
        sampling_temperature: float > 0, logits are divided by it before sampling.
        seed: int, the sampling seed; the same seed gives the same output.

    Raises:
        DecodingOptionsError: (a :class:`~transformer_tf.errors.UserError` and a ValueError) a
            setting out of range, ``n_best`` above ``beam_size``, or sampling with
            ``beam_size > 1``. The messages name the CLI flag and the config key.
    """

    beam_size: int = 4
    n_best: int = 1
    length_penalty: float = 0.6
    max_input_length: int = 128
    max_output_length: int = 128
    batch_size: int = 64
    sampling_topk: int = 1
    sampling_topp: float = 1.0
    sampling_temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        # Plain ints and floats (not numpy scalars or a config's int-valued floats), so that
        # equal options are equal and hash alike: compiled decoders are cached by them.
        for field in dataclasses.fields(self):
            kind = float if field.type == "float" else int
            object.__setattr__(self, field.name, kind(getattr(self, field.name)))
        self.check_flags(beam_size=self.beam_size, n_best=self.n_best)
        if self.n_best > self.beam_size:
            raise DecodingOptionsError(
                f"--n-best {self.n_best} must be between 1 and the beam size, {self.beam_size} "
                "(--beam-size or decoding.beam_size)"
            )
        _at_least(self.length_penalty, 0, "decoding.length_penalty")
        _at_least(self.max_input_length, 1, "data.max_length")
        _at_least(self.max_output_length, 1, "decoding.max_length")
        _at_least(self.batch_size, 1, "the decoding batch size (training.batch_size)")
        _at_least(self.sampling_topk, 0, "decoding.sampling_topk")
        if not 0.0 < self.sampling_topp <= 1.0:
            raise DecodingOptionsError(
                f"decoding.sampling_topp must be in (0, 1], got {self.sampling_topp}"
            )
        if not self.sampling_temperature > 0.0:
            raise DecodingOptionsError(
                f"decoding.sampling_temperature must be > 0, got {self.sampling_temperature}"
            )
        if self.sampling and self.beam_size != 1:
            raise DecodingOptionsError(
                f"--beam-size {self.beam_size}: the decoding settings sample (decoding."
                f"sampling_topk={self.sampling_topk}, sampling_topp={self.sampling_topp}), and "
                "sampling needs beam_size=1; drop --beam-size or --set decoding.sampling_topk=1"
            )

    @property
    def sampling(self) -> bool:
        """bool, whether the settings sample rather than search (greedy or beam)."""
        return self.sampling_topk != 1 or self.sampling_topp < 1.0

    @classmethod
    def from_config(
        cls, config, beam_size: int | None = None, n_best: int | None = None
    ) -> DecodingOptions:
        """A run's decoding settings: its config's ``decoding`` and ``data`` sections and batch
        size (:func:`examples_per_batch`), with the ``--beam-size`` and ``--n-best`` flags over
        them (None: the config's beam size; one hypothesis).

        Raises:
            DecodingOptionsError: a flag out of range, or one at odds with the config (an
                ``n_best`` above the beam size, a beam size above 1 while the config samples).
        """
        decoding = config.decoding
        return cls(
            beam_size=decoding.beam_size if beam_size is None else beam_size,
            n_best=1 if n_best is None else n_best,
            length_penalty=decoding.length_penalty,
            max_input_length=config.data.max_length,
            max_output_length=decoding.max_length,
            batch_size=examples_per_batch(config),
            **{name: getattr(decoding, name) for name in SAMPLING_FIELDS},
        )

    @staticmethod
    def check_flags(*, beam_size: int | None = None, n_best: int | None = None) -> None:
        """Refuse a ``--beam-size`` or ``--n-best`` below 1 before a run is loaded (the rules
        that need no config; the others are checked when the options are made).

        Raises:
            DecodingOptionsError: ``beam_size`` or ``n_best`` is below 1.
        """
        if beam_size is not None and beam_size < 1:
            raise DecodingOptionsError(
                f"--beam-size must be >= 1, got {beam_size} (decoding.beam_size)"
            )
        if n_best is not None and n_best < 1:
            raise DecodingOptionsError(f"--n-best must be >= 1, got {n_best}")

    def replace(self, **changes) -> DecodingOptions:
        """A copy with ``changes`` (field names), validated again."""
        return dataclasses.replace(self, **changes)


def examples_per_batch(config) -> int:
    """Sentences per decoding batch: ``training.batch_size``, or with a token budget
    (``batch_type: tokens``) as many sentences of the maximum length as the budget holds."""
    training = config.training
    if training.batch_type == "tokens":
        return max(1, training.batch_size // max(config.data.max_length, 1))
    return training.batch_size


def _at_least(value, least, name: str) -> None:
    if value < least:
        raise DecodingOptionsError(f"{name} must be >= {least}, got {value}")
