"""transformer_tf.files: a file or a directory appears whole or not at all."""

from __future__ import annotations

import os

import pytest

from transformer_tf.files import new_directory, replacing, write_atomic


def _refuse_non_empty(path):
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} is not empty")


def test_write_atomic_replaces_and_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "sub" / "record.json"
    write_atomic(path, "one\n")
    write_atomic(path, "two\r\n")
    assert path.read_bytes() == b"two\r\n"
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"two\r\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]


def test_new_directory_appears_whole_and_readable(tmp_path):
    target = tmp_path / "parent" / "export"
    with new_directory(target, _refuse_non_empty) as tmp:
        assert tmp.parent == target.parent and not target.exists()
        (tmp / "a.txt").write_text("a")
    assert (target / "a.txt").read_text() == "a"
    assert os.stat(target).st_mode & 0o777 == 0o755
    assert [p.name for p in target.parent.iterdir()] == ["export"]


def test_new_directory_leaves_nothing_on_failure_and_rechecks_before_the_rename(tmp_path):
    target = tmp_path / "export"
    with pytest.raises(RuntimeError), new_directory(target, _refuse_non_empty) as tmp:
        (tmp / "a.txt").write_text("a")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    # Something appeared at the target while the directory was filled: refused, kept as it was.
    with pytest.raises(FileExistsError), new_directory(target, _refuse_non_empty) as tmp:
        (tmp / "a.txt").write_text("mine")
        target.mkdir()
        (target / "b.txt").write_text("theirs")
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    assert [p.name for p in target.iterdir()] == ["b.txt"]
