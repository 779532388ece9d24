"""Reading sentence-aligned parallel text files (one sentence per line, UTF-8)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from transformer_tf.errors import DataError


@dataclass
class ParallelCorpus:
    """Aligned sentence pairs read by :func:`read_parallel`.

    Attributes:
        sources, targets: list[str], the kept sentences; ``sources[i]`` translates to
            ``targets[i]``.
        skipped_empty: int, line pairs skipped because both sides were empty.
        skipped_one_side_empty: int, line pairs skipped because exactly one side was empty.
    """

    sources: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    skipped_empty: int = 0
    skipped_one_side_empty: int = 0

    def __len__(self) -> int:
        return len(self.sources)

    def pairs(self) -> list[tuple[str, str]]:
        """The kept pairs as ``(source, target)`` tuples."""
        return list(zip(self.sources, self.targets, strict=True))


def open_data_file(path: str | os.PathLike):
    """``open(path, "rb")``, with a missing, directory or unreadable ``path`` as a DataError."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"expected a data file but found a directory: {path}") from None
    except PermissionError:
        raise DataError(f"no permission to read the data file {path}") from None


def read_parallel(
    source_path: str | os.PathLike, target_path: str | os.PathLike, *, lowercase: bool = False
) -> ParallelCorpus:
    """Read two line-aligned UTF-8 files into sentence pairs.

    Each line is one sentence; the line break (``\\n`` or ``\\r\\n``) and surrounding whitespace
    are stripped. Lines are split on ``\\n`` only, so characters such as U+2028 or U+0085 inside a
    sentence do not break the alignment.

    Empty lines at the *end* of a file are ignored (many corpora, e.g. Multi30k, end with an extra
    blank line), so only the remaining lines must match in number. A pair whose two sides are
    both empty is skipped (``skipped_empty``). A pair with exactly one empty side is also skipped
    (``skipped_one_side_empty``) rather than rejected: it is usually a sentence the other side
    merged into a neighbouring line or left untranslated, it cannot be a useful training example,
    and one such line should not make a large corpus unusable; the count lets callers report it.

    Args:
        source_path, target_path: str | PathLike, the two files.
        lowercase: bool, lowercase both sides. Defaults to False.

    Returns:
        ParallelCorpus with the kept pairs and the skip counts.

    Raises:
        DataError: a missing or unreadable file; a file that is not UTF-8 (with the file and the
            1-based number of its first bad line); different numbers of lines.
    """
    sources = read_lines(Path(source_path))
    targets = read_lines(Path(target_path))
    if len(sources) != len(targets):
        raise DataError(
            f"parallel files differ in length: {source_path} has {len(sources)} lines but "
            f"{target_path} has {len(targets)} (not counting empty lines at the end)"
        )
    corpus = ParallelCorpus()
    for source, target in zip(sources, targets, strict=True):
        if not source and not target:
            corpus.skipped_empty += 1
        elif not source or not target:
            corpus.skipped_one_side_empty += 1
        else:
            corpus.sources.append(source.lower() if lowercase else source)
            corpus.targets.append(target.lower() if lowercase else target)
    return corpus


def read_lines(path: str | os.PathLike, *, keep_empty_tail: bool = False) -> list[str]:
    """The stripped lines of the UTF-8 file ``path``, without trailing empty lines unless
    ``keep_empty_tail`` (where every line is a sentence to translate or score, and an empty
    translation is one).

    How every command reads sentences, one per line: training and evaluation data,
    ``translate --input`` and ``score``. Lines are split on ``\\n`` only, never on U+2028,
    U+0085 or the other breaks ``str.splitlines()`` knows, so a sentence that holds one stays
    one sentence (and one output line).

    Raises:
        DataError: a missing or unreadable file, or one that is not UTF-8 (naming the line).
    """
    lines: list[str] = []
    # Binary iteration splits on b"\n" only and lets us name the first undecodable line.
    with open_data_file(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path} is not valid UTF-8: line {number}, byte {error.start + 1} of the "
                    f"line ({error.reason})"
                ) from None
            if number == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte order mark
            lines.append(line.strip())
    return lines if keep_empty_tail else _without_trailing_empty(lines)


def split_lines(text: str, *, keep_empty_tail: bool = False) -> list[str]:
    """:func:`read_lines` for text already read (standard input)."""
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":  # what follows the last line break is no line
        lines.pop()
    lines = [line.strip() for line in lines]
    return lines if keep_empty_tail else _without_trailing_empty(lines)


def _without_trailing_empty(lines: list[str]) -> list[str]:
    while lines and not lines[-1]:
        lines.pop()
    return lines
