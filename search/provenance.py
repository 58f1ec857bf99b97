"""Provenance of a run or a trial: git revision, package versions, device, host, time."""

from __future__ import annotations

import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "ray", "optuna", "accelerate", "pyarrow", "numpy", "rich", "matplotlib")
_ROOT = Path(__file__).resolve().parents[1]


def git_revision(root: Path = _ROOT) -> str:
    """HEAD's hash, with "+dirty" when tracked files differ from it; "unknown" outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def code_origin() -> dict[str, str]:
    """Where this process imported the platform from (a source tree, or an installed wheel) and
    the installed distribution's version ("absent" when it runs from a source tree only)."""
    try:
        version = metadata.version("exitsearch")
    except metadata.PackageNotFoundError:
        version = "absent"
    return {"path": str(_ROOT), "exitsearch": version}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "absent"
    return out


def device_description() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    except Exception:  # a broken CUDA install must not stop a CPU run
        pass
    return f"cpu ({platform.machine()})"


def collect() -> dict[str, Any]:
    return {
        "git_rev": git_revision(),
        "code": code_origin(),
        "versions": versions(),
        "device": device_description(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
