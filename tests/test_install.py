"""Installed the way users install: the wheel `pip` builds from this tree holds every package, and
the installed copy runs `python -m search.run --help` and a tiny search from outside the source tree.

This Python has the project installed editable (setuptools' finder, put on sys.meta_path by a .pth
file in site-packages, maps `search`, `trainables`, ... to a source tree), so a plain subprocess
would import the source tree whatever was installed. Here the wheel is installed with
`pip install --no-deps --target DIR`, and the commands run as `python -S` (no site processing:
no .pth file runs, so no editable finder) with PYTHONPATH = DIR, then the site-packages that hold
the dependencies (torch is not installed twice). Each test asserts where the code it ran came
from: the installed copy, never this tree.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "spaces", "trainables", "reports", "clusters")


def _copy_sources(dest: Path) -> Path:
    """What a build reads (pyproject.toml, README.md, the package folders), without caches or the
    build's own leftovers, so that the build leaves nothing in this tree."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _sub_packages(root: Path) -> set[str]:
    return {".".join(p.parent.relative_to(root).parts) for pkg in PACKAGES for p in (root / pkg).rglob("__init__.py")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    src = _copy_sources(tmp / "src")
    dist, target = tmp / "dist", tmp / "target"
    log = []

    def run(*cmd: str) -> None:
        p = subprocess.run([sys.executable, "-m", "pip", *cmd], capture_output=True, text=True, timeout=300, cwd=tmp)
        log.append(f"$ python -m pip {' '.join(cmd)}\n{p.stdout}{p.stderr}")
        assert p.returncode == 0, log[-1]

    run("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src))
    (wheel,) = dist.glob("*.whl")
    run("install", "--no-deps", "--no-index", "--target", str(target), str(wheel))
    deps = [d for d in site.getsitepackages() if Path(d).is_dir()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EXITSEARCH_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(target), *deps])
    outside = tmp / "elsewhere"
    outside.mkdir()
    yield {"wheel": wheel, "target": target, "env": env, "cwd": outside, "tmp": tmp, "log": log}
    if os.environ.get("INSTALL_TRANSCRIPT"):  # the build, the install and the installed copy's commands, for a release note
        Path(os.environ["INSTALL_TRANSCRIPT"]).write_text("\n".join(log))


def _python(installed: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-S", *args], cwd=installed["cwd"], env=installed["env"], capture_output=True,
                       text=True, timeout=timeout)
    shown = [a if len(a) < 200 else a[:200] + "..." for a in args]
    out = p.stdout if len(p.stdout) < 3000 else f"{p.stdout[:1500]}\n[...]\n{p.stdout[-1500:]}"
    installed["log"].append(f"$ cd {installed['cwd']}; PYTHONPATH={installed['env']['PYTHONPATH']} python -S "
                            f"{' '.join(shown)}\n{out}{p.stderr[-3000:]}(exit {p.returncode})\n")
    return p


def test_wheel_has_every_package_of_the_tree(installed) -> None:
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    in_wheel = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert _sub_packages(ROOT) <= in_wheel, sorted(_sub_packages(ROOT) - in_wheel)
    assert {"trainables.exits", "trainables.engine", "trainables.hierarchy_heads"} <= in_wheel
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert "clusters/aws.yaml" in names  # package data travels too


def test_installed_copy_imports_from_the_install_not_the_tree(installed) -> None:
    mods = ["search.run", "search.tuner", "spaces", "trainables.exits", "trainables.engine.loop",
            "trainables.hierarchy_heads", "reports.build", "clusters"]
    code = ("import importlib, json, sys\n"
            f"mods = {mods!r}\n"
            "print(json.dumps({m: importlib.import_module(m).__file__ for m in mods}))\n"
            "print(json.dumps([type(f).__name__ for f in sys.meta_path]))\n")
    p = _python(installed, "-c", code)
    assert p.returncode == 0, p.stderr
    files, finders = (json.loads(line) for line in p.stdout.splitlines()[-2:])
    target = str(installed["target"])
    assert all(f.startswith(target + os.sep) for f in files.values()), files
    assert not any("editable" in f.lower() for f in finders), finders


def test_installed_help(installed) -> None:
    p = _python(installed, "-m", "search.run", "--help")
    assert p.returncode == 0, p.stderr
    assert "--space" in p.stdout and "--storage" in p.stdout


@pytest.mark.slow
def test_installed_copy_runs_a_tiny_search(installed) -> None:
    runs = installed["tmp"] / "runs"
    p = _python(installed, "-m", "search.run", "--space", "gran_hbn", "--data", "synthetic", "--data-size", "tiny",
                "--trials", "1", "--storage", str(runs), "--name", "wheel", timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    run = runs / "wheel"
    target = str(installed["target"])
    spec = json.loads((run / "spec.json").read_text())
    assert spec["provenance"]["code"]["path"] == target  # the driver's code
    assert spec["provenance"]["code"]["exitsearch"] == "0.1.0"
    statuses = [json.loads(f.read_text()) for f in run.glob("trials/*/status.json")]
    assert statuses and all(s["status"] == "complete" for s in statuses), statuses
    assert all(s["provenance"]["code"] == target for s in statuses)  # the trials' code, in Ray's workers
    assert (run / "results.parquet").is_file() and (run / "report.html").is_file()
