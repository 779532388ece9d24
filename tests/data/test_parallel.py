"""read_parallel: one rule per test, on small files in tmp_path."""

from __future__ import annotations

import pytest

from transformer_tf.data.parallel import ParallelCorpus, read_parallel
from transformer_tf.data.streaming import count_lines
from transformer_tf.errors import DataError


def _write(path, content: str | bytes):
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def test_reads_aligned_lines_and_strips_line_ends_and_spaces(tmp_path):
    source = _write(tmp_path / "train.en", "  A man walks.\r\nTwo dogs\t\r\n")
    target = _write(tmp_path / "train.de", "Ein Mann geht.\nZwei Hunde\n")
    corpus = read_parallel(source, target)
    assert isinstance(corpus, ParallelCorpus)
    assert corpus.sources == ["A man walks.", "Two dogs"]
    assert corpus.targets == ["Ein Mann geht.", "Zwei Hunde"]
    assert corpus.pairs() == [("A man walks.", "Ein Mann geht."), ("Two dogs", "Zwei Hunde")]
    assert (corpus.skipped_empty, corpus.skipped_one_side_empty, len(corpus)) == (0, 0, 2)


def test_lowercase(tmp_path):
    source = _write(tmp_path / "s", "A Man\n")
    target = _write(tmp_path / "t", "Ein MANN\n")
    corpus = read_parallel(source, target, lowercase=True)
    assert corpus.pairs() == [("a man", "ein mann")]


def test_trailing_empty_lines_are_not_a_length_mismatch(tmp_path):
    # Like Multi30k: one file ends with an extra blank line (and one with a whitespace line).
    source = _write(tmp_path / "s", "a\nb\n\n")
    target = _write(tmp_path / "t", "x\ny\n \n\n\n")
    corpus = read_parallel(source, target)
    assert corpus.pairs() == [("a", "x"), ("b", "y")]
    assert corpus.skipped_empty == 0
    no_final_newline = _write(tmp_path / "u", "x\ny")
    assert read_parallel(source, no_final_newline).pairs() == [("a", "x"), ("b", "y")]


def test_different_line_counts_name_both_files_and_counts(tmp_path):
    source = _write(tmp_path / "train.en", "a\nb\nc\n")
    target = _write(tmp_path / "train.de", "x\ny\n")
    with pytest.raises(DataError) as error:
        read_parallel(source, target)
    message = str(error.value)
    assert str(source) in message and str(target) in message
    assert "3" in message and "2" in message


@pytest.mark.parametrize(
    ("source_text", "target_text", "skipped"),
    [
        pytest.param("a\n\n  \nb\n", "x\n\n\ny\n", (2, 0), id="both_sides_empty"),
        pytest.param("a\nlost\n\nb\n", "x\n\norphan\ny\n", (0, 2), id="one_side_empty"),
    ],
)
def test_pairs_with_an_empty_side_are_skipped_and_counted(
    tmp_path, source_text, target_text, skipped
):
    """``skipped``: (pairs with both sides empty, pairs with one side empty)."""
    source = _write(tmp_path / "s", source_text)
    target = _write(tmp_path / "t", target_text)
    corpus = read_parallel(source, target)
    assert corpus.pairs() == [("a", "x"), ("b", "y")]
    assert (corpus.skipped_empty, corpus.skipped_one_side_empty) == skipped


def test_non_utf8_file_names_file_and_first_bad_line(tmp_path):
    source = _write(tmp_path / "s", "a\nb\nc\n")
    target = _write(tmp_path / "t.latin1", "x\ny\nGr\u00fc\u00dfe\nz\xe9\n".encode("latin-1"))
    with pytest.raises(DataError) as error:
        read_parallel(source, target)
    message = str(error.value)
    assert str(target) in message
    assert "line 3" in message


def test_missing_file_names_the_path(tmp_path):
    source = _write(tmp_path / "s", "a\n")
    missing = tmp_path / "nope" / "t.de"
    with pytest.raises(DataError, match="not found") as error:
        read_parallel(source, missing)
    assert str(missing) in str(error.value)
    with pytest.raises(DataError, match="directory"):
        read_parallel(source, tmp_path)


def test_only_newline_splits_lines_and_a_bom_is_dropped(tmp_path):
    # U+2028 and U+0085 are line breaks for str.splitlines() but occur inside real sentences.
    source = _write(tmp_path / "s", "\ufeffone\u2028two\nthree\x85four\n")
    target = _write(tmp_path / "t", "eins\nzwei\n")
    corpus = read_parallel(source, target)
    assert corpus.sources == ["one\u2028two", "three\x85four"]


@pytest.mark.parametrize("read", [count_lines, lambda path: read_parallel(path, path)])
def test_a_missing_file_or_a_directory_is_a_data_error_naming_it(tmp_path, read):
    with pytest.raises(DataError, match=f"data file not found: {tmp_path / 'absent'}"):
        read(tmp_path / "absent")
    with pytest.raises(DataError, match=f"expected a data file but found a directory: {tmp_path}"):
        read(tmp_path)
