"""Atomic file writes: a crash or Ctrl-C leaves the previous complete file or none, never half.

Each write goes to a temporary file in the same directory (same filesystem), is flushed and
fsynced, then renamed over the target with os.replace, which POSIX makes atomic. The temporary file
is hidden, `.NAME.XXXXXXXX.tmp` (tempfile.mkstemp's random part); a process killed mid-write (so its
cleanup never ran) leaves one behind, which `remove_stale_temporaries` removes later.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["STALE_SECONDS", "atomic_write", "remove_stale_temporaries", "write_bytes", "write_json", "write_text"]

#: A temporary file of atomic_write older than this is abandoned: every write here takes well under
#: a second, so one this old belongs to a process that was killed, never to a write in progress.
STALE_SECONDS = 300.0
# ".NAME." + mkstemp's 8 random characters + ".tmp"
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path) and move the result onto `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes 0600 files: give the result the mode a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def remove_stale_temporaries(folder: str | os.PathLike, older_than: float = STALE_SECONDS) -> list[Path]:
    """Remove the temporary files atomic_write left in `folder` (not below it) when its process was
    killed: plain files named `.NAME.XXXXXXXX.tmp` last modified more than `older_than` seconds ago.
    Younger ones are kept, as they may belong to a write in progress in another process (a search
    writing its tables while a report is built). Returns the paths removed; a missing folder is no error."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    cutoff = time.time() - older_than
    removed = []
    for entry in os.scandir(folder):
        if not _TEMPORARY.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:  # removed meanwhile (by its own process, or another cleanup)
            pass
    return sorted(removed)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, _w)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
