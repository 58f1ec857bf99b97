"""Tune's own state files in a run directory: checked whole, and put back whole after a full disk.

Tune saves its state (tuner.pkl, experiment_state-*.json, searcher-state-*.pkl,
search_gen_state-*.json, ...) into a staging folder on the driver's machine, then copies it over
the run directory's copy, in place, from a thread. A full disk (or a crash) during that copy
leaves a file of the run cut off, and the run could not be resumed. So:

* after a run that met a full disk, once its reserve is released, `resync` copies Tune's last
  saved state from the staging folder into the run directory again, each file written whole
  (temporary file, then renamed over the old one), and only files that read whole;
* the driver notes where its staging folder is (`note_staging`: `.tune_staging.json` in the run
  directory); a resume whose Tune state does not read whole (a driver killed while Tune copied
  it in) first puts it back whole from that folder when it is still on this machine and every
  cut-off file reads whole there (`recover`), as Tune writes it there whole (a temporary file
  renamed);
* a resume whose Tune state still does not read whole is refused (`cut_off`), naming the files,
  instead of failing inside Tune;
* Tune restores a run by unpickling its state, which can run code: a resume whose Tune state
  someone else could have written is refused (`writable_by_others`). Nothing else of a run is
  unpickled (trainables/safe_load.py); reading a run (reports, recalibration, search.load)
  never touches Tune's state.

"Reads whole" is checked without running anything: JSON files parse (`json.loads` builds only
plain values), pickles are scanned opcode by opcode to their STOP (`pickletools.genops`
interprets nothing). Bucket runs keep Tune's state in the bucket, whose writes do not leave half
objects: these helpers are for run directories.
"""

from __future__ import annotations

import json
import pickletools
import shutil
from pathlib import Path

from trainables.atomic import atomic_write

__all__ = ["STAGING_NOTE", "cut_off", "note_staging", "recover", "resync", "state_files", "writable_by_others"]

STAGING_NOTE = ".tune_staging.json"  # where the driver's Tune staged the run's state (note_staging)
_PREFIXES = ("experiment_state-", "searcher-state-", "search_gen_state-", "basic-variant-state-", "callback-states-")


def state_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and (p.name == "tuner.pkl" or p.name.startswith(_PREFIXES)))


def _whole(path: Path) -> bool:
    data = path.read_bytes()
    if not data:
        return False
    if data[:1] in (b"{", b"["):
        try:
            json.loads(data)
            return True
        except ValueError:
            return False
    try:
        return any(op.name == "STOP" for op, _, _ in pickletools.genops(data))
    except Exception:  # noqa: BLE001 - a cut-off or foreign stream: not whole
        return False


def cut_off(folder: str | Path) -> list[str]:
    """Names of Tune's state files in `folder` that do not read whole (empty: all whole)."""
    out = []
    for path in state_files(folder):
        try:
            if not _whole(path):
                out.append(path.name)
        except OSError:
            out.append(path.name)
    return out


def writable_by_others(run_dir: str | Path) -> list[str]:
    """Tune's state files (and the folders holding them) that someone other than this user could
    have written: owned by another user, or writable by the group or by all. Tune restores a run by
    unpickling them, which can run code, so Ray's rule holds: never restore from a path that other
    parties can write to."""
    import os
    import stat

    run_dir = Path(run_dir)
    me = os.getuid()
    out = []
    for path in [run_dir.parent, run_dir, *state_files(run_dir)]:
        try:
            st = path.stat()
        except OSError:
            continue
        sticky = path.is_dir() and st.st_mode & stat.S_ISVTX  # /tmp-like: others cannot replace our files
        if st.st_uid not in (me, 0):
            out.append(f"{path} (owned by uid {st.st_uid})")
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky:
            out.append(f"{path} (writable by {'all' if st.st_mode & stat.S_IWOTH else 'its group'})")
    return out


def resync(staging: str | Path | None, run_dir: str | Path) -> list[str]:
    """Copy Tune's state files from its staging folder to the run directory, each written whole;
    files of the staging folder that do not read whole are left out. Returns the names written."""
    if not staging:
        return []
    written = []
    for src in state_files(staging):
        dest = Path(run_dir) / src.name
        if not _whole(src):
            continue
        if dest.exists() and dest.read_bytes() == src.read_bytes():
            continue
        atomic_write(dest, lambda tmp, src=src: shutil.copyfile(src, tmp))
        written.append(src.name)
    return written


def note_staging(run_dir: str | Path, staging: str | Path | None) -> bool:
    """Write down (atomically) where Tune stages this run's state, once per folder; True when written."""
    from trainables.atomic import write_json

    if not staging:
        return False
    note = Path(run_dir) / STAGING_NOTE
    try:
        if json.loads(note.read_text()).get("path") == str(staging):
            return False
    except (OSError, ValueError, AttributeError):
        pass
    write_json(note, {"path": str(staging)})
    return True


def recover(run_dir: str | Path) -> list[str]:
    """Tune's state files of `run_dir` that are cut off, put back whole from the staging folder the
    last driver noted, when that folder is still here, is writable by this user alone, and holds every
    cut-off file whole. Returns the names written (empty: nothing to do, or nothing it could do)."""
    run_dir = Path(run_dir)
    bad = cut_off(run_dir)
    if not bad:
        return []
    try:
        staging = Path(json.loads((run_dir / STAGING_NOTE).read_text())["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not staging.is_dir() or writable_by_others(staging):
        return []
    if any(not (staging / name).is_file() or not _whole(staging / name) for name in bad):
        return []
    return resync(staging, run_dir)
