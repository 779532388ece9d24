"""IMDb movie-review sentiment data: loading, cleaning, vocabulary and batched ``tf.data`` input.

Two sources give the same :class:`TextSplit` (raw review texts + int32 labels, 1 = positive):

* :func:`load_imdb_directory` reads the official ``aclImdb`` folder (``<split>/{pos,neg}/*.txt``),
  which works offline once the archive is unpacked;
* :func:`load_imdb_tfds` reads ``imdb_reviews`` through tensorflow-datasets (downloads on first use).

The text pipeline is: :func:`clean_text` (Python) on the raw texts -> :func:`split_validation`
-> :func:`build_vectorizer` on the *training* texts only -> :func:`make_classification_dataset`.
:func:`tf_clean_text` is the in-graph twin of :func:`clean_text` (same output) so that an exported
model can take raw strings. :func:`save_vocabulary` / :func:`load_vectorizer` persist the
vocabulary in a run directory so that evaluation and export reuse the exact training ids.

Token ids follow the package convention: 0 is padding (``PAD_ID``) and 1 is out-of-vocabulary
(``UNK_ID``), which is also how ``keras.layers.TextVectorization`` numbers its vocabulary.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from transformer_tf.data.special_tokens import PAD_ID, UNK_ID
from transformer_tf.errors import DataError

__all__ = [
    "TextSplit",
    "VectorizerSettings",
    "build_vectorizer",
    "clean_text",
    "load_imdb_directory",
    "load_imdb_tfds",
    "load_vectorizer",
    "make_classification_dataset",
    "save_vocabulary",
    "split_validation",
    "tf_clean_text",
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
# Strings vectorized per `map` call: large enough to amortize the op overhead, small enough that
# the two `map` workers of a 2-core machine get several chunks each.
_VECTORIZE_CHUNK = 256


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


# --- Vocabulary ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorizerSettings:
    """What a saved vectorizer needs besides its vocabulary.

    Attributes:
        vocab_size: int, the ``max_tokens`` the vocabulary was built with (padding and OOV
            included); the saved vocabulary can be shorter.
        max_length: int, tokens kept per example.
        ngrams: int, 1 for words only; n > 1 also emits 2..n-grams after the words.
        lowercase: bool, whether :func:`clean_text` lowercased the texts.
    """

    vocab_size: int
    max_length: int
    ngrams: int = 1
    lowercase: bool = True


# Stored on the layer so that save_vocabulary(vectorizer, run_dir) has everything it writes.
_SETTINGS_ATTR = "transformer_tf_settings"


def _new_vectorizer(settings: VectorizerSettings, vocabulary: list[str] | None = None):
    vectorizer = keras.layers.TextVectorization(
        max_tokens=settings.vocab_size,
        # Texts are cleaned beforehand (clean_text / tf_clean_text): the layer only splits.
        standardize=None,
        split="whitespace",
        ngrams=settings.ngrams if settings.ngrams > 1 else None,
        output_mode="int",
        # Batches are padded per batch to their longest example, not to a fixed length.
        output_sequence_length=None,
        vocabulary=vocabulary,
    )
    setattr(vectorizer, _SETTINGS_ATTR, settings)
    return vectorizer


def build_vectorizer(
    texts: Sequence[str],
    vocab_size: int,
    max_length: int,
    ngrams: int = 1,
    *,
    lowercase: bool = True,
) -> keras.layers.TextVectorization:
    """Build a word-level ``TextVectorization`` adapted on already cleaned training texts.

    Pass the *training* texts only: a word seen only in validation or test data must map to the
    OOV id so that evaluation measures generalization. Ids: 0 = padding, 1 = OOV (``[UNK]``),
    then tokens by decreasing frequency.

    Args:
        texts: sequence of str, cleaned training texts (:func:`clean_text`).
        vocab_size: int >= 3, the vocabulary size including padding and OOV.
        max_length: int >= 1, tokens kept per example; stored for :func:`save_vocabulary`.
        ngrams: int >= 1, default 1. With n > 1 the output is the words followed by the 2..n-grams.
        lowercase: bool, default True; how the texts were cleaned, stored for the exported model.

    Returns:
        keras.layers.TextVectorization (standardize=None, split="whitespace", output_mode="int",
        output_sequence_length=None): maps a string tensor [batch] to int64 ids [batch, longest],
        padded with 0.

    Raises:
        ValueError: an argument is out of range.
        DataError: `texts` is empty.
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 (padding, OOV and one token), got {vocab_size}")
    if max_length < 1 or ngrams < 1:
        raise ValueError(f"max_length and ngrams must be >= 1, got {max_length} and {ngrams}")
    if len(texts) == 0:
        raise DataError("cannot build a vocabulary from an empty list of training texts")
    settings = VectorizerSettings(vocab_size, max_length, ngrams, lowercase)
    vectorizer = _new_vectorizer(settings)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024))
    return vectorizer


def save_vocabulary(vectorizer: keras.layers.TextVectorization, run_dir: str | os.PathLike) -> Path:
    """Write ``vocab.txt`` and ``vectorizer.json`` into `run_dir` (created if missing).

    ``vocab.txt`` has one token per line in id order, exactly ``get_vocabulary()`` (line 1 is the
    empty padding token, line 2 is ``[UNK]``). ``vectorizer.json`` holds vocab_size, max_length,
    ngrams and lowercase. Files are written to a temporary name and renamed, so a crash never
    leaves a half-written vocabulary.

    Args:
        vectorizer: a layer from :func:`build_vectorizer` or :func:`load_vectorizer`.
        run_dir: str | PathLike, the run directory.

    Returns:
        Path of the written ``vocab.txt``.
    """
    settings = getattr(vectorizer, _SETTINGS_ATTR, None)
    if settings is None:
        raise ValueError("vectorizer was not made by build_vectorizer or load_vectorizer")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    vocabulary = [str(token) for token in vectorizer.get_vocabulary()]
    config = {
        "vocab_size": settings.vocab_size,
        "max_length": settings.max_length,
        "ngrams": settings.ngrams,
        "lowercase": settings.lowercase,
        "vocabulary_file": VOCAB_FILE,
        "num_tokens": len(vocabulary),
    }
    vocab_path = run_dir / VOCAB_FILE
    # Tokens never contain "\n" (it is whitespace), but may contain other line breaks such as
    # U+2028, so the file is written and read with "\n" only, never with splitlines().
    _write_atomic(vocab_path, "\n".join(vocabulary) + "\n")
    _write_atomic(run_dir / VECTORIZER_FILE, json.dumps(config, indent=2) + "\n")
    return vocab_path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def load_vectorizer(run_dir: str | os.PathLike) -> keras.layers.TextVectorization:
    """Rebuild the vectorizer saved by :func:`save_vocabulary`, without adapting again.

    Args:
        run_dir: str | PathLike, the run directory holding ``vocab.txt`` and ``vectorizer.json``.

    Returns:
        keras.layers.TextVectorization giving the same ids as the saved one.

    Raises:
        DataError: a file is missing or malformed.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / VECTORIZER_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        vocab_path = run_dir / config.get("vocabulary_file", VOCAB_FILE)
        settings = VectorizerSettings(
            vocab_size=int(config["vocab_size"]),
            max_length=int(config["max_length"]),
            ngrams=int(config["ngrams"]),
            lowercase=bool(config["lowercase"]),
        )
        text = vocab_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(
            f"vectorizer files missing in {run_dir}: {exc.filename} not found (expected "
            f"{VOCAB_FILE} and {VECTORIZER_FILE} written by training)"
        ) from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError included
        raise DataError(f"malformed {config_path}: {exc}") from exc
    if not text.endswith("\n"):
        raise DataError(f"{vocab_path} is truncated (no final newline)")
    vocabulary = text[:-1].split("\n")
    if len(vocabulary) < 2 or vocabulary[PAD_ID] != "" or vocabulary[UNK_ID] != "[UNK]":
        raise DataError(
            f"{vocab_path} must start with the padding token (empty line) and [UNK], "
            f"found {vocabulary[:2]}"
        )
    if len(set(vocabulary)) != len(vocabulary):
        raise DataError(f"{vocab_path} has duplicate tokens")
    return _new_vectorizer(settings, vocabulary)


# --- tf.data ---------------------------------------------------------------------------------


def _bucket_boundaries(max_length: int) -> list[int]:
    """Length boundaries growing by ~25%, so a batch pads each example by at most ~25%.

    The last boundary is `max_length` itself: truncated reviews (often the majority) share one
    bucket with no padding at all.
    """
    boundaries = []
    bound = 8
    while bound < max_length:
        boundaries.append(bound)
        bound = max(bound + 1, round(bound * 1.25))
    boundaries.append(max_length)
    return boundaries


def _shuffle_seed(seed: int, epoch: int) -> int:
    """A well-mixed 32-bit seed for (seed, epoch): neighbouring epochs get unrelated orders."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _truncate(ids: tf.RaggedTensor, max_length: int, truncation: str) -> tf.RaggedTensor:
    """Keep at most `max_length` ids per row of a [batch, None] ragged tensor."""
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
    vectorizer: keras.layers.TextVectorization,
    *,
    max_length: int,
    truncation: str = "head",
) -> EncodedTexts:
    """Vectorize and truncate ``texts`` once (see :func:`make_classification_dataset` for the
    truncation rules); a run encodes each split once and builds every epoch from the result."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")

    def vectorize(chunk: tf.Tensor) -> tf.RaggedTensor:
        dense = tf.cast(vectorizer(chunk), tf.int32)  # [chunk, longest], padded with PAD_ID
        # No real token has id PAD_ID, so trailing PAD_IDs are exactly the padding.
        ids = tf.RaggedTensor.from_tensor(dense, padding=PAD_ID)
        return _truncate(ids, max_length, truncation)

    chunks = (
        tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string))
        .batch(_VECTORIZE_CHUNK)
        .map(vectorize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    )
    values, lengths = [np.zeros([0], np.int32)], [np.zeros([0], np.int64)]
    for chunk in chunks:
        values.append(chunk.flat_values.numpy().astype(np.int32))
        lengths.append(chunk.row_lengths().numpy().astype(np.int64))
    starts = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    return EncodedTexts(np.concatenate(values), starts, max_length, truncation)


def make_classification_dataset(
    texts: Sequence[str] | EncodedTexts,
    labels: np.ndarray | Sequence[int],
    vectorizer: keras.layers.TextVectorization | None = None,
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

    Pipeline: the cleaned texts are vectorized in chunks by a parallel, order-preserving
    ``map`` and truncated to `max_length` (:func:`encode_texts`; pass its result as `texts` to
    skip this step, as training does once per split rather than once per epoch). The dataset
    then shuffles example indices, slices each example's ids out of one flat array, batches by
    length, pads with 0 and prefetches.

    Order: with ``shuffle=True`` the first pass over the dataset has an order fixed by
    (`seed`, `epoch`); different epochs give different orders. Further passes over the same
    dataset object (e.g. ``model.fit(..., epochs=3)``) reshuffle, also deterministically. To
    reproduce the order of epoch k exactly (resuming a run), build the dataset with ``epoch=k``
    and iterate it once. If a global TensorFlow seed is set (``keras.utils.set_random_seed``),
    it is part of the order too.

    Batching: with ``bucket=True`` examples are grouped into length buckets (boundaries ~25%
    apart, see ``_bucket_boundaries``) and each batch is padded to its longest example, so
    padding stays small; batches then come out in bucket-fill order rather than input order, and
    the last batch of each bucket can be smaller. With ``bucket=False`` batches follow the
    (shuffled) input order. Every example appears exactly once per pass unless
    `drop_remainder` drops incomplete batches (one per bucket with bucketing).
    ``batch_type="tokens"`` (with bucketing) makes `batch_size` a token budget: a bucket whose
    examples are at most n tokens long batches ``max(1, batch_size // n)`` of them.

    Args:
        texts: sequence of str, cleaned texts (:func:`clean_text`); length N. Or the
            :class:`EncodedTexts` of :func:`encode_texts` (then `vectorizer` is not needed, and
            `max_length`/`truncation` must match the ones it was encoded with).
        labels: int array-like, shape [N].
        vectorizer: keras.layers.TextVectorization from :func:`build_vectorizer` /
            :func:`load_vectorizer`; required with raw texts.
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
    elif vectorizer is None:
        raise ValueError("a vectorizer is needed to make a dataset from raw texts")
    else:
        encoded = encode_texts(texts, vectorizer, max_length=max_length, truncation=truncation)

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
        boundaries = _bucket_boundaries(max_length)
        if batch_type == "tokens":
            # Bucket i holds lengths in [boundaries[i-1], boundaries[i]); the last one up to
            # max_length.
            longest = [b - 1 for b in boundaries] + [max_length]
            sizes = [max(1, batch_size // max(n, 1)) for n in longest]
        else:
            sizes = [batch_size] * (len(boundaries) + 1)
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=lambda ids, label: tf.shape(ids)[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=sizes,
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
