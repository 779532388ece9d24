"""Tokenizers with one interface, in Python and as in-graph TensorFlow ops for serving.

The kinds (:data:`TOKENIZER_KINDS`, by ``kind``):

* :class:`WordTokenizer`: whitespace words (optionally with punctuation split off), for the toy
  task and for word-level baselines;
* :class:`SentencePieceTokenizer`: a BPE or unigram model trained with the ``sentencepiece``
  library, in graph via ``tensorflow_text.SentencepieceTokenizer``;
* :class:`SentencePieceVocabTokenizer`: SentencePiece segmentation with the pieces looked up in
  a separate vocabulary (imported OpenNMT-tf and Marian models);
* ``review``: :class:`~transformer_tf.data.review_tokenizer.ReviewTokenizer`, the
  classification task's (cleaning, words and n-grams), in its own module, which registers it
  here when imported.

Ids 0-3 are always ``<pad>``, ``<unk>``, ``<s>``, ``</s>`` (see ``special_tokens``).
``encode`` adds neither BOS nor EOS; ``decode`` stops at the first EOS and skips PAD and BOS.

The TensorFlow side (``tf_encode``/``tf_decode``) is built lazily on first use, so plain Python use
creates no TF state. Its resources (lookup tables, the SentencePiece model) live in
:attr:`Tokenizer.tf_module`, a ``tf.Module``. **To export a SavedModel, attach that module (not
the tokenizer) to the exported module** so that the resources are tracked::

    serving = tf.Module()
    serving.source_tokenizer = source_tokenizer.tf_module
    serving.encode = tf.function(source_tokenizer.tf_encode,
                                 input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(serving, path)

A run directory is reloaded with :func:`load_tokenizers`, which reads the ``tokenizer.json``
manifest written by :func:`save_tokenizers`.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from transformer_tf.data.special_tokens import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK,
    UNK_ID,
)
from transformer_tf.errors import DataError, UserError
from transformer_tf.files import write_atomic

if TYPE_CHECKING:
    import tensorflow as tf

MANIFEST_NAME = "tokenizer.json"
MANIFEST_VERSION = 1

# TensorFlow's whitespace split (``tf.strings.split`` with no separator) splits on exactly these
# ASCII characters; Python's ``str.split()`` also splits on Unicode spaces and \x1c-\x1f. Using the
# same set on both sides keeps ``encode`` and ``tf_encode`` identical.
_WHITESPACE = re.compile(r"[ \t\n\v\f\r]+")
_PUNCTUATION = r"""([.,!?;:"()])"""
_PUNCTUATION_RE = re.compile(_PUNCTUATION)


def _tf():
    # Imported on first use of the TF side only (see the module docstring).
    import tensorflow as tf

    return tf


def _ids_to_decode(ids: Iterable[int], vocab_size: int) -> list[int]:
    """The ids ``decode`` turns into text: up to the first EOS, without PAD/BOS; ids outside the
    vocabulary become UNK (``tf_decode`` does the same, so both agree on any input)."""
    kept = []
    for raw in ids:
        i = int(raw)
        if i == EOS_ID:
            break
        if i in (PAD_ID, BOS_ID):
            continue
        kept.append(i if 0 <= i < vocab_size else UNK_ID)
    return kept


def _tf_ids_to_decode(ids: tf.Tensor | tf.RaggedTensor, vocab_size: int) -> tf.RaggedTensor:
    """In-graph ``_ids_to_decode`` for a batch: ``(batch, length)`` ids -> ragged kept ids."""
    tf = _tf()
    if isinstance(ids, tf.RaggedTensor):
        ids = ids.to_tensor(default_value=PAD_ID)
    ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
    ids = tf.where((ids >= 0) & (ids < vocab_size), ids, UNK_ID)
    # An exclusive cumulative count of EOS is 0 exactly before (and at) the first EOS; dropping
    # EOS itself as well leaves the prefix before the first EOS.
    eos_seen = tf.math.cumsum(tf.cast(ids == EOS_ID, tf.int32), axis=1)
    keep = (eos_seen == 0) & (ids != PAD_ID) & (ids != BOS_ID)
    return tf.ragged.boolean_mask(ids, keep)


class Tokenizer(abc.ABC):
    """The interface of every tokenizer.

    Subclasses implement ``vocab_size``, ``encode``, ``decode``, ``save``, ``load`` and
    ``_build_tf_module``/``tf_encode``/``tf_decode``.
    """

    kind: ClassVar[str]
    _tf_module: Any = None

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """int, the number of ids (special tokens included)."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without BOS/EOS. Unknown tokens map to ``UNK_ID``."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``; subclasses may do it faster."""
        return [self.encode(t) for t in texts]

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: stops at the first EOS, skips PAD and BOS; unknown ids are UNK."""

    def id_to_token(self, token_id: int) -> str:
        """The token string of one id (a word, a SentencePiece piece such as ``"▁the"``).

        The default decodes the id alone; subclasses with a vocabulary return its entry.
        Ids outside the vocabulary give the UNK token's string.
        """
        return self.decode([token_id])

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """The token strings of the ids :meth:`decode` turns into text (up to the first EOS,
        without PAD and BOS), e.g. to show the tokens of a translation."""
        return [self.id_to_token(i) for i in _ids_to_decode(ids, self.vocab_size)]

    def normalize(self, text: str) -> str:
        """``text`` written as :meth:`decode` writes text, without the vocabulary's limits.

        What a reference is compared with when a decoded hypothesis must match it exactly: the
        same spacing, casing and punctuation split, while an out-of-vocabulary word stays itself
        (``decode(encode(text))`` would turn it into UNK and let an UNK hypothesis match).
        """
        return " ".join(text.split())

    @abc.abstractmethod
    def save(self, directory: str | os.PathLike, prefix: str) -> list[Path]:
        """Write the tokenizer into ``directory`` as files named ``{prefix}.*``; returns them."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: str | os.PathLike, prefix: str) -> Tokenizer:
        """Read a tokenizer written by :meth:`save` with the same ``prefix``."""

    @property
    def tf_module(self) -> tf.Module:
        """``tf.Module`` holding the TF resources of ``tf_encode``/``tf_decode`` (built lazily).

        Attach it to a module you export with ``tf.saved_model.save`` so the resources are
        tracked; see the module docstring.
        """
        if self._tf_module is None:
            # Eagerly, even when first asked inside a tf.function or a tf.data map: the lookup
            # tables outlive that graph (every later pipeline and export uses them).
            with _tf().init_scope():
                self._tf_module = self._build_tf_module()
        return self._tf_module

    @abc.abstractmethod
    def _build_tf_module(self) -> tf.Module: ...

    @abc.abstractmethod
    def tf_encode(self, strings: tf.Tensor) -> tf.RaggedTensor:
        """In-graph ``encode``: ``(batch,)`` tf.string -> ragged int32 ``(batch, (tokens))``."""

    @abc.abstractmethod
    def tf_decode(self, ids: tf.Tensor) -> tf.Tensor:
        """In-graph ``decode``: int ``(batch, length)`` (dense or ragged) -> tf.string
        ``(batch,)``."""

    def tf_sampling_encoder(self, alpha: float, nbest_size: int):
        """An in-graph ``encode`` that samples a segmentation anew at every call (subword
        regularization, for training only): ``(batch,)`` tf.string -> ragged int32. Made
        eagerly (its resources cannot be created while a ``tf.data`` function is traced).

        Raises:
            DataError: the tokenizer has a single segmentation (only SentencePiece samples).
        """
        raise DataError(
            f"a {self.kind} tokenizer cannot sample segmentations; data.subword_regularization "
            "needs data.tokenizer: sentencepiece"
        )


class WordTokenizer(Tokenizer):
    """Whitespace-separated words with a fixed vocabulary.

    Args:
        vocab: Sequence[str], the tokens by id; must start with ``SPECIAL_TOKENS``.
        lowercase: bool, lowercase text before splitting. Defaults to False.
        split_punctuation: bool, make each of ``.,!?;:"()`` a separate token. Defaults to False.

    Text in the vocabulary that looks like a special token (``"<pad>"``) encodes as UNK, so raw text
    can never produce PAD/BOS/EOS ids. ``decode`` joins tokens with single spaces (punctuation
    stays separated: ``"hello , world ."``).
    """

    kind = "word"

    def __init__(
        self, vocab: Sequence[str], *, lowercase: bool = False, split_punctuation: bool = False
    ):
        self.vocab = _checked_vocabulary(vocab, "a word vocabulary")
        self.lowercase = lowercase
        self.split_punctuation = split_punctuation
        self._ids = {t: i for i, t in enumerate(vocab) if i >= len(SPECIAL_TOKENS)}

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        max_size: int | None = None,
        min_count: int = 1,
        lowercase: bool = False,
        split_punctuation: bool = False,
    ) -> WordTokenizer:
        """Count the words of ``texts`` and keep the most frequent.

        Args:
            texts: Iterable[str], training sentences.
            max_size: int | None, the largest vocabulary size, special tokens included. None:
                every word with ``min_count`` occurrences. Defaults to None.
            min_count: int, drop words seen fewer times. Defaults to 1.
            lowercase, split_punctuation: bool, see the class. Default to False.

        Returns:
            WordTokenizer whose vocabulary is the special tokens, then words by decreasing count,
            ties broken alphabetically (so the result does not depend on the text order).
        """
        if max_size is not None and max_size < len(SPECIAL_TOKENS):
            raise UserError(f"the vocabulary size must be >= {len(SPECIAL_TOKENS)}, got {max_size}")
        tokenizer = cls(SPECIAL_TOKENS, lowercase=lowercase, split_punctuation=split_punctuation)
        counts = collections.Counter()
        for text in texts:
            counts.update(tokenizer.split(text))
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        words = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[: max_size - len(SPECIAL_TOKENS)]
        return cls(
            [*SPECIAL_TOKENS, *words], lowercase=lowercase, split_punctuation=split_punctuation
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, text: str) -> list[str]:
        """The tokens of ``text`` (lowercased and punctuation split off if configured)."""
        if self.lowercase:
            text = text.lower()
        if self.split_punctuation:
            text = _PUNCTUATION_RE.sub(r" \1 ", text)
        return [t for t in _WHITESPACE.split(text) if t]

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(t, UNK_ID) for t in self.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocab[i] for i in _ids_to_decode(ids, self.vocab_size))

    def id_to_token(self, token_id: int) -> str:
        token_id = int(token_id)
        return self.vocab[token_id if 0 <= token_id < self.vocab_size else UNK_ID]

    def normalize(self, text: str) -> str:
        return " ".join(self.split(text))

    def save(self, directory: str | os.PathLike, prefix: str) -> list[Path]:
        """Write ``{prefix}.vocab`` (one token per line, by id) and ``{prefix}.json`` (options)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab_path = directory / f"{prefix}.vocab"
        options_path = directory / f"{prefix}.json"
        _write_vocabulary(vocab_path, self.vocab)
        options = {
            "kind": self.kind,
            "lowercase": self.lowercase,
            "split_punctuation": self.split_punctuation,
        }
        options_path.write_text(json.dumps(options, indent=2) + "\n", encoding="utf-8")
        return [vocab_path, options_path]

    @classmethod
    def load(cls, directory: str | os.PathLike, prefix: str) -> WordTokenizer:
        directory = Path(directory)
        vocab_path = directory / f"{prefix}.vocab"
        options = _read_json(directory / f"{prefix}.json")
        vocab = _read_vocabulary(vocab_path)
        return cls(
            vocab,
            lowercase=bool(options.get("lowercase", False)),
            split_punctuation=bool(options.get("split_punctuation", False)),
        )

    def _build_tf_module(self) -> tf.Module:
        tf = _tf()
        module = tf.Module(name="word_tokenizer")
        _add_lookup(module, self.vocab)
        return module

    def tf_encode(self, strings: tf.Tensor) -> tf.RaggedTensor:
        tf = _tf()
        strings = tf.convert_to_tensor(strings, tf.string)
        if self.lowercase:
            strings = tf.strings.lower(strings, encoding="utf-8")
        if self.split_punctuation:
            strings = tf.strings.regex_replace(strings, _PUNCTUATION, r" \1 ")
        tokens = tf.strings.split(strings)
        return tf.ragged.map_flat_values(self.tf_module.table.lookup, tokens)

    def tf_decode(self, ids: tf.Tensor) -> tf.Tensor:
        tf = _tf()
        kept = _tf_ids_to_decode(ids, self.vocab_size)
        words = tf.gather(self.tf_module.vocab, kept)
        return tf.strings.reduce_join(words, axis=1, separator=" ")


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece (BPE or unigram) subword model.

    Args:
        model_proto: bytes, the serialized SentencePiece model (the content of a ``.model`` file).
            Its special ids must be pad 0, unk 1, bos 2, eos 3 (as :meth:`train` makes them).

    Unknown pieces decode as SentencePiece's `` ⁇ `` on both the Python and the TF side.
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self._processor = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self._samplers: dict = {}  # (alpha, nbest_size) -> sampling tf_text tokenizer
        found = (
            self._processor.pad_id(),
            self._processor.unk_id(),
            self._processor.bos_id(),
            self._processor.eos_id(),
        )
        if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise DataError(
                "a SentencePiece model needs pad/unk/bos/eos ids 0/1/2/3, this one has "
                f"{'/'.join(map(str, found))}"
            )

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "bpe",
        character_coverage: float = 1.0,
        lowercase: bool = False,
    ) -> SentencePieceTokenizer:
        """Train a SentencePiece model in memory.

        Args:
            texts: Iterable[str], training sentences (empty ones are ignored).
            vocab_size: int, the vocabulary size, special tokens included. A soft limit
                (``hard_vocab_limit=False``): a tiny corpus may give fewer pieces.
            model_type: str, ``"bpe"`` or ``"unigram"``. Defaults to ``"bpe"``.
            character_coverage: float, the share of characters covered by the alphabet; rarer
                characters become UNK. Defaults to 1.0 (all; use ~0.9995 for CJK).
            lowercase: bool, case-fold inside the model (normalization rule ``nmt_nfkc_cf``), so
                that ``tf_encode`` lowercases exactly as ``encode`` does. Defaults to False
                (``nmt_nfkc``).

        Returns:
            SentencePieceTokenizer.

        Raises:
            UserError: an unknown ``model_type`` or a setting SentencePiece rejects.
        """
        import sentencepiece as spm

        if model_type not in ("bpe", "unigram"):
            raise UserError(
                f"SentencePiece model_type must be `bpe` or `unigram`, got `{model_type}`"
            )
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(t for t in texts if t.strip()),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                pad_piece=PAD,
                unk_piece=UNK,
                bos_piece=BOS,
                eos_piece=EOS,
                hard_vocab_limit=False,
                num_threads=os.cpu_count() or 1,
                minloglevel=2,  # no per-iteration training log on stderr
            )
        except RuntimeError as error:
            raise UserError(f"SentencePiece training failed: {error}") from None
        return cls(model.getvalue())

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._processor.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._processor.encode(list(texts), out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        return self._processor.decode(_ids_to_decode(ids, self.vocab_size))

    def id_to_token(self, token_id: int) -> str:
        token_id = int(token_id)
        return self._processor.id_to_piece(token_id if 0 <= token_id < self.vocab_size else UNK_ID)

    def save(self, directory: str | os.PathLike, prefix: str) -> list[Path]:
        """Write ``{prefix}.model`` (the serialized model, loadable by any SentencePiece tool)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{prefix}.model"
        path.write_bytes(self.model_proto)
        return [path]

    @classmethod
    def load(cls, directory: str | os.PathLike, prefix: str) -> SentencePieceTokenizer:
        path = Path(directory) / f"{prefix}.model"
        with _sentencepiece_file(path):
            return cls(path.read_bytes())

    def _build_tf_module(self) -> tf.Module:
        tf = _tf()
        import tensorflow_text as tf_text

        module = tf.Module(name="sentencepiece_tokenizer")
        # A tf.Module itself; it tracks the model as a resource for SavedModel export.
        module.sentencepiece = tf_text.SentencepieceTokenizer(
            model=self.model_proto, out_type=tf.int32, name=_sentencepiece_name(self.model_proto)
        )
        return module

    def tf_encode(self, strings: tf.Tensor) -> tf.RaggedTensor:
        tf = _tf()
        strings = tf.convert_to_tensor(strings, tf.string)
        return self.tf_module.sentencepiece.tokenize(strings)

    def tf_sampling_encoder(self, alpha: float, nbest_size: int):
        """Sample one segmentation per call (Kudo 2018): among the ``nbest_size`` best
        (-1: all of them, unigram models) with probabilities sharpened by ``alpha``; a BPE
        model drops merges with probability ``alpha`` (BPE-dropout). Not seeded: SentencePiece
        draws from its own generator, so a resumed run does not repeat the same samples."""
        tf = _tf()
        key = (float(alpha), int(nbest_size))
        if key not in self._samplers:
            import tensorflow_text as tf_text

            # A tokenizer of its own, outside tf_module: an export never samples.
            self._samplers[key] = tf_text.SentencepieceTokenizer(
                model=self.model_proto,
                out_type=tf.int32,
                nbest_size=key[1],
                alpha=key[0],
                name=f"{_sentencepiece_name(self.model_proto)}_sampling",
            )
        sampler = self._samplers[key]
        return lambda strings: sampler.tokenize(tf.convert_to_tensor(strings, tf.string))

    def tf_decode(self, ids: tf.Tensor) -> tf.Tensor:
        return self.tf_module.sentencepiece.detokenize(_tf_ids_to_decode(ids, self.vocab_size))


class SentencePieceVocabTokenizer(Tokenizer):
    """SentencePiece segmentation with a separate vocabulary: pieces are looked up by string.

    How OPUS-MT (Marian) and OpenNMT-tf models tokenize: the SentencePiece model only splits the
    text into pieces, and a vocabulary file (one for both sides, often) gives each piece its id.
    The SentencePiece model's own ids and special pieces are not used, so any SentencePiece
    model works, whatever its special ids.

    Args:
        model_proto: bytes, the serialized SentencePiece model.
        vocab: Sequence[str], the pieces by id; must start with ``SPECIAL_TOKENS``. A piece not
            in it encodes as UNK.
        add_eos: bool, end every encoding with EOS (Marian's source side: its models were
            trained on sources that end with ``</s>``). Defaults to False.

    ``decode`` joins the pieces of the ids as SentencePiece does (``▁`` becomes a space); UNK
    decodes as its string ``<unk>``.
    """

    kind = "sentencepiece_vocab"

    def __init__(self, model_proto: bytes, vocab: Sequence[str], *, add_eos: bool = False):
        import sentencepiece as spm

        self.add_eos = bool(add_eos)
        self.model_proto = bytes(model_proto)
        self._processor = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self.vocab = _checked_vocabulary(vocab, "a SentencePiece vocabulary")
        self._ids = {t: i for i, t in enumerate(self.vocab) if i >= len(SPECIAL_TOKENS)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        ids = [self._ids.get(p, UNK_ID) for p in self._processor.encode(text, out_type=str)]
        return [*ids, EOS_ID] if self.add_eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        pieces = [self.vocab[i] for i in _ids_to_decode(ids, self.vocab_size)]
        return self._processor.decode_pieces(pieces)

    def id_to_token(self, token_id: int) -> str:
        token_id = int(token_id)
        return self.vocab[token_id if 0 <= token_id < self.vocab_size else UNK_ID]

    def save(self, directory: str | os.PathLike, prefix: str) -> list[Path]:
        """Write ``{prefix}.model`` (the SentencePiece model), ``{prefix}.vocab`` (one piece
        per line, by id) and ``{prefix}.json`` (the options)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model_path, vocab_path = directory / f"{prefix}.model", directory / f"{prefix}.vocab"
        options_path = directory / f"{prefix}.json"
        model_path.write_bytes(self.model_proto)
        _write_vocabulary(vocab_path, self.vocab)
        options = {"kind": self.kind, "add_eos": self.add_eos}
        options_path.write_text(json.dumps(options, indent=2) + "\n", encoding="utf-8")
        return [model_path, vocab_path, options_path]

    @classmethod
    def load(cls, directory: str | os.PathLike, prefix: str) -> SentencePieceVocabTokenizer:
        directory = Path(directory)
        path = directory / f"{prefix}.model"
        vocab = _read_vocabulary(directory / f"{prefix}.vocab")
        options = _read_json(directory / f"{prefix}.json")
        with _sentencepiece_file(path):
            return cls(path.read_bytes(), vocab, add_eos=bool(options.get("add_eos", False)))

    def _build_tf_module(self) -> tf.Module:
        tf = _tf()
        import tensorflow_text as tf_text

        module = tf.Module(name="sentencepiece_vocab_tokenizer")
        module.sentencepiece = tf_text.SentencepieceTokenizer(
            model=self.model_proto, out_type=tf.string, name=_sentencepiece_name(self.model_proto)
        )
        _add_lookup(module, self.vocab)
        return module

    def tf_encode(self, strings: tf.Tensor) -> tf.RaggedTensor:
        tf = _tf()
        pieces = self.tf_module.sentencepiece.tokenize(tf.convert_to_tensor(strings, tf.string))
        ids = tf.ragged.map_flat_values(self.tf_module.table.lookup, pieces)
        if self.add_eos:
            eos = tf.fill([ids.nrows(), 1], tf.constant(EOS_ID, tf.int32))
            ids = tf.concat([ids, eos], axis=1)
        return ids

    def tf_decode(self, ids: tf.Tensor) -> tf.Tensor:
        tf = _tf()
        pieces = tf.gather(self.tf_module.vocab, _tf_ids_to_decode(ids, self.vocab_size))
        return self.tf_module.sentencepiece.detokenize(pieces)


@contextlib.contextmanager
def _sentencepiece_file(path: Path):
    """Turn a missing or corrupt SentencePiece model file into a DataError naming it."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"missing SentencePiece model file {path}") from None
    except RuntimeError as error:  # sentencepiece's error for a corrupt model
        raise DataError(f"cannot read the SentencePiece model {path}: {error}") from None


def _sentencepiece_name(model_proto: bytes) -> str:
    """A name of its own for a model's tensorflow-text SentencePiece resource.

    A SavedModel restores these resources by name: two different models under the default name
    (a source and a target model) would both come back as the first one, and the target side
    would be decoded with the source model. Equal models may share one.
    """
    return f"sentencepiece_{hashlib.sha256(model_proto).hexdigest()[:16]}"


def _add_lookup(module: tf.Module, vocab: list[str]) -> None:
    """Give ``module`` the token -> id ``table`` (unknown tokens and the special tokens' names
    give UNK) and the id -> token ``vocab`` of a vocabulary."""
    tf = _tf()
    initializer = tf.lookup.KeyValueTensorInitializer(
        tf.constant(vocab[len(SPECIAL_TOKENS) :], tf.string),
        tf.range(len(SPECIAL_TOKENS), len(vocab), dtype=tf.int32),
    )
    # Tracked as a module attribute, so a SavedModel holding the module restores the table.
    module.table = tf.lookup.StaticHashTable(initializer, default_value=UNK_ID)
    module.vocab = tf.constant(vocab, tf.string)


def _checked_vocabulary(vocab: Sequence[str], what: str) -> list[str]:
    """``vocab`` as a list, refused (DataError) unless it starts with the special tokens and
    has no duplicate."""
    vocab = list(vocab)
    if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise DataError(
            f"{what} must start with {', '.join(SPECIAL_TOKENS)}, got "
            f"{', '.join(vocab[: len(SPECIAL_TOKENS)])}"
        )
    if len(set(vocab)) != len(vocab):
        duplicates = [t for t, c in collections.Counter(vocab).items() if c > 1]
        raise DataError(f"duplicate tokens in {what}: {duplicates[:10]}")
    return vocab


def _write_vocabulary(path: Path, vocab: Sequence[str]) -> None:
    # newline="": no newline translation, the file is exactly the tokens joined by "\n".
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(vocab) + "\n")


def _read_vocabulary(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            # Split on "\n" only: str.splitlines() would also split on \x1c, \u2028, ...,
            # which may occur inside a token.
            vocab = f.read().split("\n")
    except FileNotFoundError:
        raise DataError(f"missing tokenizer vocabulary file {path}") from None
    if vocab and vocab[-1] == "":
        vocab.pop()
    return vocab


TOKENIZER_KINDS: dict[str, type[Tokenizer]] = {
    WordTokenizer.kind: WordTokenizer,
    SentencePieceTokenizer.kind: SentencePieceTokenizer,
    SentencePieceVocabTokenizer.kind: SentencePieceVocabTokenizer,
}


def build_tokenizers(
    kind: str,
    source_texts: Sequence[str],
    target_texts: Sequence[str],
    *,
    vocab_size: int | None,
    shared: bool,
    lowercase: bool,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
    split_punctuation: bool = True,
    min_count: int = 1,
) -> tuple[Tokenizer, Tokenizer]:
    """Build the source and target tokenizers from training texts.

    Args:
        kind: str, ``"word"`` or ``"sentencepiece"``.
        source_texts, target_texts: Sequence[str], the training sentences of each side.
        vocab_size: int | None, vocabulary size per tokenizer, special tokens included. Required
            for ``sentencepiece``; None for ``word`` keeps every word with ``min_count``.
        shared: bool, one tokenizer trained on both sides, returned twice (the same object).
        lowercase: bool, lowercase text (inside the model for SentencePiece).
        model_type: str, SentencePiece ``"bpe"`` or ``"unigram"``. Defaults to ``"bpe"``.
        character_coverage: float, SentencePiece character coverage. Defaults to 1.0.
        split_punctuation: bool, word tokenizer: split ``.,!?;:"()`` off words. Defaults to True
            (real corpora have punctuation attached; the toy task has none).
        min_count: int, word tokenizer: drop rarer words. Defaults to 1.

    Returns:
        (source_tokenizer, target_tokenizer).

    Raises:
        UserError: an unknown ``kind`` or a missing ``vocab_size`` for SentencePiece.
    """
    buildable = (WordTokenizer.kind, SentencePieceTokenizer.kind)
    if kind not in buildable:
        raise UserError(
            f"unknown tokenizer kind `{kind}`; the kinds learned from data are: "
            f"{', '.join(sorted(buildable))}"
        )
    if kind == SentencePieceTokenizer.kind and vocab_size is None:
        raise UserError("a SentencePiece tokenizer needs a vocab_size")

    def build(texts: Iterable[str]) -> Tokenizer:
        if kind == WordTokenizer.kind:
            return WordTokenizer.build(
                texts,
                max_size=vocab_size,
                min_count=min_count,
                lowercase=lowercase,
                split_punctuation=split_punctuation,
            )
        return SentencePieceTokenizer.train(
            texts,
            vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            lowercase=lowercase,
        )

    if shared:
        tokenizer = build([*source_texts, *target_texts])
        return tokenizer, tokenizer
    return build(source_texts), build(target_texts)


def token_list(tokenizer: Tokenizer) -> list[str]:
    """The tokenizer's tokens by id (``id_to_token`` of every id), special tokens first."""
    return [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]


def save_tokenizers(
    directory: str | os.PathLike, source_tokenizer: Tokenizer, target_tokenizer: Tokenizer
) -> Path:
    """Save both tokenizers and a ``tokenizer.json`` manifest into ``directory``.

    A shared tokenizer (the same object on both sides) is written once with prefix ``shared``;
    otherwise the prefixes are ``source`` and ``target``.

    Args:
        directory: str | PathLike, created if missing (typically the run directory).
        source_tokenizer, target_tokenizer: Tokenizer.

    Returns:
        Path of the manifest.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shared = source_tokenizer is target_tokenizer
    sides = {}
    for side, tokenizer in (("source", source_tokenizer), ("target", target_tokenizer)):
        prefix = "shared" if shared else side
        if not (shared and side == "target"):
            files = tokenizer.save(directory, prefix)
        sides[side] = {
            "kind": tokenizer.kind,
            "prefix": prefix,
            "vocab_size": tokenizer.vocab_size,
            "files": [f.name for f in files],
        }
    manifest = {"format_version": MANIFEST_VERSION, "shared": shared, **sides}
    path = directory / MANIFEST_NAME
    # Written last and atomically: a complete manifest means complete tokenizer files, which
    # is what other workers wait for.
    write_atomic(path, json.dumps(manifest, indent=2) + "\n")
    return path


def load_tokenizers(directory: str | os.PathLike) -> tuple[Tokenizer, Tokenizer]:
    """Load the tokenizers saved by :func:`save_tokenizers` from ``directory``.

    Returns:
        (source_tokenizer, target_tokenizer); the same object twice if they were shared.

    Raises:
        DataError: a missing or invalid manifest, or missing tokenizer files.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    manifest = _read_json(path)
    try:
        version = manifest["format_version"]
        if version != MANIFEST_VERSION:
            raise DataError(f"{path}: unsupported tokenizer manifest format_version {version}")
        loaded = []
        for side in ("source", "target"):
            entry = manifest[side]
            if manifest["shared"] and side == "target":
                loaded.append(loaded[0])
                continue
            kind = entry["kind"]
            if kind not in TOKENIZER_KINDS:
                raise DataError(f"{path}: unknown tokenizer kind `{kind}` for the {side} side")
            loaded.append(TOKENIZER_KINDS[kind].load(directory, entry["prefix"]))
    except (KeyError, TypeError) as error:
        raise DataError(f"{path}: invalid tokenizer manifest (missing {error})") from None
    return loaded[0], loaded[1]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"missing tokenizer file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data
