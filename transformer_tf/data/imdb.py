"""IMDb movie-review sentiment data: loading the reviews and carving the validation split.

Two sources give the same :class:`TextSplit` (raw review texts + int32 labels, 1 = positive):

* :func:`load_imdb_directory` reads the official ``aclImdb`` folder (``<split>/{pos,neg}/*.txt``),
  which works offline once the archive is unpacked;
* :func:`load_imdb_tfds` reads ``imdb_reviews`` through tensorflow-datasets (downloads on first use).

:func:`split_validation` then carves a stratified validation split out of the training reviews.
The rest of the text pipeline lives beside it: the review tokenizer (cleaning, words and
n-grams, a frequency vocabulary) in :mod:`transformer_tf.data.review_tokenizer`, the batched
``tf.data`` input in :mod:`transformer_tf.data.classification`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transformer_tf.errors import DataError

__all__ = ["TextSplit", "load_imdb_directory", "load_imdb_tfds", "split_validation"]

logger = logging.getLogger(__name__)

CLASS_FOLDERS = {"neg": 0, "pos": 1}

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
