"""Atomic writes, the one copy: build a file or directory under a temporary sibling name, then rename it into
place, so a reader sees the old version or the complete new one and a crash leaves only a temporary that
`remove_stale_temporaries` recognizes. Depends on the standard library only."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMPORARY_NAME = re.compile(r"\..+\.(tmp|old)-[0-9a-f]{8}")


def _temporary_sibling(target: Path, kind: str = "tmp") -> Path:
    return target.parent / f".{target.name}.{kind}-{uuid.uuid4().hex[:8]}"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_directory(path: str | os.PathLike, *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` only if the block finishes without error.

    A reader never sees a half-written directory: either the old one or the complete new one. On error the
    temporary directory is removed and `path` is left as it was.

    Args:
        path: the directory to write.
        keep_existing: when `path` exists by the time the block finishes (another process wrote the same
            content first, as a cache does), keep it and discard ours instead of replacing it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(target)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        if keep_existing and target.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            return
        backup = None
        if target.exists():
            backup = _temporary_sibling(target, "old")
            target.rename(backup)
        tmp.rename(target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces `path` (fsynced, `os.replace`) only if the block succeeds.

    On error the temporary file is removed and `path` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(target)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary name and `os.replace`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove what an interrupted `atomic_directory` or `atomic_write_text` left in `directory`.

    A crash between creating the temporary sibling and renaming it leaves `.NAME.tmp-XXXXXXXX` (or a
    `.NAME.old-XXXXXXXX` backup) behind; the next run removes them. Only names of exactly that shape go.

    Returns:
        The paths removed.
    """
    removed = []
    folder = Path(directory)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if _TEMPORARY_NAME.fullmatch(entry.name) is None:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
