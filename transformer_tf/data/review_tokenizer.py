"""The review tokenizer (``kind: review``): :func:`clean_text`, whitespace words and n-grams, a
frequency vocabulary; the text-to-ids interface of the classification task.

:class:`ReviewTokenizer` has the :class:`~transformer_tf.data.tokenizers.Tokenizer` methods of
the translation tokenizers; its ``tf_encode`` does the same in graph with
:func:`tf_clean_text`, the in-graph twin of :func:`clean_text`, so that an exported model takes
raw strings. :meth:`ReviewTokenizer.save` / :meth:`ReviewTokenizer.load` persist it in a run
directory so that evaluation and export reuse the exact training ids.

Token ids: 0 is padding (``PAD_ID``) and 1 is out-of-vocabulary (``UNK_ID``), which is also how
``keras.layers.TextVectorization`` numbers its vocabulary.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from transformer_tf.data.special_tokens import PAD_ID, UNK_ID
from transformer_tf.data.tokenizers import TOKENIZER_KINDS, Tokenizer
from transformer_tf.errors import DataError
from transformer_tf.files import write_atomic

__all__ = ["ReviewTokenizer", "clean_text", "tf_clean_text"]

VECTORIZER_FILE = "vectorizer.json"


# --- Cleaning --------------------------------------------------------------------------------
# The rules are (pattern, replacement) pairs applied in order by both `re.sub` (clean_text) and
# `tf.strings.regex_replace` (RE2, tf_clean_text). To get the same result from both engines they
# use only the common subset: explicit character classes with literal characters (no \w, \s or
# \uXXXX, whose meaning differs between the engines), no lookarounds, `$` only once no newline is
# left (Python's `$` also matches before a final newline), and `\1` group references.


def _literal_class(chars: str, ranges: str = "") -> str:
    """A `[...]` class of the literal `chars` (each escaped) plus raw `ranges` like 'a-z'."""
    return "[" + "".join("\\" + c if not c.isalnum() else c for c in chars) + ranges + "]"


# Whitespace (ASCII, no-break and typographic spaces, line/paragraph separators) -> one space.
_WHITESPACE = "[ \t\n\r\f\v\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
# Soft hyphen, zero-width characters, direction marks and byte-order marks carry no text.
_INVISIBLE = "[\u00ad\u200b-\u200f\u2060\ufeff]"
# IMDb texts contain Windows-1252 punctuation mis-decoded as C1 control characters (\x85 for
# "...", \x96 for an en dash, \x91/\x92 for quotes); map them and their Unicode forms to ASCII so
# each is one vocabulary entry instead of several.
_NORMALIZE = (
    ("[\u2018\u2019\u00b4`\x91\x92]", "'"),  # apostrophe-like marks: don’t, don´t, don`t
    ("[\u201c\u201d\u201e\x84\x93\x94]", '"'),
    ("[\u2013\u2014\x96\x97]", "-"),
    ("[\u2026\x85]", "..."),
)
# Every ASCII punctuation mark except the apostrophe, plus Latin-1 signs (¡ ¿ « » £ ½ ...), × ÷,
# the general-punctuation block, currency signs and leftover C1 punctuation (\x95 bullet, ...).
_PUNCTUATION = _literal_class(
    '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~',
    "\u00a1-\u00bf\u00d7\u00f7\u2010-\u2027\u2030-\u205e\u20a0-\u20bf\x82\x86-\x89\x8b\x95\x98\x99\x9b",
)

_RULES_BEFORE_LOWER = (
    # HTML tags: IMDb has ~100k `<br />` plus a few <i>, <hr>. A tag starts with a letter or "/",
    # so comparisons like "a < b" or "<3" are text, not tags.
    ("</?[A-Za-z][^<>]*>", " "),
    (_INVISIBLE, ""),
    (_WHITESPACE, " "),
)
_RULES_AFTER_LOWER = (
    *_NORMALIZE,
    ("(" + _PUNCTUATION + ")", r" \1 "),
    # The text is padded with a space on both sides before these two rules, so "at a word edge"
    # is "next to a space": apostrophes at the start or end of a word become their own token
    # ('quoted' -> ' quoted ', actors' -> actors '), the ones inside a word stay (don't, rock'n'roll).
    (" ('+)", r" \1 "),
    ("('+) ", r" \1 "),
    (" +", " "),
    ("^ | $", ""),  # the text has no newline left here, so `$` is the end of the string
)
_PY_RULES_BEFORE = tuple((re.compile(p), r) for p, r in _RULES_BEFORE_LOWER)
_PY_RULES_AFTER = tuple((re.compile(p), r) for p, r in _RULES_AFTER_LOWER)


def clean_text(text: str, lowercase: bool = True) -> str:
    """Normalize one review for whitespace tokenization.

    Removes HTML tags (``<br />``, ``<br/>``, ``<i>`` ...), optionally lowercases, maps curly
    quotes, dashes and ellipses (including their mis-decoded Windows-1252 forms) to ASCII, puts
    spaces around punctuation so each mark is its own token (apostrophes inside a word stay:
    ``don't``), and collapses whitespace to single spaces with none at either end.

    Example: ``clean_text("Great!<br /><br />I DON'T know...")`` -> ``"great ! i don't know . . ."``.

    Args:
        text: str, one raw review.
        lowercase: bool, default True.

    Returns:
        str, tokens separated by single spaces. :func:`tf_clean_text` gives the same result in
        graph mode.
    """
    for pattern, replacement in _PY_RULES_BEFORE:
        text = pattern.sub(replacement, text)
    if lowercase:
        text = text.lower()
    text = f" {text} "
    for pattern, replacement in _PY_RULES_AFTER:
        text = pattern.sub(replacement, text)
    return text


def tf_clean_text(strings: tf.Tensor, lowercase: bool = True) -> tf.Tensor:
    """In-graph :func:`clean_text` with ``tf.strings.regex_replace``, for an exported model.

    Args:
        strings: tf.Tensor of dtype string, any shape (e.g. [batch]), UTF-8 encoded.
        lowercase: bool, default True; must match the setting used for training.

    Returns:
        tf.Tensor of dtype string with the shape of `strings`; element-wise equal to
        ``clean_text(s, lowercase)`` (Unicode lowercasing through ``tf.strings.lower`` with
        ``encoding="utf-8"``, which agrees with ``str.lower`` on the IMDb corpus).
    """
    strings = tf.convert_to_tensor(strings, dtype=tf.string)
    for pattern, replacement in _RULES_BEFORE_LOWER:
        strings = tf.strings.regex_replace(strings, pattern, replacement)
    if lowercase:
        strings = tf.strings.lower(strings, encoding="utf-8")
    strings = tf.strings.join([" ", strings, " "])
    for pattern, replacement in _RULES_AFTER_LOWER:
        strings = tf.strings.regex_replace(strings, pattern, replacement)
    return strings


# --- Tokenizer -------------------------------------------------------------------------------


class ReviewTokenizer(Tokenizer):
    """:func:`clean_text`, whitespace words (plus 2..n-grams) and a frequency vocabulary.

    The text-to-ids interface of the classification task, with the :class:`Tokenizer` methods of
    the translation tokenizers. ``encode`` cleans in Python (:func:`clean_text`), ``tf_encode``
    in graph (:func:`tf_clean_text`, the path an exported model uses); both then split on spaces,
    append the 2..n-grams after the words when ``ngrams > 1`` (what
    ``keras.layers.TextVectorization(ngrams=n)`` emits) and look the tokens up.

    Ids: 0 = padding (the empty token), 1 = out of vocabulary (``"[UNK]"``), then the tokens by
    decreasing training frequency. Unlike the translation tokenizers, ids 2 and 3 are ordinary
    tokens (a classifier needs no BOS/EOS): ``decode`` skips padding only.

    Args:
        vocab: Sequence[str], the tokens by id; must start with ``""`` and ``"[UNK]"``, no
            duplicates.
        ngrams: int >= 1, 1 for words only; n > 1 also emits the 2..n-grams. Defaults to 1.
        lowercase: bool, lowercase in cleaning. Defaults to True.
        max_tokens: int | None, the vocabulary-size limit the vocabulary was built with (padding
            and OOV included); the vocabulary itself may be shorter. None: ``len(vocab)``.
        max_length: int | None, the tokens per example the run keeps (recorded in the saved
            settings, not applied by ``encode``: truncation is :func:`truncate`'s job).
            Defaults to None.
    """

    kind = "review"
    OOV = "[UNK]"

    def __init__(
        self,
        vocab: Sequence[str],
        *,
        ngrams: int = 1,
        lowercase: bool = True,
        max_tokens: int | None = None,
        max_length: int | None = None,
    ):
        vocab = [str(token) for token in vocab]
        if len(vocab) < 2 or vocab[PAD_ID] != "" or vocab[UNK_ID] != self.OOV:
            raise DataError(
                f"a review vocabulary must start with the padding token (empty) and {self.OOV}, "
                f"found {vocab[:2]}"
            )
        if len(set(vocab)) != len(vocab):
            raise DataError("duplicate tokens in the review vocabulary")
        if ngrams < 1:
            raise ValueError(f"ngrams must be >= 1, got {ngrams}")
        self.vocab = vocab
        self.ngrams = int(ngrams)
        self.lowercase = bool(lowercase)
        self.max_tokens = len(vocab) if max_tokens is None else int(max_tokens)
        self.max_length = None if max_length is None else int(max_length)
        # Padding and OOV are never looked up: every other string (the empty one, "[UNK]") is
        # OOV, as in TextVectorization.
        self._ids = {token: i for i, token in enumerate(vocab) if i > UNK_ID}

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        vocab_size: int,
        ngrams: int = 1,
        lowercase: bool = True,
        max_length: int | None = None,
    ) -> ReviewTokenizer:
        """Clean the *training* ``texts`` and keep their most frequent tokens.

        A word seen only in validation or test data must map to the OOV id so that evaluation
        measures generalization: pass the training texts only. The counting and its tie order
        are ``keras.layers.TextVectorization.adapt``'s, as before this class existed.

        Args:
            texts: Sequence[str], raw training texts (cleaned here).
            vocab_size: int >= 3, the vocabulary-size limit including padding and OOV.
            ngrams: int >= 1, see the class. Defaults to 1.
            lowercase: bool, see the class. Defaults to True.
            max_length: int | None, recorded in the settings (see the class). Defaults to None.

        Returns:
            ReviewTokenizer.

        Raises:
            ValueError: an argument is out of range.
            DataError: ``texts`` is empty.
        """
        if vocab_size < 3:
            raise ValueError(
                f"vocab_size must be >= 3 (padding, OOV and one token), got {vocab_size}"
            )
        if ngrams < 1 or (max_length is not None and max_length < 1):
            raise ValueError(f"max_length and ngrams must be >= 1, got {max_length} and {ngrams}")
        if len(texts) == 0:
            raise DataError("cannot build a vocabulary from an empty list of training texts")
        cleaned = [clean_text(t, lowercase=lowercase) for t in texts]
        layer = keras.layers.TextVectorization(
            max_tokens=vocab_size,
            standardize=None,  # the texts are cleaned above
            split="whitespace",
            ngrams=ngrams if ngrams > 1 else None,
            output_mode="int",
        )
        layer.adapt(tf.data.Dataset.from_tensor_slices(cleaned).batch(1024))
        return cls(
            layer.get_vocabulary(),
            ngrams=ngrams,
            lowercase=lowercase,
            max_tokens=vocab_size,
            max_length=max_length,
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def clean(self, text: str) -> str:
        """:func:`clean_text` with this tokenizer's ``lowercase``."""
        return clean_text(text, lowercase=self.lowercase)

    def tokens(self, text: str) -> list[str]:
        """The tokens of ``text``: its cleaned words, then its 2..n-grams (n = ``ngrams``)."""
        words = [w for w in self.clean(text).split(" ") if w]
        tokens = list(words)
        for n in range(2, self.ngrams + 1):
            tokens.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
        return tokens

    def encode(self, text: str) -> list[int]:
        """Ids of the tokens of raw ``text`` (cleaning included), not truncated."""
        return [self._ids.get(token, UNK_ID) for token in self.tokens(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """The tokens of ``ids`` joined by spaces; padding skipped, unknown ids are ``[UNK]``."""
        return " ".join(
            self.vocab[i] if 0 <= i < self.vocab_size else self.OOV
            for i in (int(raw) for raw in ids)
            if i != PAD_ID
        )

    def save(self, directory: str | os.PathLike, prefix: str = "vocab") -> list[Path]:
        """Write ``{prefix}.txt`` (the tokens by id, one per line; line 1 is the empty padding
        token) and ``vectorizer.json`` (the settings, naming the vocabulary file).

        These are the files of run directories made before this class (``vocab/vocab.txt``,
        ``vocab/vectorizer.json``), so those still load. ``vectorizer.json`` has a fixed name:
        a directory holds one review tokenizer. Files are written to a temporary name and
        renamed, so a crash never leaves a half-written vocabulary.

        Returns:
            [vocabulary path, settings path].
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab_file = f"{prefix}.txt"
        settings = {
            "vocab_size": self.max_tokens,
            "max_length": self.max_length,
            "ngrams": self.ngrams,
            "lowercase": self.lowercase,
            "vocabulary_file": vocab_file,
            "num_tokens": self.vocab_size,
        }
        vocab_path, settings_path = directory / vocab_file, directory / VECTORIZER_FILE
        # Tokens never contain "\n" (it is whitespace), but may contain other line breaks such as
        # U+2028, so the file is written and read with "\n" only, never with splitlines().
        write_atomic(vocab_path, "\n".join(self.vocab) + "\n")
        write_atomic(settings_path, json.dumps(settings, indent=2) + "\n")
        return [vocab_path, settings_path]

    @classmethod
    def load(cls, directory: str | os.PathLike, prefix: str = "vocab") -> ReviewTokenizer:
        """Read the tokenizer :meth:`save` wrote into ``directory``.

        ``vectorizer.json`` names the vocabulary file; ``prefix`` only gives its name
        (``{prefix}.txt``) for settings that do not.

        Raises:
            DataError: a file is missing or malformed.
        """
        directory = Path(directory)
        settings_path = directory / VECTORIZER_FILE
        try:
            settings = json.loads(settings_path.read_text(encoding="utf-8"))
            vocab_path = directory / settings.get("vocabulary_file", f"{prefix}.txt")
            max_length = settings.get("max_length")
            options = dict(
                max_tokens=int(settings["vocab_size"]),
                max_length=None if max_length is None else int(max_length),
                ngrams=int(settings["ngrams"]),
                lowercase=bool(settings["lowercase"]),
            )
            text = vocab_path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise DataError(
                f"vocabulary files missing in {directory}: {exc.filename} not found (expected "
                f"{prefix}.txt and {VECTORIZER_FILE} written by training)"
            ) from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError too
            raise DataError(f"malformed {settings_path}: {exc}") from exc
        if not text.endswith("\n"):
            raise DataError(f"{vocab_path} is truncated (no final newline)")
        try:
            return cls(text[:-1].split("\n"), **options)
        except DataError as exc:
            raise DataError(f"{vocab_path}: {exc}") from None

    def _build_tf_module(self) -> tf.Module:
        module = tf.Module(name="review_tokenizer")
        words = self.vocab[UNK_ID + 1 :]
        # Tracked as a module attribute, so a SavedModel holding the module restores the table.
        module.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(words, tf.string),
                tf.range(UNK_ID + 1, self.vocab_size, dtype=tf.int32),
            ),
            default_value=UNK_ID,
        )
        module.vocab = tf.constant(self.vocab, tf.string)
        return module

    def tf_encode(self, strings: tf.Tensor) -> tf.RaggedTensor:
        """In-graph :meth:`encode`: ``(batch,)`` raw tf.string -> ragged int32
        ``(batch, (tokens))``: :func:`tf_clean_text`, split, n-grams, lookup."""
        cleaned = tf_clean_text(strings, lowercase=self.lowercase)
        tokens = tf.strings.split(cleaned)
        if self.ngrams > 1:  # words, then 2..n-grams, as `tokens` does
            tokens = tf.strings.ngrams(
                tokens, ngram_width=tuple(range(1, self.ngrams + 1)), separator=" "
            )
        return tf.ragged.map_flat_values(self.tf_module.table.lookup, tokens)

    def tf_decode(self, ids: tf.Tensor) -> tf.Tensor:
        """In-graph :meth:`decode`: int ``(batch, length)`` (dense or ragged) -> tf.string
        ``(batch,)``."""
        if isinstance(ids, tf.RaggedTensor):
            ids = ids.to_tensor(default_value=PAD_ID)
        ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
        ids = tf.where((ids >= 0) & (ids < self.vocab_size), ids, UNK_ID)
        kept = tf.ragged.boolean_mask(ids, ids != PAD_ID)
        return tf.strings.reduce_join(tf.gather(self.tf_module.vocab, kept), axis=1, separator=" ")


TOKENIZER_KINDS[ReviewTokenizer.kind] = ReviewTokenizer
