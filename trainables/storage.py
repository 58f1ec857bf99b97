"""Where a run lives: a directory (local, or shared by every node: NFS), or a bucket (`s3://`, `gs://`).

A bucket run is kept in three places, each with one writer:

* the bucket, `URI/RUN/`: what the run is (spec.json, study.journal, results.parquet,
  curves.parquet, report.html, figures/, trials/<id>/...) next to Tune's and Ray Train's own
  state and checkpoints, which Ray writes there itself (its `storage_path` takes the URI);
* the driver's mirror, a local directory (`mirror_dir`), where the search and the report read and
  write as they do in a run directory: the driver pulls trials/ from the bucket before each
  results collection and pushes what it wrote (`RunMirror`);
* a trial's scratch directory on whichever node runs it (`scratch_dir`): the trial writes its
  files there and pushes the changed ones after every report and after a failure is written
  down (`TrialSync`); a retried or resumed trial pulls its files first.

A URI names the bucket and prefix the run directories go under; pyarrow's own filesystems
(`pyarrow.fs.FileSystem.from_uri`, as Ray's) open it, so its query options apply, e.g.
`s3://bucket/runs?endpoint_override=host:9000&scheme=http&region=eu-west-1` for an
S3-compatible server. Credentials come from the usual places (AWS_* variables or an instance
role; Google application default credentials) on every node.

Local copies live under `EXITSEARCH_STAGING` (default `~/.cache/exitsearch`). The commands that
read a finished run (search.recalibrate, reports.build, search.load) take `URI/RUN` too
(`fetch_run`). This module sits on the lowest floor, beside the trial loop, so that every floor
above (the search, the reports) can use it.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

__all__ = ["RemoteRun", "RunMirror", "StorageError", "TrialSync", "check_run_name", "checkpoint_directory", "fetch_run",
           "is_uri", "join_uri", "mirror_dir", "open_run", "run_mirror", "safe_destination", "scratch_dir", "staging_root",
           "trial_sync"]

#: pyarrow's built-in filesystems that a search can share between nodes
SCHEMES = ("s3", "gs", "gcs")
#: files the driver owns at the top of a run (pushed after it writes them)
TABLES = ("results.parquet", "curves.parquet", "study.journal")
#: the driver's own state below the top: the scheduler's rungs (search/moasha.py `STATE_FILE`),
#: pushed with the tables and pulled on a resume, so that a run resumed on another machine goes on
#: with its rungs (Tune keeps only top-level files of the run directory in the bucket itself)
DRIVER_STATE = ("scheduler/rungs.json",)
#: a remote modification time within this many seconds of a download may hide a later write in the
#: same second (S3 keeps whole seconds): such a file is fetched once more on the next pull
_FRESH = 2.0


class StorageError(ValueError):
    """A bucket URI that cannot be used (unknown scheme, no such bucket, no access)."""


def is_uri(storage: str) -> bool:
    return "://" in str(storage)


def _split(uri: str) -> tuple[str, str]:
    base, _, query = uri.partition("?")
    return base.rstrip("/"), query


def join_uri(uri: str, *parts: str) -> str:
    """`uri` with path parts appended before its query: s3://b/runs?x=1 + r -> s3://b/runs/r?x=1."""
    base, query = _split(uri)
    path = "/".join([base, *(p.strip("/") for p in parts if p)])
    return f"{path}?{query}" if query else path


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # search/spec.py's rule for run names


def safe_destination(root: Path, rel: str, source: str) -> Path:
    """Where a fetched object whose path below the fetched folder is `rel` goes: inside `root`,
    or StorageError. A bucket is written by whoever holds its credentials: a key with a `..`,
    `.` or empty part (`a//b`), a leading `/`, a backslash or a NUL, or one that would land on a
    link pointing out of `root`, is refused, naming the key (`source`) and the folder."""
    parts = rel.split("/")
    bad = (not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel
           or any(part in ("", ".", "..") for part in parts))
    dest = Path(root, *parts) if not bad else None
    if dest is not None:
        base = Path(root).resolve()
        try:
            dest.resolve().relative_to(base)
        except ValueError:
            bad = True
    if bad or dest is None:
        raise StorageError(f"refused to fetch {source}: its key would be written outside this machine's copy "
                           f"{root} (a '..', '.', empty or absolute part, a backslash, or a link out of the copy). "
                           "Whoever can write to the bucket put it there: check the bucket, and remove the object")
    return dest


def check_run_name(name: str, where: str) -> str:
    if not _RUN_NAME.match(name or ""):
        raise StorageError(f"{where}: {name!r} is not a run name (letters, digits, '_', '.', '-'; at most 100)")
    return name


def staging_root() -> Path:
    return Path(os.environ.get("EXITSEARCH_STAGING") or Path.home() / ".cache" / "exitsearch")


def _slug(uri: str) -> Path:
    """scheme/bucket/prefix of a URI (no query), safe as a relative path."""
    base, _ = _split(uri)
    scheme, _, rest = base.partition("://")
    parts = [re.sub(r"[^A-Za-z0-9_.-]", "_", p) for p in [scheme, *rest.split("/")] if p and p not in (".", "..")]
    return Path(*parts)


def mirror_dir(storage: str, name: str) -> Path:
    """The driver's local copy of run `name` of bucket storage `storage`."""
    return staging_root() / "runs" / _slug(storage) / name


def scratch_dir(storage: str, name: str, trial_id: str) -> Path:
    """A trial's working directory on the node that runs it (apart from the driver's mirror, so
    that each directory has one writer)."""
    return staging_root() / "scratch" / _slug(storage) / name / trial_id


def _filesystem(storage: str):
    import pyarrow.fs as pafs

    scheme = storage.partition("://")[0].lower()
    if scheme not in SCHEMES:
        raise StorageError(f"--storage {storage}: {scheme}:// is not a bucket the nodes can share; use s3://BUCKET/PREFIX, "
                           "gs://BUCKET/PREFIX, or a directory every node mounts (NFS)")
    try:
        return pafs.FileSystem.from_uri(storage)
    except Exception as exc:  # ArrowInvalid / OSError: a malformed URI, a missing client library
        raise StorageError(f"--storage {storage} cannot be opened ({type(exc).__name__}: {exc}); "
                           "see clusters/README.md for the URI form and its options") from exc


class RemoteRun:
    """Run `name` under bucket storage `storage`: file transfers between it and local directories."""

    def __init__(self, storage: str, name: str) -> None:
        self.storage, self.name = storage, name if name == "-" else check_run_name(name, storage)
        self.fs, base = _filesystem(storage)
        self.base = base.rstrip("/")
        self.root = f"{self.base}/{name}"

    @property
    def uri(self) -> str:
        return join_uri(self.storage, self.name)

    def _info(self, rel: str):
        return self.fs.get_file_info(f"{self.root}/{rel}")

    def exists(self, rel: str) -> bool:
        import pyarrow.fs as pafs

        return self._info(rel).type == pafs.FileType.File

    def read_text(self, rel: str) -> str | None:
        """One small file of the run as text; None when the bucket has none."""
        if not self.exists(rel):
            return None
        with self.fs.open_input_stream(f"{self.root}/{rel}") as src:
            return src.read().decode("utf-8", errors="replace")

    def names(self) -> list[str]:
        """The names directly under the run (files and folders)."""
        import pyarrow.fs as pafs

        found = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(Path(i.path).name for i in found)

    def held(self) -> list[str]:
        """What of a run the bucket holds under this name, for messages (empty: nothing)."""
        names = self.names()
        tune = [n for n in names if n.startswith(("experiment_state-", "tune_"))]
        known = [n for n in ("trials", "study.journal", "results.parquet", "tuner.pkl", "spec.json") if n in names]
        other = len(names) > len(known) + len(tune)
        return known + (["Tune's state"] if tune else []) + (["other files"] if other else [])

    def runs(self) -> list[str]:
        """Names of the runs under the storage (those with a spec.json)."""
        import pyarrow.fs as pafs

        found = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        names = [Path(i.path).name for i in found if i.type == pafs.FileType.Directory]
        return sorted(n for n in names if self.fs.get_file_info(f"{self.base}/{n}/spec.json").type == pafs.FileType.File)

    def probe(self) -> None:
        """Write, read back and delete a small object at the storage root: credentials, bucket and
        permissions are right before anything else happens."""
        path = f"{self.base}/.exitsearch-probe-{os.getpid()}-{time.time_ns()}"
        with self.fs.open_output_stream(path) as out:
            out.write(b"ok")
        with self.fs.open_input_stream(path) as src:
            if src.read() != b"ok":
                raise OSError(f"{path} did not read back what was written")
        self.fs.delete_file(path)

    def push(self, local: Path, rel: str) -> None:
        with open(local, "rb") as src, self.fs.open_output_stream(f"{self.root}/{rel}") as out:
            shutil.copyfileobj(src, out, 1 << 20)

    def pull(self, rel: str, local: Path, keep_newer: bool = False) -> bool:
        """Fetch one file (atomically); False when the bucket has none, or (`keep_newer`) when the
        local file is at least as new as the bucket's: a driver killed before it pushed keeps
        what it wrote last."""
        info = self._info(rel)
        if not info.is_file:
            return False
        if keep_newer and info.mtime is not None and local.exists() and local.stat().st_mtime >= info.mtime.timestamp():
            return False
        self._fetch(info, local)
        return True

    def _fetch(self, info, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.pull.tmp")
        with self.fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        stamp = info.mtime.timestamp() if info.mtime is not None else time.time()
        # a file written remotely moments ago may change again within its (whole) second: date the
        # copy a second earlier, so that the next pull fetches it once more
        mtime = stamp - 1.0 if time.time() - stamp < _FRESH else stamp
        os.utime(tmp, (mtime, mtime))
        os.replace(tmp, local)

    def pull_tree(self, rel: str, local: Path) -> list[Path]:
        """Fetch every file under `rel` that is missing here, of another size, or newer there;
        returns the local paths fetched."""
        import pyarrow.fs as pafs

        start = f"{self.root}/{rel}".rstrip("/")
        infos = self.fs.get_file_info(pafs.FileSelector(start, recursive=True, allow_not_found=True))
        fetched = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            dest = safe_destination(local, info.path[len(start) + 1:], f"{self.uri} {info.path[len(self.root) + 1:]!r}")
            try:
                st = dest.stat()
                newer = info.mtime is not None and info.mtime.timestamp() > st.st_mtime
                if st.st_size == info.size and not newer:
                    continue
            except FileNotFoundError:
                pass
            self._fetch(info, dest)
            fetched.append(dest)
        return fetched

    def push_tree(self, local: Path, rel: str, changed_since: dict[str, tuple[int, int]] | None = None) -> list[Path]:
        """Upload the files under `local` (hidden temporaries left out) to `rel`. With
        `changed_since` ({path: (size, mtime_ns)} of what was pushed or pulled), only the files
        that changed since, and it is updated."""
        sent = []
        for path in sorted(p for p in Path(local).rglob("*") if p.is_file() and not p.name.startswith(".")):
            st = path.stat()
            key, stamp = str(path), (st.st_size, st.st_mtime_ns)
            if changed_since is not None and changed_since.get(key) == stamp:
                continue
            self.push(path, f"{rel}/{path.relative_to(local).as_posix()}")
            if changed_since is not None:
                changed_since[key] = stamp
            sent.append(path)
        return sent


def open_run(storage: str, name: str) -> RemoteRun | None:
    """The bucket side of a run, or None for a run in a directory."""
    return RemoteRun(storage, name) if is_uri(storage) else None


class RunMirror:
    """The driver's side of a bucket run: its mirror directory kept in step with the bucket."""

    def __init__(self, remote: RemoteRun, local: Path) -> None:
        self.remote, self.local = remote, Path(local)

    def pull_run(self) -> None:
        """The run's files as the bucket has them (Tune's state and checkpoints stay there)."""
        for rel in ("spec.json", "report.html", *TABLES, *DRIVER_STATE):  # the driver's own files: its newer copies stay
            self.remote.pull(rel, self.local / rel, keep_newer=True)
        self.remote.pull_tree("figures", self.local / "figures")
        self.pull_trials()

    def pull_trials(self) -> None:
        self.remote.pull_tree("trials", self.local / "trials")

    def push(self, *rels: str) -> None:
        for rel in rels:
            path = self.local / rel
            if path.is_dir():
                self.remote.push_tree(path, rel)
            elif path.exists():
                self.remote.push(path, rel)

    def push_tables(self) -> None:
        self.push(*TABLES, *DRIVER_STATE)

    def push_trial_status(self, trial_ids) -> None:
        """Statuses the driver changed itself (a trial settled as interrupted or stopped)."""
        self.push(*(f"trials/{t}/status.json" for t in trial_ids))

    def push_rewritten(self) -> list[Path]:
        """After a command rewrote parts of the copy (search.recalibrate, reports.build): upload
        the files written here since they were fetched (missing there, of another size, or newer
        here than there by more than the bucket's whole-second clock)."""
        import pyarrow.fs as pafs

        infos = self.remote.fs.get_file_info(pafs.FileSelector(self.remote.root, recursive=True, allow_not_found=True))
        there = {i.path[len(self.remote.root) + 1:]: i for i in infos if i.type == pafs.FileType.File}
        sent = []
        for path in sorted(p for p in self.local.rglob("*") if p.is_file() and not p.name.startswith(".")):
            rel, st = path.relative_to(self.local).as_posix(), path.stat()
            info = there.get(rel)
            if info is not None and info.size == st.st_size and info.mtime is not None \
                    and st.st_mtime <= info.mtime.timestamp() + 1.0:
                continue
            self.remote.push(path, rel)
            sent.append(path)
        return sent


class _NoMirror:
    """A run in a directory: nothing to keep in step."""

    def pull_run(self) -> None: ...
    def pull_trials(self) -> None: ...
    def push(self, *rels: str) -> None: ...
    def push_tables(self) -> None: ...
    def push_trial_status(self, trial_ids) -> None: ...


def fetch_run(run: str) -> tuple[Path, RunMirror | None]:
    """A run named as a directory, or as a bucket URI (`s3://BUCKET/PREFIX/RUN`): its local
    directory; a bucket run is fetched into this machine's copy first (and returned with it, to
    push back what a command rewrites)."""
    if not is_uri(run):
        return Path(run), None
    base, query = _split(run)
    parent, _, name = base.rpartition("/")
    if not name or "://" not in parent:
        raise StorageError(f"{run}: name a run in a bucket as s3://BUCKET/PREFIX/RUN (or gs://...)")
    storage = f"{parent}?{query}" if query else parent
    check_run_name(name, run)
    remote = RemoteRun(storage, name)
    try:
        if not remote.exists("spec.json"):
            raise StorageError(f"{run}: there is no run there (no spec.json); runs in {storage}: "
                               f"{', '.join(remote.runs()) or 'none'}")
        mirror = RunMirror(remote, mirror_dir(storage, name))
        mirror.pull_run()
    except OSError as exc:
        raise StorageError(f"{run} cannot be read ({exc}); check the credentials and the URI's options") from exc
    return mirror.local, mirror


def run_mirror(spec: Any) -> RunMirror | _NoMirror:
    remote = open_run(spec.storage, spec.name)
    return _NoMirror() if remote is None else RunMirror(remote, spec.run_dir)


class TrialSync:
    """A trial's side of a bucket run: its scratch directory pushed to `trials/<id>/`."""

    def __init__(self, remote: RemoteRun, trial_id: str, local: Path) -> None:
        self.remote, self.rel, self.local = remote, f"trials/{trial_id}", Path(local)
        self._sent: dict[str, tuple[int, int]] = {}

    def pull(self) -> None:
        """What the bucket has of this trial (a retry on another node, a resumed run)."""
        for path in self.remote.pull_tree(self.rel, self.local):
            st = path.stat()
            self._sent[str(path)] = (st.st_size, st.st_mtime_ns)

    def push(self) -> list[Path]:
        """Upload the files changed since the last push or pull; returns them."""
        return self.remote.push_tree(self.local, self.rel, self._sent) if self.local.is_dir() else []

    def done(self) -> None:
        """The trial ended (its files are in the bucket): its scratch directory goes."""
        shutil.rmtree(self.local, ignore_errors=True)
        self._sent.clear()

    def reporter(self, inner: Any) -> Any:
        return _PushingReporter(inner, self)


class _PushingReporter:
    """A trainables.engine.loop.Reporter that pushes the trial's files before each report, so the driver
    finds them when it hears of the report."""

    def __init__(self, inner: Any, sync: TrialSync) -> None:
        self.inner, self.sync = inner, sync

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.sync.push()
        self.inner.report(metrics, checkpoint_dir)

    def get_checkpoint(self) -> str | None:
        return self.inner.get_checkpoint()

    def files_written(self) -> None:
        self.sync.push()


def checkpoint_directory(ckpt: Any) -> str:
    """A Ray checkpoint (tune/train `Checkpoint`) as a local directory, its files listed and
    checked first (`safe_destination`): a checkpoint in a bucket is fetched only when every key
    stays inside the folder it is fetched to."""
    import pyarrow.fs as pafs

    infos = ckpt.filesystem.get_file_info(pafs.FileSelector(ckpt.path, recursive=True, allow_not_found=True))
    probe = Path(staging_root()) / "checkpoint-check"
    for info in infos:
        if info.type == pafs.FileType.File:
            safe_destination(probe, info.path[len(ckpt.path.rstrip("/")) + 1:], f"checkpoint {ckpt.path} {info.path!r}")
    return ckpt.to_directory()


def trial_sync(spec: Any, trial_id: str) -> TrialSync | None:
    remote = open_run(spec.storage, spec.name)
    return None if remote is None else TrialSync(remote, trial_id, scratch_dir(spec.storage, spec.name, trial_id))
