"""IMDb movie-review sentiment data: loading, cleaning, vocabulary and batched ``tf.data`` input.

Two sources give the same :class:`TextSplit` (raw review texts + int32 labels, 1 = positive):

* :func:`load_imdb_directory` reads the official ``aclImdb`` folder (``<split>/{pos,neg}/*.txt``),
  which works offline once the archive is unpacked;
* :func:`load_imdb_tfds` reads ``imdb_reviews`` through tensorflow-datasets (downloads on first use).

The text pipeline is: :func:`split_validation` on the raw texts -> :meth:`ReviewTokenizer.build`
on the *training* texts only -> :func:`make_classification_dataset` (:func:`encode_texts`, then
:func:`truncate`). :class:`ReviewTokenizer` is the text-to-ids interface (the
:class:`~transformer_tf.data.tokenizers.Tokenizer` methods): :func:`clean_text`, words and
n-grams, a frequency vocabulary; its ``tf_encode`` does the same in graph with
:func:`tf_clean_text`, the in-graph twin of :func:`clean_text`, so that an exported model takes
raw strings. :meth:`ReviewTokenizer.save` / :meth:`ReviewTokenizer.load` persist it in a run
directory so that evaluation and export reuse the exact training ids.

Token ids: 0 is padding (``PAD_ID``) and 1 is out-of-vocabulary (``UNK_ID``), which is also how
``keras.layers.TextVectorization`` numbers its vocabulary.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from transformer_tf.data.bucketing import (
    batch_by_length,
    bucket_batch_sizes,
    bucket_lengths,
)
from transformer_tf.data.special_tokens import PAD_ID, UNK_ID
from transformer_tf.data.tokenizers import Tokenizer
from transformer_tf.errors import DataError
from transformer_tf.files import write_atomic

__all__ = [
    "EncodedTexts",
    "ReviewTokenizer",
    "TextSplit",
    "clean_text",
    "document_counts",
    "encode_texts",
    "load_imdb_directory",
    "load_imdb_tfds",
    "make_classification_dataset",
    "review_bucket_boundaries",
    "split_validation",
    "tf_clean_text",
    "truncate",
]

logger = logging.getLogger(__name__)

CLASS_FOLDERS = {"neg": 0, "pos": 1}
VOCAB_FILE = "vocab.txt"
VECTORIZER_FILE = "vectorizer.json"
TRUNCATIONS = ("head", "tail", "head_tail")

# Shown when a dataset is not available locally; keys are the `data:` section of a run config.
_DIRECTORY_HINT = (
    "set `data.source: directory` and `data.path` to an unpacked aclImdb folder (the official "
    "archive aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/sentiment/ unpacks to "
    "aclImdb/ with train/ and test/ inside)"
)
# Threads only overlap the open/read syscalls (the files are ~1 KB each): a few are enough.
_READ_THREADS = 8


@dataclass(eq=False)
class TextSplit:
    """One split of a text-classification corpus.

    Attributes:
        texts: list[str], the review texts (raw unless a caller cleaned them).
        labels: np.ndarray of int32, shape [len(texts)]; 1 = positive, 0 = negative.
        skipped: int, records that were found but could not be read or decoded (not in `texts`).
        files: int, records found in the source (files or tfds examples), skipped ones included.
            Splits derived by :func:`split_validation` count only their own examples.
    """

    texts: list[str]
    labels: np.ndarray
    skipped: int = 0
    files: int = 0

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int32).reshape(-1)
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)


# --- Loading ---------------------------------------------------------------------------------


def _resolve_root(path: Path, splits: Sequence[str]) -> Path:
    """The folder holding the split folders: `path` itself, or `path/aclImdb`."""
    if path.is_file():
        raise DataError(
            f"IMDb path {path} is a file, expected a folder. If it is the downloaded archive, "
            f"unpack it first (`tar xzf {path.name}`) and point at the aclImdb folder it creates."
        )
    if not path.is_dir():
        raise DataError(
            f"IMDb folder not found: {path}. Expected an unpacked aclImdb folder with "
            f"<split>/pos/*.txt and <split>/neg/*.txt inside; {_DIRECTORY_HINT}."
        )
    nested = path / "aclImdb"
    # Accept the folder the archive was unpacked into, unless `path` itself already has the splits.
    if nested.is_dir() and not any((path / split).is_dir() for split in splits):
        return nested
    return path


def _read_review(file: str) -> str | None:
    """The decoded text of one review file, or None when it is unreadable or not UTF-8."""
    try:
        # utf-8-sig: identical to UTF-8 except that a leading byte-order mark is dropped.
        return Path(file).read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None


def _list_reviews(folder: Path) -> list[str]:
    """Sorted paths of the `*.txt` files directly in `folder` (sorted for a deterministic order)."""
    with os.scandir(folder) as entries:
        return sorted(e.path for e in entries if e.name.endswith(".txt") and e.is_file())


def load_imdb_directory(
    path: str | os.PathLike, splits: Sequence[str] = ("train", "test")
) -> dict[str, TextSplit]:
    """Read the official ``aclImdb`` folder layout into one :class:`TextSplit` per split.

    Layout: ``<path>/<split>/pos/*.txt`` (label 1) and ``<path>/<split>/neg/*.txt`` (label 0).
    ``<split>/unsup/`` and any other files (``urls_pos.txt``, ``labeledBow.feat``, ``README``)
    are ignored. `path` may also be a folder that *contains* ``aclImdb/``.

    Within a split, negative reviews come first, then positive ones, each in sorted file-name
    order, so the result does not depend on the file system. Files that are not valid UTF-8 or
    cannot be read are skipped, counted in ``TextSplit.skipped`` and named (up to 3) in a logged
    warning: dropping a handful of broken files out of 25,000 is better than failing the run. An
    empty file is kept as an empty review.

    Args:
        path: str | PathLike, the ``aclImdb`` folder or a folder containing it.
        splits: sequence of str, default ("train", "test"); the split folders to read. Pass only
            the splits you need: a split that is not requested is never checked.

    Returns:
        dict[str, TextSplit] keyed by split name, in the order of `splits`.

    Raises:
        DataError: `path` is missing or is a file; a requested split folder is missing; a class
            folder (``pos``/``neg``) is missing or has no ``.txt`` file.
    """
    given = Path(path).expanduser()
    root = _resolve_root(given, splits)
    result: dict[str, TextSplit] = {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise DataError(
                f"IMDb {split!r} split not found: expected folder {split_dir} with pos/ and neg/ "
                f"inside (found folders: {', '.join(present) or 'none'}). To use a {split} split, "
                f"{_DIRECTORY_HINT}."
            )
        files: list[str] = []
        labels: list[int] = []
        for class_name, label in CLASS_FOLDERS.items():
            class_dir = split_dir / class_name
            if not class_dir.is_dir():
                raise DataError(
                    f"IMDb class folder not found: {class_dir}. Expected {split_dir}/pos and "
                    f"{split_dir}/neg with one review per .txt file."
                )
            class_files = _list_reviews(class_dir)
            if not class_files:
                raise DataError(
                    f"IMDb class folder {class_dir} has no .txt files; expected one review per "
                    f".txt file (is the archive fully unpacked?)."
                )
            files.extend(class_files)
            labels.extend([label] * len(class_files))

        with ThreadPoolExecutor(max_workers=_READ_THREADS) as pool:
            contents = list(pool.map(_read_review, files))  # map keeps the input order
        bad = [f for f, text in zip(files, contents, strict=True) if text is None]
        if bad:
            logger.warning(
                "Skipped %d of %d IMDb review files in %s that are unreadable or not UTF-8: %s%s",
                len(bad),
                len(files),
                split_dir,
                ", ".join(bad[:3]),
                ", ..." if len(bad) > 3 else "",
            )
        kept = [i for i, text in enumerate(contents) if text is not None]
        result[split] = TextSplit(
            texts=[contents[i] for i in kept],
            labels=np.asarray([labels[i] for i in kept], dtype=np.int32),
            skipped=len(bad),
            files=len(files),
        )
    return result


def load_imdb_tfds(
    name: str = "imdb_reviews",
    data_dir: str | os.PathLike | None = None,
    splits: Sequence[str] = ("train", "test"),
    *,
    download: bool = True,
) -> dict[str, TextSplit]:
    """Load IMDb reviews through tensorflow-datasets into one :class:`TextSplit` per split.

    Calls ``tfds.load(name, split=[...], data_dir=data_dir, as_supervised=True)`` and decodes the
    review bytes to str (records that are not valid UTF-8 are skipped and counted, as in
    :func:`load_imdb_directory`). Order is the tfds order (deterministic for a prepared dataset).

    Args:
        name: str, default "imdb_reviews"; a tfds name, optionally with config/version
            (``imdb_reviews/plain_text:1.0.0``).
        data_dir: str | PathLike | None, default None (tfds' default, ``~/tensorflow_datasets``).
        splits: sequence of str, default ("train", "test"); tfds split names or slices.
        download: bool, default True; False only reads an already prepared dataset.

    Returns:
        dict[str, TextSplit] keyed by the requested split strings.

    Raises:
        DataError: the dataset is not prepared in `data_dir` and cannot be downloaded (no
            network), or tfds fails otherwise; the message keeps tfds' own error.
    """
    import tensorflow_datasets as tfds  # slow to import, and only this source needs it

    where = data_dir if data_dir is not None else "the default tfds data_dir"
    try:
        datasets = tfds.load(
            name,
            split=list(splits),
            data_dir=None if data_dir is None else os.fspath(data_dir),
            as_supervised=True,
            download=download,
        )
    except Exception as exc:
        # tfds reports a missing dataset, a failed download and a missing optional download
        # dependency with many unrelated exception types; all mean "no data here".
        raise DataError(
            f"could not load tensorflow-datasets {name!r} (splits {list(splits)}) from {where}: "
            f"no prepared data was found"
            f"{' and downloading it failed (no network?)' if download else ' (download=False)'}. "
            f"Instead, {_DIRECTORY_HINT}. tfds said: {type(exc).__name__}: {exc}"
        ) from exc

    result: dict[str, TextSplit] = {}
    for split, dataset in zip(splits, datasets, strict=True):
        texts: list[str] = []
        labels: list[int] = []
        total = skipped = 0
        # Batching makes the Python-side iteration cost per 1024 reviews instead of per review.
        for raw_texts, raw_labels in tfds.as_numpy(dataset.batch(1024)):
            for raw, label in zip(raw_texts, raw_labels, strict=True):
                total += 1
                try:
                    texts.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    skipped += 1
                    continue
                labels.append(int(label))
        if skipped:
            logger.warning(
                "Skipped %d of %d %s/%s records that are not UTF-8", skipped, total, name, split
            )
        result[split] = TextSplit(
            texts=texts, labels=np.asarray(labels, dtype=np.int32), skipped=skipped, files=total
        )
    return result


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


# --- Validation split ------------------------------------------------------------------------


def split_validation(split: TextSplit, fraction: float, seed: int) -> tuple[TextSplit, TextSplit]:
    """Split `split` into (train, validation), stratified by label, deterministically.

    Each class gives ``round(fraction * class_size)`` examples to validation, chosen by a NumPy
    generator seeded with `seed`; both parts keep the original relative order.

    Args:
        split: TextSplit to divide (normally the training split).
        fraction: float in (0, 1), the share of each class that goes to validation.
        seed: int >= 0; the same seed gives the same split.

    Returns:
        (train, validation) TextSplits, disjoint, together exactly the examples of `split`.
        Their ``files`` is their own size and ``skipped`` is 0.

    Raises:
        ValueError: `fraction` is not in (0, 1).
        DataError: the train or the validation part would be empty.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    is_validation = np.zeros(len(split), dtype=bool)
    for label in np.unique(split.labels):  # sorted, so the generator is consumed in a fixed order
        members = np.flatnonzero(split.labels == label)
        count = int(np.floor(fraction * len(members) + 0.5))
        is_validation[rng.permutation(members)[:count]] = True
    if is_validation.all() or not is_validation.any():
        raise DataError(
            f"validation fraction {fraction} of {len(split)} examples leaves the "
            f"{'train' if is_validation.all() else 'validation'} split empty"
        )

    def subset(mask: np.ndarray) -> TextSplit:
        indices = np.flatnonzero(mask)
        return TextSplit(
            texts=[split.texts[i] for i in indices],
            labels=split.labels[indices],
            skipped=0,
            files=len(indices),
        )

    return subset(~is_validation), subset(is_validation)


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


# --- tf.data ---------------------------------------------------------------------------------

# Bucket widths: 8 tokens for short reviews, then ~25% apart, so that a batch pads each example
# by at most about a quarter of its length (see transformer_tf.data.bucketing).
BUCKET_STEP = 8
BUCKET_GROWTH = 1.25


def review_bucket_boundaries(max_length: int) -> list[int]:
    """Inclusive bucket boundaries (:mod:`~transformer_tf.data.bucketing` convention) for
    reviews truncated to ``max_length`` tokens.

    Buckets grow by about 25% (lengths 1-7, 8-9, 10-11, 12-14, 15-18, ...), so a batch pads each
    example by at most about a quarter of its length; the last boundary is ``max_length - 1``,
    so truncated reviews (often the majority, all exactly ``max_length`` long) get the overflow
    bucket to themselves, with no padding at all. These are the buckets the IMDb recipe was
    tuned with. Example: ``review_bucket_boundaries(24)`` is ``[7, 9, 11, 14, 18, 23]``.

    Args:
        max_length: int >= 1, the truncation length.

    Returns:
        list[int], strictly increasing, ending with ``max_length - 1`` (empty for 1).
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    boundaries = []
    bound = 8
    while bound < max_length:
        boundaries.append(bound - 1)
        bound = max(bound + 1, round(bound * 1.25))
    boundaries.append(max_length - 1)
    return [b for b in dict.fromkeys(boundaries) if b >= 1]


def _shuffle_seed(seed: int, epoch: int) -> int:
    """A well-mixed 32-bit seed for (seed, epoch): neighbouring epochs get unrelated orders."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def truncate(ids: tf.RaggedTensor, max_length: int, truncation: str = "head") -> tf.RaggedTensor:
    """Keep at most ``max_length`` ids per row of a ragged ``(batch, None)`` tensor.

    The training pipeline (:func:`encode_texts`) and the exported model
    (:func:`~transformer_tf.inference.export.build_classification_module`) both truncate with
    this function, so they keep the same ids.

    Args:
        ids: tf.RaggedTensor ``(batch, None)``, e.g. :meth:`ReviewTokenizer.tf_encode`'s output.
        max_length: int >= 1, ids kept per row.
        truncation: str, which ids a longer row keeps: ``"head"`` (default) the first
            ``max_length``, ``"tail"`` the last ``max_length``, ``"head_tail"`` the first
            ``max_length // 4`` and the last ``max_length - max_length // 4`` (long reviews often
            conclude at the end). Shorter rows are unchanged.

    Returns:
        tf.RaggedTensor ``(batch, None)`` with rows of at most ``max_length`` ids, same dtype.

    Raises:
        ValueError: ``max_length < 1`` or an unknown ``truncation``.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    lengths = ids.row_lengths()
    positions = tf.ragged.range(lengths).flat_values
    row_length = tf.repeat(lengths, lengths)  # each id's row length, aligned with `positions`
    if truncation == "head":
        keep = positions < max_length
    elif truncation == "tail":
        keep = positions >= row_length - max_length
    else:  # head_tail: the opening quarter and the closing three quarters, where verdicts are
        head = max_length // 4
        keep = (positions < head) | (positions >= row_length - (max_length - head))
    return tf.ragged.boolean_mask(ids, ids.with_flat_values(keep))


@dataclass(eq=False)
class EncodedTexts:
    """Vectorized, truncated texts as one flat id array plus row offsets (cheap to slice in a
    ``tf.data`` map, and small: int32 ids, no padding).

    Attributes:
        ids: np.ndarray of int32, every text's ids concatenated.
        starts: np.ndarray of int64, shape [N + 1]; text ``i`` is ``ids[starts[i]:starts[i+1]]``.
        max_length: int, the truncation length they were made with.
        truncation: str, the truncation rule they were made with.
    """

    ids: np.ndarray
    starts: np.ndarray
    max_length: int
    truncation: str

    def __len__(self) -> int:
        return len(self.starts) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)


def encode_texts(
    texts: Sequence[str],
    tokenizer: ReviewTokenizer,
    *,
    max_length: int,
    truncation: str = "head",
) -> EncodedTexts:
    """Encode raw ``texts`` with ``tokenizer.encode_batch`` (cleaning included) and
    :func:`truncate` them, once: a run encodes each split once and builds every epoch from the
    result.

    Args:
        texts: Sequence[str], raw texts; length N.
        tokenizer: ReviewTokenizer.
        max_length: int >= 1, ids kept per text.
        truncation: str, see :func:`truncate`. Defaults to ``"head"``.

    Returns:
        EncodedTexts of N texts.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    rows = tokenizer.encode_batch(texts)
    flat = np.fromiter((i for row in rows for i in row), np.int32, sum(len(r) for r in rows))
    lengths = np.fromiter((len(row) for row in rows), np.int64, len(rows))
    ids = truncate(
        tf.RaggedTensor.from_row_lengths(tf.constant(flat), tf.constant(lengths)),
        max_length,
        truncation,
    )
    starts = np.concatenate([[0], np.cumsum(ids.row_lengths().numpy())]).astype(np.int64)
    return EncodedTexts(ids.flat_values.numpy().astype(np.int32), starts, max_length, truncation)


def document_counts(
    encoded: EncodedTexts, labels: np.ndarray | Sequence[int], *, vocab_size: int, num_classes: int
) -> np.ndarray:
    """How many texts of each class contain each token (naive-Bayes statistics).

    Args:
        encoded: EncodedTexts of N texts.
        labels: int array-like, shape [N], in ``[0, num_classes)``.
        vocab_size: int, ids are in ``[0, vocab_size)``.
        num_classes: int.

    Returns:
        np.ndarray of int64, shape ``(vocab_size, num_classes)``: entry ``[t, c]`` counts the
        texts of class ``c`` in which id ``t`` occurs at least once.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(encoded):
        raise ValueError(f"{len(encoded)} texts but {len(labels)} labels")
    text_of_id = np.repeat(np.arange(len(encoded), dtype=np.int64), encoded.lengths())
    pairs = np.unique(text_of_id * vocab_size + encoded.ids.astype(np.int64))  # distinct per text
    cells = (pairs % vocab_size) * num_classes + labels[pairs // vocab_size]
    counts = np.bincount(cells, minlength=vocab_size * num_classes)
    return counts.reshape(vocab_size, num_classes)


def make_classification_dataset(
    texts: Sequence[str] | EncodedTexts,
    labels: np.ndarray | Sequence[int],
    tokenizer: ReviewTokenizer | None = None,
    *,
    batch_size: int,
    max_length: int,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    truncation: str = "head",
    drop_remainder: bool = False,
    bucket: bool = True,
    batch_type: str = "examples",
) -> tf.data.Dataset:
    """Batched ``(token ids, label)`` dataset for sequence classification.

    Pipeline: the raw texts are encoded by `tokenizer` (cleaning included) and truncated to
    `max_length` (:func:`encode_texts`; pass its result as `texts` to skip this step, as
    training does once per split rather than once per epoch). The dataset
    then shuffles example indices, slices each example's ids out of one flat array, batches by
    length, pads with 0 and prefetches.

    Order: with ``shuffle=True`` the first pass over the dataset has an order fixed by
    (`seed`, `epoch`); different epochs give different orders. Further passes over the same
    dataset object (e.g. ``model.fit(..., epochs=3)``) reshuffle, also deterministically. To
    reproduce the order of epoch k exactly (resuming a run), build the dataset with ``epoch=k``
    and iterate it once. If a global TensorFlow seed is set (``keras.utils.set_random_seed``),
    it is part of the order too.

    Batching: with ``bucket=True`` examples are grouped into length buckets
    (:func:`review_bucket_boundaries`: about 25% apart, and one bucket for the
    reviews of exactly `max_length` tokens) and each batch is padded to its longest example, so
    padding stays small; batches then come out in bucket-fill order rather than input order, and
    the last batch of each bucket can be smaller. With ``bucket=False`` batches follow the
    (shuffled) input order. Every example appears exactly once per pass unless
    `drop_remainder` drops incomplete batches (one per bucket with bucketing).
    ``batch_type="tokens"`` (with bucketing) makes `batch_size` a token budget: a bucket whose
    examples are at most n tokens long batches ``max(1, batch_size // n)`` of them (without
    bucketing ``max(1, batch_size // max_length)``).

    Args:
        texts: sequence of str, raw texts; length N. Or the
            :class:`EncodedTexts` of :func:`encode_texts` (then `tokenizer` is not needed, and
            `max_length`/`truncation` must match the ones it was encoded with).
        labels: int array-like, shape [N].
        tokenizer: ReviewTokenizer, required with raw texts.
        batch_size: int >= 1, examples per batch (or tokens, see `batch_type`).
        max_length: int >= 1, maximum tokens per example.
        shuffle: bool, shuffle the examples (training) or keep their order (evaluation).
        seed: int >= 0, shuffle seed.
        epoch: int >= 0, default 0; selects the order of the first pass.
        truncation: str, default "head"; which tokens to keep of a longer example: "head" the
            first `max_length`, "tail" the last `max_length`, "head_tail" the first quarter and
            the last three quarters of `max_length` (long reviews often conclude at the end).
        drop_remainder: bool, default False; drop incomplete batches.
        bucket: bool, default True; batch by length (see above).
        batch_type: str, "examples" (default) or "tokens" (see above).

    Returns:
        tf.data.Dataset of (ids int32 [batch, length], labels int32 [batch]) with
        length <= max_length, padded with ``PAD_ID`` (0); an empty text is a row of padding.

    Raises:
        ValueError: mismatched lengths or an argument out of range.
    """
    labels = np.asarray(labels, dtype=np.int32).reshape(-1)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(texts) == 0:
        raise ValueError("no examples to make a dataset from")
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
    if batch_type not in ("examples", "tokens"):
        raise ValueError(f"batch_type must be 'examples' or 'tokens', got {batch_type!r}")
    if isinstance(texts, EncodedTexts):
        if (texts.max_length, texts.truncation) != (max_length, truncation):
            raise ValueError(
                f"texts were encoded with max_length={texts.max_length}, truncation="
                f"{texts.truncation!r}; the dataset asks for {max_length}, {truncation!r}"
            )
        encoded = texts
    elif tokenizer is None:
        raise ValueError("a tokenizer is needed to make a dataset from raw texts")
    else:
        encoded = encode_texts(texts, tokenizer, max_length=max_length, truncation=truncation)

    flat_ids = tf.constant(encoded.ids, tf.int32)
    starts = tf.constant(encoded.starts, tf.int64)
    label_tensor = tf.constant(labels, tf.int32)

    def to_example(index):
        return flat_ids[starts[index] : starts[index + 1]], label_tensor[index]

    dataset = tf.data.Dataset.range(len(labels))
    if shuffle:
        # A buffer as large as the dataset is a full shuffle; it only holds indices.
        dataset = dataset.shuffle(
            len(labels), seed=_shuffle_seed(seed, epoch), reshuffle_each_iteration=True
        )
    dataset = dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padded_shapes = ([None], [])
    padding_values = (tf.constant(PAD_ID, tf.int32), tf.constant(0, tf.int32))
    if bucket:
        boundaries = review_bucket_boundaries(max_length)
        sizes = bucket_batch_sizes(bucket_lengths(boundaries, max_length), batch_size, batch_type)
        dataset = batch_by_length(
            dataset,
            lambda ids, label: tf.shape(ids)[0],
            boundaries,
            sizes,
            padded_shapes=padded_shapes,
            padding_values=padding_values,
            drop_remainder=drop_remainder,
        )
    else:
        if batch_type == "tokens":
            batch_size = max(1, batch_size // max_length)
        dataset = dataset.padded_batch(
            batch_size,
            padded_shapes=padded_shapes,
            padding_values=padding_values,
            drop_remainder=drop_remainder,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)
