"""Atomic file writes: one way for every record the package writes; and the reading of its
optional JSON records.

A file is written to a temporary sibling (hidden, named after the target and this process) and
renamed over the target, so a reader sees the old file or the new one, never half of one; a
failed write (a full disk) removes the temporary and leaves the old file as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from transformer_tf.errors import UserError

__all__ = ["new_directory", "read_json_record", "replacing", "write_atomic"]


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it goes.

    The temporary keeps ``path``'s suffix (Keras wants ``.keras``) and names the process, so
    two processes writing the same file (workers of one run) never share a temporary.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically (see :func:`replacing`)."""
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def read_json_record(path: Path) -> Any:
    """The JSON record at ``path``, or None when there is no such file (a record that is
    optional: a run trained here has no import record). A UserError names the file when it
    cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}") from error


@contextlib.contextmanager
def new_directory(
    path: str | os.PathLike, check: Callable[[Path], None], *, error: type[Exception] = OSError
) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it becomes ``path``.

    A sibling (same parent, so the same file system) makes the final rename atomic; on any
    failure the temporary directory is removed and ``path`` is left as it was. ``check(path)``
    runs again right before the rename (filling may take minutes; it raises if something has
    appeared there meanwhile); ``os.rename`` replaces an empty directory and fails on a
    non-empty one, so a late writer is safe too, and that failure is raised as ``error``.
    The directory is made readable by all (``mkdtemp``'s 0700 is for the incomplete one only:
    an export is read by servers running as other users). Exports and imported runs use it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        check(path)
        try:
            os.rename(tmp, path)
        except OSError as exc:
            raise error(f"cannot move the finished directory into {path}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
