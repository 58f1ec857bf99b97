"""The driver's Ray: started inside this process, or a cluster joined and named; and the Ray
processes a killed driver left behind on this machine.

* A Ray started in-process (no `--address`) is marked as this driver's: its node carries the label
  `exitsearch-driver`, and every process it starts (raylet, agents, trial workers) inherits the
  environment variable `EXITSEARCH_DRIVER` = this driver's pid and start time.
* Joining a cluster (`--address auto` or HOST:PORT) says which one: its address, alive nodes and
  resources, and who started it. A cluster that is another process's in-process Ray (another
  search's, or a notebook's) is refused: its life is that process's, and the searches would share
  its resources unseen. It is recognised by the label (searches of this version) or, on this
  machine, by the parent of its raylet being a program other than `ray start`.
* When a driver is killed (SIGKILL), Ray's own fate-sharing kills its GCS and raylet at once, but
  the agents the raylet started (dashboard agent, runtime-env agent) notice only later (tens of
  seconds). `reap_orphans`, run first by every `search.run`, ends the processes whose
  `EXITSEARCH_DRIVER` names a driver that is gone.

The /proc parts are Linux's; elsewhere they find nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["LABEL", "MARK", "ForeignRay", "describe_cluster", "driver_mark", "in_process_init_options", "reap_orphans"]

MARK = "EXITSEARCH_DRIVER"
LABEL = "exitsearch-driver"
_PROC = Path("/proc")


class ForeignRay(Exception):
    """The cluster joined is another process's in-process Ray."""


def _start_ticks(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): with the pid, it names the process for good."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def driver_mark(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_ticks(pid) or 0}"


def _alive(mark: str) -> bool:
    pid, _, ticks = mark.partition("-")
    try:
        return _start_ticks(int(pid)) == int(ticks)
    except ValueError:
        return True  # a mark we cannot read: leave its processes alone


def in_process_init_options() -> dict[str, Any]:
    """What `ray.init` gets when this driver starts Ray itself: the label, and the mark in the
    environment its processes inherit."""
    os.environ[MARK] = driver_mark()
    return {"labels": {LABEL: f"{socket.gethostname()[:40]}.{os.getpid()}"}}


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _cmdline(pid: int) -> str:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        return int((_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid and pid not in out:
        out.add(pid)
        pid = _ppid(pid) or 0
    return out


def _pids() -> list[int]:
    try:
        return [int(p.name) for p in _PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return []


def reap_orphans(grace: float = 3.0) -> dict[str, list[int]]:
    """End this user's processes started by an in-process Ray whose driver is gone; returns
    {driver mark: [pids ended]}. SIGTERM, then SIGKILL after `grace` seconds."""
    uid, mine = os.getuid(), _ancestors()
    found: dict[str, list[int]] = {}
    for pid in _pids():
        if pid in mine:
            continue
        try:
            if (_PROC / str(pid)).stat().st_uid != uid:
                continue
        except OSError:
            continue
        mark = _environ(pid).get(MARK)
        if mark and not _alive(mark):
            found.setdefault(mark, []).append(pid)
    victims = [(pid, _start_ticks(pid)) for pids in found.values() for pid in pids]
    for pid, _ in victims:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_start_ticks(p) == t for p, t in victims):
        time.sleep(0.1)
    for pid, ticks in victims:
        if _start_ticks(pid) == ticks:  # still the same process: it would not go
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return found


def _is_ray_cli(cmd: str) -> bool:
    words = cmd.split()
    return "start" in words and any(w == "ray" or w.endswith("/ray") for w in words)


def _local_starter(gcs_address: str) -> tuple[int, str, bool] | None:
    """(pid, command line, in-process?) of the process that started the Ray whose raylet on this
    machine serves `gcs_address`; None when no raylet here serves it (a remote head). Ray names
    its session after the pid of the process that started it; a raylet whose parent is still that
    process, and that process not the `ray start` command, is an in-process Ray."""
    import re

    for pid in _pids():
        cmd = _cmdline(pid)
        if "raylet" not in cmd.split(" ", 1)[0] or f"--gcs-address={gcs_address}" not in cmd:
            continue
        found = re.search(r"--session-name=session_\S+_(\d+)(?:\s|$)", cmd)
        starter = int(found.group(1)) if found else None
        parent = _ppid(pid)
        if starter is None:
            return None
        starter_cmd = _cmdline(starter)
        return starter, starter_cmd, parent == starter and bool(starter_cmd) and not _is_ray_cli(starter_cmd)
    return None


def describe_cluster(asked: str) -> str:
    """One line naming the cluster this driver joined (address, alive nodes, resources, who started
    it); ForeignRay when it is another process's in-process Ray."""
    import ray

    address = ray.get_runtime_context().gcs_address
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    owners = sorted({n.get("Labels", {}).get(LABEL) for n in nodes} - {None})
    starter = _local_starter(address)
    foreign = None
    if owners:
        foreign = f"the in-process Ray of another search (its driver: {', '.join(owners)})"
    elif starter is not None and starter[2]:
        what = "another search" if "search.run" in starter[1] else "another program"
        foreign = f"the in-process Ray of {what} (pid {starter[0]}: {starter[1][:200]})"
    where = f"--address {asked} found the Ray at {address}"
    if foreign is not None:
        raise ForeignRay(f"{where}: {foreign}. It lives only as long as that process, and this search would share its "
                         "CPUs and GPUs unseen: start a cluster to share (`ray start --head`, then --address "
                         "HOST:PORT), or drop --address to start this search's own Ray")
    who = f"; started by `{starter[1][:120]}` (pid {starter[0]})" if starter is not None and starter[1] else ""
    return (f"joined the Ray cluster at {address} (--address {asked}): {len(nodes)} node(s) alive, "
            f"{res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU{who}")
