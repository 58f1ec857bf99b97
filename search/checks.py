"""Checks made before a run directory exists: each failure is a `BadInput` whose message says what
is wrong and what to do (the CLI prints it and exits 2, having written nothing).

Pure where it can be: resource checks take the numbers (cores, GPUs, nodes) as arguments.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["BadInput", "check_address", "check_bucket_run", "check_conventions", "check_device", "check_fits",
           "check_resumable", "check_resume", "check_results_readable", "check_storage"]


class BadInput(ValueError):
    """Input the run cannot go on with."""


def check_storage(storage: str | Path) -> None:
    """`--storage` must be a directory this process can create run directories in (it is made
    when missing, with its parents: the nearest existing ancestor must then be writable), or a
    bucket URI this process can write to (trainables/storage.py)."""
    from trainables.storage import StorageError, is_uri, open_run

    if is_uri(str(storage)):
        try:
            open_run(str(storage), "-").probe()
        except StorageError as exc:
            raise BadInput(str(exc)) from exc
        except OSError as exc:
            raise BadInput(f"--storage {storage} cannot be written ({exc}); check that the bucket exists, this "
                           "machine's credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an instance role; "
                           "Google application default credentials), and for an S3-compatible server the "
                           "?endpoint_override=HOST:PORT&scheme=http options (clusters/README.md)") from exc
        return
    path = Path(storage)
    if path.exists() and not path.is_dir():
        raise BadInput(f"--storage {path} is a file, not a directory: pass a directory for the run directories")
    probe = path
    while not probe.exists():
        probe = probe.parent
    where = "it" if probe == path else f"its ancestor {probe}"
    if not probe.is_dir():
        raise BadInput(f"--storage {path} cannot be made: {where} is a file, not a directory; "
                       "pass a directory you can write, e.g. --storage runs")
    try:  # the only sure test (permissions, read-only mounts, /proc): make a directory there, and remove it
        os.rmdir(tempfile.mkdtemp(prefix=".storage-check-", dir=probe))
    except OSError as exc:
        raise BadInput(f"--storage {path} is not writable ({where}: {exc.strerror or exc}): "
                       "pass a directory you can write, e.g. --storage runs") from exc


def check_resume(run_dir: Path, resume: bool, storage: Path) -> None:
    """A new run needs a fresh name; a resumed one must exist, with a readable spec."""
    spec = run_dir / "spec.json"
    if not resume:
        if spec.exists():
            raise BadInput(f"run directory {run_dir} exists: pick another --name, or add --resume to continue it")
        return
    if not spec.exists():
        known = sorted(p.parent.name for p in storage.glob("*/spec.json")) if storage.is_dir() else []
        hint = f"runs in {storage}: {', '.join(known)}" if known else f"there are no runs in {storage}"
        raise BadInput(f"there is no run {run_dir.name!r} to resume ({spec} is missing); {hint}. "
                       "Drop --resume to start it, or name an existing run with --name (and --storage)")
    try:
        json.loads(spec.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{spec} cannot be read ({exc}): the run cannot be resumed; start a new run with "
                       "another --name (its finished trials stay in their directories)") from exc


def check_bucket_run(storage: str, name: str, resume: bool, mirror: Path) -> None:
    """A new bucket run needs a name the bucket (and this machine's copy of it) does not hold;
    a resumed one must be in the bucket."""
    from trainables.storage import open_run

    remote = open_run(storage, name)
    try:
        there = remote.exists("spec.json")
        known = [] if there or not resume else remote.runs()
    except OSError as exc:
        raise BadInput(f"--storage {storage} cannot be read ({exc})") from exc
    if not resume:
        if there:
            raise BadInput(f"run {name!r} exists in {storage}: pick another --name, or add --resume to continue it")
        if (mirror / "spec.json").exists():
            raise BadInput(f"run {name!r} is not in {storage}, but this machine has a copy of a run of that name at "
                           f"{mirror}: move that directory aside (it may be the only copy left), or pick another --name")
        return
    if not there:
        hint = f"runs in {storage}: {', '.join(known)}" if known else f"there are no runs in {storage}"
        raise BadInput(f"there is no run {name!r} to resume in {storage}; {hint}. Drop --resume to start it, or name "
                       "an existing run with --name (and --storage)")


def check_results_readable(run_dir: Path) -> None:
    """On resume, results.parquet must read (it is rebuilt from the trial directories: a corrupt
    one is the user's to move away, not ours to overwrite)."""
    path = run_dir / "results.parquet"
    if not path.exists():
        return
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except Exception as exc:
        raise BadInput(f"{path} is corrupt ({type(exc).__name__}: {exc}); it is rebuilt from the trial "
                       "directories: move it aside (or delete it) and resume again") from exc


def check_resumable(run_dir: Path) -> None:
    """The files a resume reads: results.parquet and the study journal must be whole."""
    from search.study import StudyUnreadable, check_readable

    check_results_readable(run_dir)
    try:
        check_readable(run_dir)
    except StudyUnreadable as exc:
        raise BadInput(f"{exc}: the run cannot be resumed; start a new run with another --name "
                       "(the finished trials stay in their directories)") from exc


def check_conventions(run_dir: Path, declaration: Any) -> None:
    """On resume, the run's stored declaration must state the versioned conventions the code uses
    (trainables/contract.py `Convention`): new trials would be scored under the code's versions,
    the finished ones were under the stored ones, and one results table must not mix the two."""
    from trainables.contract import Declaration, convention_changes

    try:
        stored = json.loads((run_dir / "spec.json").read_text(encoding="utf-8")).get("declaration")
        stored = Declaration.from_dict(stored) if stored is not None else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # an unreadable spec or declaration: check_resume and the report say so; nothing to compare
    changes = convention_changes(stored, declaration) if stored is not None else []
    if changes:
        raise BadInput(f"run {run_dir.name!r} cannot be resumed by this code: its finished trials were scored under "
                       "other versions of its conventions than this code's, and resuming would put both in one "
                       f"results table. {' '.join(changes)} Recalibrate it first (python3 -m search.recalibrate "
                       f"{run_dir}: every finished trial's points are recomputed from their cached outputs under this "
                       "code's versions, and the change is recorded), then resume; or start a new run with another "
                       "--name.")


def check_device(device: str, cuda_available: bool) -> None:
    if device == "cuda" and not cuda_available:
        raise BadInput("--device cuda, but torch sees no CUDA GPU on this machine: use --device cpu (or auto), "
                       "or run on a machine with a GPU")


def check_fits(cpus_per_trial: float, gpus_per_trial: float, nodes: Iterable[Mapping[str, Any]], where: str,
               workers: int = 1) -> None:
    """The alive nodes can hold one trial: each of its `workers` processes (the trial's CPUs and
    GPUs split evenly) on some node, all of them at once. `nodes` are the nodes' total resources
    ({"CPU": n, "GPU": m}). Refused before the search starts (else the trial waits forever)."""
    nodes = list(nodes)
    cpu, gpu = cpus_per_trial / workers, gpus_per_trial / workers

    def slots(n: Mapping[str, Any]) -> int:
        by_cpu = float(n.get("CPU", 0)) / cpu
        by_gpu = float(n.get("GPU", 0)) / gpu if gpu else by_cpu
        return int(min(by_cpu, by_gpu) + 1e-9)

    if sum(slots(n) for n in nodes) >= workers:
        return
    most_cpu = max((float(n.get("CPU", 0)) for n in nodes), default=0.0)
    most_gpu = max((float(n.get("GPU", 0)) for n in nodes), default=0.0)
    all_cpu = sum(float(n.get("CPU", 0)) for n in nodes)
    all_gpu = sum(float(n.get("GPU", 0)) for n in nodes)
    wants = f"--cpus-per-trial {cpus_per_trial:g}" + (f" --gpus-per-trial {gpus_per_trial:g}" if gpus_per_trial else "")
    if workers > 1:
        wants += f" --workers-per-trial {workers} ({cpu:g} CPU{f' and {gpu:g} GPU' if gpu else ''} for each worker)"
    if gpu > most_gpu:
        has = "no GPU" if most_gpu == 0 else f"at most {most_gpu:g} GPU(s) on a node"
        fix = "--gpus-per-trial 0 (train on the CPU)" if most_gpu == 0 else f"--gpus-per-trial <= {most_gpu:g}"
    elif cpu > most_cpu:
        has = f"at most {most_cpu:g} CPU core(s) on a node"
        fix = f"--cpus-per-trial <= {most_cpu * workers:g}"
    else:
        has = f"{all_cpu:g} CPU core(s){f' and {all_gpu:g} GPU(s)' if gpu else ''} in all, not enough for {workers} workers at once"
        fix = "fewer --workers-per-trial or a smaller --cpus-per-trial"
    raise BadInput(f"no trial can ever be placed: {wants} asked for, but {where} has {has}; use {fix}")


def check_address(address: str | None, timeout: float = 10.0) -> None:
    """`--address HOST:PORT` must answer (a TCP connect to the Ray head's GCS port), else Ray
    would retry for minutes. `auto` and `ray://` addresses are left to Ray."""
    if not address or address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise BadInput(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379), 'auto', or ray://HOST:PORT")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise BadInput(f"no Ray cluster answers at {address} ({exc.strerror or exc}): start one there "
                       f"(`ray start --head --port {port}`), check the address and firewall, or drop --address "
                       "to run on this machine") from exc
