"""The `ray` command of the Ray this Python imports (a console script of the `ray` package, a
dependency of the project): beside the interpreter, or else on PATH. Its absence is a broken
install, so the tests that need it fail then, never skip."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")
    if beside.is_file():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise FileNotFoundError(f"the `ray` command is neither beside {sys.executable} nor on PATH: "
                                "the ray package is installed without its scripts; reinstall it")
    return found
