"""`adapter_digest`: one sha256 over an adapter directory's files, checking that each stays inside the root.

One job, shared by every compiler (issue 10): the registry hashes the files itself when it loads an adapter
and again before compiling it after an eviction, so what is served cannot change behind its back; and it
resolves every file, not only the directory, so a symlink to a file outside the adapter root is refused.
Depends on `serve.errors` only (no torch).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from prefixtune.serve.errors import AdapterNameError

_CHUNK = 1 << 20


def adapter_digest(directory: Path, root: Path) -> str:
    """sha256 (hex) over the relative names and contents of every regular file under `directory`.

    Args:
        directory: the adapter directory (resolved, inside `root`).
        root: the adapter root (resolved).

    Raises:
        AdapterNameError: an entry resolves outside `root` (a symlink out), or is not a regular file or
            directory (a FIFO or device could block or change the read).
        OSError: a file cannot be read (the caller maps it).
    """
    digest = hashlib.sha256()
    for top, dirs, files in os.walk(directory, followlinks=False):
        dirs.sort()
        for name in [*dirs, *sorted(files)]:
            entry = Path(top) / name
            if not entry.resolve().is_relative_to(root):
                raise AdapterNameError(
                    f"adapter directory {directory.name!r} holds {entry.relative_to(directory)}, which points "
                    "outside the adapter root; copy the file into the adapter directory instead of linking it"
                )
        for name in sorted(files):
            entry = Path(top) / name
            mode = entry.stat().st_mode
            if not stat.S_ISREG(mode):
                raise AdapterNameError(
                    f"adapter directory {directory.name!r} holds {entry.relative_to(directory)}, which is not a "
                    "regular file; remove it"
                )
            digest.update(entry.relative_to(directory).as_posix().encode("utf-8", "surrogateescape") + b"\0")
            digest.update(_file_hash(entry))
    return digest.hexdigest()


def _file_hash(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.digest()
