"""One run, one driver: an exclusive lock on a run, taken before anything of it is checked or
written and held until the driver ends.

The lock is a small JSON record beside the run directory, `STORAGE/.NAME.lock` (the run directory
itself is made only once the inputs are valid), or, for a bucket run, the object
`PREFIX/.NAME.lock` in the bucket. It names its holder: host, pid, since when, the command.

* In a directory the holder also keeps an `flock` on the file: the kernel (and an NFS server
  with working locks) refuses every other driver, and frees the lock the moment its holder dies,
  however it dies (SIGKILL included).
* Between nodes (an NFS mounted without locks, and every bucket, which has no locks at all) the
  holder rewrites the record every `HEARTBEAT_S` seconds; a record that has not been rewritten for
  `stale_after()` seconds belongs to a driver that is gone (killed, or its node lost). A bucket
  lock is taken by writing the record, waiting a moment and reading it back: of two drivers that
  wrote at once, the one whose record stayed holds it (S3 and GCS read back what was last written).

A second driver is refused with `RunBusy` (the CLI's exit 2) saying who holds the run. A lock left
by a driver that is gone is taken over, and `acquire` returns a line saying whose it was and why
it was judged abandoned.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from search.checks import BadInput

__all__ = ["HEARTBEAT_S", "RunBusy", "RunLock", "release_all", "stale_after"]

HEARTBEAT_S = 10.0
_SETTLE_S = 1.0  # a bucket lock: how long to wait before reading a written record back


def stale_after() -> float:
    """Seconds without a heartbeat after which a lock held from another node is abandoned
    (EXITSEARCH_LOCK_STALE_S; default 60, six missed heartbeats)."""
    return float(os.environ.get("EXITSEARCH_LOCK_STALE_S", "60"))


_HELD: list[RunLock] = []  # the locks this process holds


def release_all() -> None:
    """Release every lock this process holds (before an exit that skips `finally` blocks)."""
    for lock in list(_HELD):
        lock.release()


class RunBusy(BadInput):
    """Another driver holds the run."""


def _describe(info: dict[str, Any]) -> str:
    return (f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, since {info.get('since', '?')}"
            + (f" ({info['command']})" if info.get("command") else ""))


class _FileLock:
    """The record in a directory, under flock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.made: list[Path] = []  # the storage folders made to hold the lock (removed on release when empty)

    def where(self) -> str:
        return str(self.path)

    def take(self) -> dict[str, Any] | None:
        """flock the record; returns the record left there by an earlier holder (None: none).
        RunBusy when a live process holds it."""
        missing = []
        parent = self.path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.made = missing
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunBusy(self._busy(self._read_path())) from None
            # the holder before us may have removed the file between our open and our flock: ours
            # must be the file that is there now, else the lock is on a file nobody else sees
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return self._read_fd()
            os.close(fd)

    def _busy(self, info: dict[str, Any] | None) -> str:
        who = _describe(info) if info else "a driver that has not yet written its name"
        return f"held by another driver: {who}; lock {self.path}"

    def _read_path(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def _read_fd(self) -> dict[str, Any] | None:
        assert self.fd is not None
        try:
            raw = os.pread(self.fd, 1 << 16, 0)
            return json.loads(raw) if raw.strip() else None
        except (OSError, ValueError):
            return None

    def age(self) -> float:
        return time.time() - self.path.stat().st_mtime

    def write(self, info: dict[str, Any]) -> None:
        assert self.fd is not None
        data = json.dumps(info, sort_keys=True).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def still_ours(self, token: str) -> bool:
        info = self._read_fd()
        return info is None or info.get("token") == token

    def release(self, token: str) -> None:
        if self.fd is None:
            return
        try:
            if self.still_ours(token):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # frees the flock
            self.fd = None
        for folder in self.made:  # storage folders made only to hold the lock: gone again if nothing else came
            try:
                folder.rmdir()
            except OSError:
                break


class _BucketLock:
    """The record as an object in the bucket."""

    def __init__(self, storage: str, name: str) -> None:
        from trainables.storage import open_run

        self.remote = open_run(storage, name)
        self.key = f"{self.remote.base}/.{name}.lock"
        self.uri = f"{storage.partition('?')[0].rstrip('/')}/.{name}.lock"

    def where(self) -> str:
        return self.uri

    def _info(self):
        return self.remote.fs.get_file_info(self.key)

    def read(self) -> dict[str, Any] | None:
        import pyarrow.fs as pafs

        if self._info().type != pafs.FileType.File:
            return None
        try:
            with self.remote.fs.open_input_stream(self.key) as src:
                return json.loads(src.read() or b"null")
        except (OSError, ValueError):
            return None

    def _server_now(self) -> float:
        """The bucket's clock (an object's modification time is the server's): a just-written probe's."""
        probe = f"{self.key}.clock-{uuid.uuid4().hex[:8]}"
        with self.remote.fs.open_output_stream(probe) as out:
            out.write(b"")
        try:
            mtime = self.remote.fs.get_file_info(probe).mtime
        finally:
            self.remote.fs.delete_file(probe)
        return mtime.timestamp() if mtime is not None else time.time()

    def age(self) -> float:
        mtime = self._info().mtime
        return self._server_now() - mtime.timestamp() if mtime is not None else float("inf")

    def write(self, info: dict[str, Any]) -> None:
        with self.remote.fs.open_output_stream(self.key) as out:
            out.write(json.dumps(info, sort_keys=True).encode())

    def still_ours(self, token: str) -> bool:
        info = self.read()
        return info is not None and info.get("token") == token

    def release(self, token: str) -> None:
        if self.still_ours(token):
            self.remote.fs.delete_file(self.key)


class RunLock:
    """The lock on run `name` of `storage` (a directory or a bucket URI), for one driver."""

    def __init__(self, storage: str, name: str, command: str | None = None) -> None:
        from trainables.storage import is_uri

        self.storage, self.name = storage, name
        self.bucket = is_uri(storage)
        self.backend: _FileLock | _BucketLock = (_BucketLock(storage, name) if self.bucket
                                                 else _FileLock(Path(storage) / f".{name}.lock"))
        self.token = uuid.uuid4().hex
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                     "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "command": command or " ".join(["python -m search.run", *sys.argv[1:]])[:500]}
        self.held = False
        self.lost = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> str | None:
        """Take the run; returns a line about an abandoned lock taken over (None: there was none).
        RunBusy when another driver holds it."""
        try:
            note = self._take()
        except OSError as exc:
            raise BadInput(f"run {self.name!r}: its lock {self.backend.where()} cannot be taken ({exc})") from exc
        self.held = True
        _HELD.append(self)
        self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._beat.start()
        return note

    def _busy(self, info: dict[str, Any], age: float | None = None) -> RunBusy:
        seen = f"; its last sign of life {age:.0f} s ago" if age is not None else ""
        return RunBusy(f"run {self.name!r} in {self.storage} is in use: held by another driver: {_describe(info)}{seen} "
                       f"(lock {self.backend.where()}). One run has one driver: wait for it to end, or stop it; "
                       f"a lock not renewed for {stale_after():.0f} s is taken as abandoned")

    def _take(self) -> str | None:
        b = self.backend
        if isinstance(b, _FileLock):
            try:
                old = b.take()
            except RunBusy as exc:
                raise RunBusy(f"run {self.name!r} in {self.storage} is in use: {exc}. One run has one driver: "
                              "wait for it to end, or stop it") from None
            note = None
            if old and old.get("token") != self.token:
                if old.get("host") != self.info["host"]:  # another node, on a filesystem whose locks do not reach it
                    age = b.age()
                    if age < stale_after():
                        b.release(self.token)  # not ours: leave its record as it is
                        raise self._busy(old, age)
                    note = (f"took over the lock of run {self.name!r} left by {_describe(old)}: not renewed for "
                            f"{age:.0f} s (that driver or its node is gone)")
                else:
                    note = (f"took over the lock of run {self.name!r} left by {_describe(old)}: that driver ended without "
                            "releasing it (it was killed); no process holds it")
            b.write(self.info | {"heartbeat": time.time()})
            return note
        old = b.read()
        note = None
        if old and old.get("token") != self.token:
            age = b.age()
            if age < stale_after():
                raise self._busy(old, age)
            note = (f"took over the lock of run {self.name!r} left by {_describe(old)}: not renewed for {age:.0f} s "
                    "(that driver or its node is gone)")
        b.write(self.info | {"heartbeat": time.time()})
        time.sleep(_SETTLE_S)
        now = b.read()
        if not now or now.get("token") != self.token:  # another driver wrote after us: it holds the run
            raise self._busy(now or {})
        return note

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if not self.backend.still_ours(self.token):
                    self.lost = True  # taken over while we were silent (a paused process, a lost network)
                    print(f"warning: the lock of run {self.name!r} ({self.backend.where()}) was taken by another "
                          "driver; this driver goes on, but two drivers now write the run", file=sys.stderr)
                    return
                self.backend.write(self.info | {"heartbeat": time.time()})
            except OSError:
                pass  # the next beat tries again; a lock not renewed for long is judged abandoned

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self in _HELD:
            _HELD.remove(self)
        if self._beat is not None:
            self._beat.join(timeout=5)
        self.held = False
        try:
            self.backend.release(self.token)
        except OSError:
            pass  # a bucket that does not answer now: the lock is abandoned, the next driver takes it over

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
