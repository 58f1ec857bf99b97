"""The bad-input matrix: every case runs `python -m search.run` as a user does, in a subprocess,
and checks the exit code, that the message names the problem (and no traceback is shown), and
that nothing already written changed: the storage holds a finished run ("kept") whose every
file is compared byte for byte, and no new run directory appears.

Cases that need Ray (resources, cluster address) start it; each case takes a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.reports.fabricate import GRAN, make_run_dir

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    args: list[str]
    message: str  # a fragment the message must contain (case-insensitive)
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], list[str]] | None = None  # writes files under tmp, returns extra args


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _kept_run(storage: Path) -> Path:
    """A finished gran_hbn run on synthetic data, as a resume would find it."""
    run = make_run_dir(storage, GRAN)
    kept = storage / "kept"
    run.rename(kept)
    spec = json.loads((kept / "spec.json").read_text())
    spec.update(space="gran_hbn", data="synthetic", name="kept", data_size="tiny")
    (kept / "spec.json").write_text(json.dumps(spec))
    (kept / "study.journal").write_text("")
    return kept


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- data fixtures: a CIFAR-10 root in one of its two official forms, spoilt one way ---------------
def _npz(x: np.ndarray, y: np.ndarray) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        root = tmp / "data"
        root.mkdir()
        np.savez(root / "cifar10-train.npz", x=x, y=y)
        return ["--data", "cifar10", "--data-root", str(root)]
    return setup


def _truncated_npz(tmp: Path) -> list[str]:
    args = _npz(np.zeros((100, 32, 32, 3), np.uint8), np.arange(100) % 10)(tmp)
    f = tmp / "data" / "cifar10-train.npz"
    f.write_bytes(f.read_bytes()[:300])
    return args


def _truncated_pickle(tmp: Path) -> list[str]:
    folder = tmp / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10)), b"filenames": [b"x"] * 10}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch)[:200])
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}))
    return ["--data", "cifar10", "--data-root", str(tmp / "data")]


def _csv(rows: list[str], images: int = 0) -> Callable[[Path], list[str]]:
    """A CSV dataset (--data csv:PATH) with `images` small PNGs beside it."""
    def setup(tmp: Path) -> list[str]:
        import torch
        from torchvision.io import write_png

        folder = tmp / "csvdata"
        folder.mkdir()
        for i in range(images):
            write_png(torch.full((3, 8, 8), 10 * i, dtype=torch.uint8), str(folder / f"{i}.png"))
        (folder / "labels.csv").write_text("ImageID,Labels,Caption\n" + "".join(rows))
        return ["--data", f"csv:{folder / 'labels.csv'}"]
    return setup


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo ran > /dev/null",))


def _unsafe_weights(tmp: Path) -> list[str]:
    import torch

    torch.save({"conv1.weight": torch.zeros(1), "payload": _RunsCode()}, tmp / "w.pt")
    return ["--weights", str(tmp / "w.pt")]


def _plugin_missing(tmp: Path) -> list[str]:
    return []


def _corrupt(name: str, data: bytes) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "runs" / "kept" / name).write_bytes(data)
        return ["--name", "kept", "--resume", "--data-size", "tiny"]
    return setup


def _file_storage(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("not a directory")
    return ["--storage", str(tmp / "afile")]


def _address(tmp: Path) -> list[str]:
    return ["--address", f"127.0.0.1:{_free_port()}"]


# -- run-directory fixtures: a run spoilt one way, or held by another driver --------------------------
def _trials(run: Path, n: int = 1) -> None:
    for i in range(n):
        (run / "trials" / f"t{i}").mkdir(parents=True)
        (run / "trials" / f"t{i}" / "status.json").write_text(json.dumps({"status": "complete"}))


def _orphan(resume: bool) -> Callable[[Path], list[str]]:
    """A directory with trials and a journal but no spec.json."""
    def setup(tmp: Path) -> list[str]:
        run = tmp / "runs" / "orphan"
        _trials(run)
        (run / "study.journal").write_text("")
        return ["--name", "orphan"] + (["--resume"] if resume else [])
    return setup


def _no_tune_state(tmp: Path) -> list[str]:
    _trials(tmp / "runs" / "kept", 2)
    return ["--name", "kept", "--resume"]


def _fewer_trials(tmp: Path) -> list[str]:
    _trials(tmp / "runs" / "kept", 3)
    return ["--name", "kept", "--resume", "--trials", "2"]


def _tune_state(spoil: str) -> Callable[[Path], list[str]]:
    """The kept run with trials and Tune's state files, one of them spoilt: made writable by the
    group, or cut off."""
    def setup(tmp: Path) -> list[str]:
        run = tmp / "runs" / "kept"
        _trials(run)
        (run / "tuner.pkl").write_bytes(pickle.dumps({"plain": "state"}))
        state = run / "experiment_state-2026-01-01_00-00-00.json"
        state.write_text(json.dumps({"trial_data": [], "runner_data": {}}))
        if spoil == "group-writable":
            os.chmod(run / "tuner.pkl", 0o664)
        else:
            state.write_text('{"trial_data": [["cut off')
        return ["--name", "kept", "--resume"]
    return setup


def _lock(host: str, age: float) -> Callable[[Path], list[str]]:
    """The kept run's lock, held (not renewed for `age` s) by a driver on `host`."""
    def setup(tmp: Path) -> list[str]:
        import time

        (tmp / "runs" / ".kept.lock").write_text(json.dumps({"host": host, "pid": 4242, "since": "2026-01-01T00:00:00+00:00",
                                                             "token": "theirs", "command": "python -m search.run ..."}))
        os.utime(tmp / "runs" / ".kept.lock", (time.time() - age, time.time() - age))
        return ["--name", "kept", "--resume"]
    return setup


def _marked_storage(tmp: Path) -> list[str]:
    return ["--storage", str(tmp / "r[x]" / "a[/]b"), "--name", "ghost", "--resume"]


SYN = ["--data", "synthetic", "--data-size", "tiny"]
RESUME = ["--space", "gran_hbn", "--data", "synthetic"]
# every numeric flag: NaN, infinities, out of range, shares of a core or GPU too small to place
NUMERIC = {
    "seed below 0": (["--seed", "-1"], "--seed must be a whole number from 0 to 2^32-1"),
    "seed above 2^32-1": (["--seed", "4294967296"], "got 4294967296"),
    "cpus NaN": (["--cpus-per-trial", "nan"], "--cpus-per-trial must be a finite number"),
    "cpus inf": (["--cpus-per-trial", "inf"], "--cpus-per-trial must be a finite number"),
    "cpus a tiny fraction": (["--cpus-per-trial", "0.00001"], "from 0.01 (100 trials per core) up; got 1e-05"),
    "gpus NaN": (["--gpus-per-trial", "nan"], "--gpus-per-trial must be a finite number"),
    "gpus inf": (["--gpus-per-trial", "inf"], "--gpus-per-trial must be a finite number"),
    "gpus a tiny fraction": (["--gpus-per-trial", "0.001"], "a share of a GPU from 0.01"),
    "node timeout NaN": (["--node-timeout", "nan"], "--node-timeout must be a finite number"),
    "node timeout inf": (["--node-timeout", "inf"], "--node-timeout must be a finite number"),
    "node timeout negative": (["--node-timeout", "-1"], "--node-timeout must be a number of seconds from 0"),
    "retries negative": (["--retries", "-1"], "--retries must be a whole number from 0 to 10000"),
    "trials too many": (["--trials", "1000001"], "--trials must be a whole number from 1 to 1000000"),
    "workers too many": (["--workers-per-trial", "5000"], "--workers-per-trial must be a whole number from 1 to 4096"),
    "workers without the cores": (["--workers-per-trial", "4", "--cpus-per-trial", "0.02"],
                                  "is too little for 4 workers"),
}
CASES: dict[str, Case] = {
    "unknown space": Case(["--space", "nope"], "unknown space"),
    "unknown dataset": Case(["--space", "gran_hbn", "--data", "nope"], "unknown dataset"),
    "unknown budget": Case(["--space", "gran_hbn", *SYN, "--budget", "huge"], "its budgets: smoke, full"),
    "option of another space": Case(["--space", "gran_hbn", *SYN, "--objective", "latency"], "has no option --objective"),
    "bad option value": Case(["--space", "branchynet", *SYN, "--objective", "speed"], "not one of latency, flops, both"),
    "zero trials": Case(["--space", "gran_hbn", *SYN, "--trials", "0"], "--trials must be a whole number from 1 to 1000000; got 0"),
    "negative cpus": Case(["--space", "gran_hbn", *SYN, "--cpus-per-trial", "-1"], "--cpus-per-trial must be a number of cores from 0.01 (100 trials per core) up; got -1"),
    "bad run name": Case(["--space", "gran_hbn", *SYN, "--name", "a/b"], "run name"),
    "unknown scheduler (argparse)": Case(["--space", "gran_hbn", *SYN, "--scheduler", "pbt"], "invalid choice"),
    "resume without name": Case(["--space", "gran_hbn", *SYN, "--resume"], "--resume needs --name"),
    "resume of a run that does not exist": Case(["--space", "gran_hbn", *SYN, "--name", "ghost", "--resume"],
                                                "no run 'ghost' to resume"),
    "new run with a taken name": Case(["--space", "gran_hbn", *SYN, "--name", "kept"], "exists: pick another --name"),
    "multi-GPU trial without GPUs": Case(["--space", "gran_hbn", *SYN, "--gpus-per-trial", "2"], "has no GPU; use --gpus-per-trial 0"),
    "zero workers": Case(["--space", "gran_hbn", *SYN, "--workers-per-trial", "0"], "--workers-per-trial must be a whole number from 1 to 4096; got 0"),
    "workers sharing a GPU": Case(["--space", "gran_hbn", *SYN, "--workers-per-trial", "2", "--gpus-per-trial", "0.5"],
                                  "each worker of a multi-worker trial takes one whole GPU"),
    "storage is a file": Case(["--space", "gran_hbn", *SYN], "is a file, not a directory", setup=_file_storage),
    "storage URI not a bucket": Case(["--space", "gran_hbn", *SYN, "--storage", "ftp://host/runs"],
                                     "ftp:// is not a bucket the nodes can share"),
    "storage URI with an unknown option": Case(["--space", "gran_hbn", *SYN, "--storage", "s3://bucket/runs?colour=blue"],
                                               "cannot be opened"),
    "storage not writable": Case(["--space", "gran_hbn", *SYN, "--storage", "/proc/no/runs"], "is not writable"),
    "plugin module missing": Case(["--space", "gran_hbn", *SYN], "EXITSEARCH_SPACES",
                                  env={"EXITSEARCH_SPACES": "missing.module"}),
    "cluster that does not answer": Case(["--space", "gran_hbn", *SYN], "no Ray cluster answers", setup=_address),
    "missing dataset": Case(["--space", "gran_hbn", "--data", "cifar100", "--data-root", "/nonexistent/data"], "--download"),
    "truncated npz": Case(["--space", "gran_hbn", "--data-size", "tiny"], "cifar10-train.npz", setup=_truncated_npz),
    "labels out of range": Case(["--space", "gran_hbn", "--data-size", "tiny"], "labels",
                                setup=_npz(np.zeros((100, 32, 32, 3), np.uint8), np.arange(100) % 11)),
    "images of the wrong dtype": Case(["--space", "gran_hbn", "--data-size", "tiny"], "uint8",
                                      setup=_npz(np.zeros((100, 32, 32, 3), np.float32), np.arange(100) % 10)),
    "images of the wrong shape": Case(["--space", "gran_hbn", "--data-size", "tiny"], "32",
                                      setup=_npz(np.zeros((100, 28, 28), np.uint8), np.arange(100) % 10)),
    "truncated pickles": Case(["--space", "gran_hbn", "--data-size", "tiny"], "data_batch_1", setup=_truncated_pickle),
    "csv dataset without its path": Case(["--space", "gran_hbn", "--data", "csv"], "is named csv:PATH"),
    "csv with a label that is not a number": Case(["--space", "gran_hbn"], "label 'cat' of image '1.png' is not a whole number",
                                                  setup=_csv(["0.png,1,x\n", "1.png,cat,y\n"])),
    "csv naming images that are not there": Case(["--space", "gran_hbn"], "are not under",
                                                 setup=_csv([f"{i}.png,{i % 2}\n" for i in range(12)], images=10)),
    "transfer: a size bound that is not a number": Case(["--space", "transfer", *SYN, "--max-model-mb", "abc"],
                                                        "--max-model-mb 'abc': not a number"),
    "transfer: a size bound no backbone fits": Case(["--space", "transfer", *SYN, "--max-model-mb", "1"],
                                                    "no backbone of the transfer space is left to search"),
    "transfer: a frozen backbone without weights": Case(["--space", "transfer", *SYN, "--training", "frozen"],
                                                        "--training frozen trains with the backbone frozen, which needs "
                                                        "starting weights"),
    "transfer: a weights file that is not there": Case(["--space", "transfer", *SYN, "--weights", "/nonexistent/w.pt"],
                                                       "no weights file /nonexistent/w.pt; or train from scratch with --weights none"),
    "transfer: imagenet weights not in the hub cache": Case(["--space", "transfer", *SYN, "--weights", "imagenet"],
                                                            "not in the local torch hub cache",
                                                            env={"TORCH_HOME": "/nonexistent-torch-home"}),
    "transfer: weights that are not plain tensors": Case(["--space", "transfer", *SYN], "was not opened",
                                                         setup=_unsafe_weights),
    "multi-label csv for a single-label space": Case(["--space", "gran_hbn"], "the dataset is multi-label",
                                                     setup=_csv([f"{i}.png,{i % 3} {3 + i % 2}\n" for i in range(12)], images=12)),
    "corrupt results.parquet on resume": Case(["--space", "gran_hbn", "--data", "synthetic"], "results.parquet is corrupt",
                                              setup=_corrupt("results.parquet", b"PAR1 torn")),
    "corrupt study.journal on resume": Case(["--space", "gran_hbn", "--data", "synthetic"], "study.journal",
                                            setup=_corrupt("study.journal", b'{"op_code": 0, "worker_id": "x", "study_na\n{{{\n')),
    "corrupt spec.json on resume": Case(["--space", "gran_hbn", "--data", "synthetic"], "spec.json cannot be read",
                                        setup=_corrupt("spec.json", b"{not json")),
    # a resume may not change what fixes the run's trials (the kept run: gran_hbn, synthetic, tiny, seed 7)
    "resume changing the space": Case(["--space", "branchynet", "--data", "synthetic", "--name", "kept", "--resume"],
                                      "--space: the run has gran_hbn, this command gives branchynet"),
    "resume changing the seed": Case([*RESUME, "--name", "kept", "--resume", "--seed", "1"],
                                     "--seed: the run has 7, this command gives 1"),
    "resume changing the data size and the cores": Case(
        [*RESUME, "--name", "kept", "--resume", "--data-size", "smoke", "--cpus-per-trial", "2"],
        "--data-size: the run has tiny, this command gives smoke"),
    "resume asking fewer trials than started": Case(RESUME, "has already started 3 trials", setup=_fewer_trials),
    # a directory that holds a run's files but cannot be continued
    "new run over trials without spec.json": Case(RESUME, "holds trials, study.journal but no spec.json",
                                                  setup=_orphan(resume=False)),
    "resume of trials without spec.json": Case(RESUME, "holds trials, study.journal but no spec.json",
                                               setup=_orphan(resume=True)),
    "resume with Tune's state missing": Case(RESUME, "Tune's state is missing", setup=_no_tune_state),
    "resume with Tune's state writable by others": Case(RESUME, "writable by its group",
                                                        setup=_tune_state("group-writable")),
    "resume with Tune's state cut off": Case(RESUME, "experiment_state-2026-01-01_00-00-00.json do not read whole",
                                             setup=_tune_state("cut-off")),
    # one run, one driver: a lock renewed moments ago by a driver on another node
    "run held by a driver on another node": Case(RESUME, "in use: held by another driver: host othernode, pid 4242",
                                                 setup=_lock("othernode", 5)),
    # what the user typed is printed verbatim (never rich markup)
    "markup in a space name": Case(["--space", "gran[/]hbn[bold]"], "'gran[/]hbn[bold]'"),
    "markup in a storage path": Case(RESUME, "r[x]/a[/]b/ghost/spec.json is missing", setup=_marked_storage),
} | {f"numeric: {k}": Case(["--space", "gran_hbn", *SYN, *args], msg) for k, (args, msg) in NUMERIC.items()}
_NEEDS_NO_GPU = {"device cuda without a GPU": Case(["--space", "gran_hbn", *SYN, "--device", "cuda"], "no CUDA GPU"),
                 "GPU fraction without a GPU": Case(["--space", "gran_hbn", *SYN, "--gpus-per-trial", "0.3"],
                                                    "no trial can ever be placed"),
                 }
_CPUS = os.cpu_count() or 1
CASES |= {
    "more cores per trial than any node has": Case(["--space", "gran_hbn", *SYN, "--cpus-per-trial", str(_CPUS + 1)],
                                                   "no trial can ever be placed"),
}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if not _cuda():
    CASES |= _NEEDS_NO_GPU


def test_the_matrix_has_at_least_twenty_cases():
    assert len(CASES) >= 20


@dataclass
class Outcome:
    code: int
    out: str
    stderr: str
    changed: bool  # any file under the case's folder added, removed or changed
    dirs: list[str]  # what the storage holds afterwards
    dirs_before: list[str]  # what it held before (the kept run, and what the case's setup made)
    command: list[str] = field(default_factory=list)  # as the user typed it


def _run_case(name: str, tmp: Path) -> Outcome:
    case = CASES[name]
    storage = tmp / "runs"
    storage.mkdir(parents=True)
    _kept_run(storage)
    extra = case.setup(tmp) if case.setup else []
    args = [*case.args, *extra]
    if "--storage" not in args:
        args += ["--storage", str(storage)]
    before = _snapshot(tmp)
    dirs_before = sorted(q.name for q in storage.iterdir())
    p = subprocess.run([sys.executable, "-m", "search.run", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, **case.env})
    return Outcome(p.returncode, p.stdout + p.stderr, p.stderr, _snapshot(tmp) != before,
                   sorted(q.name for q in storage.iterdir()), dirs_before, ["python3", "-m", "search.run", *args])


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Every case, three subprocesses at a time (each is mostly Python start-up and imports)."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("bad_input")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_run_case, name, root / f"case{i}") for i, name in enumerate(CASES)}
        results = {name: f.result() for name, f in futures.items()}
    if os.environ.get("BAD_INPUT_TABLE"):  # the matrix as a table, for a release note
        with open(os.environ["BAD_INPUT_TABLE"], "w") as f:
            for name, o in results.items():
                first = next((line for line in o.stderr.splitlines() if line.startswith("error")), o.stderr.strip()[:200])
                f.write(json.dumps({"case": name, "command": shlex.join(o.command), "env": CASES[name].env,
                                    "exit": o.code, "message": first}) + "\n")
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, outcomes):
    case, o = CASES[name], outcomes[name]
    assert o.code == case.code, o.out
    assert case.message.lower() in " ".join(o.out.split()).lower(), o.out
    assert "Traceback" not in o.out, o.out
    assert not o.changed  # nothing written, nothing changed
    assert o.dirs == o.dirs_before and "kept" in o.dirs  # no run directory made


def test_help_works_even_with_a_broken_plugin():
    p = subprocess.run([sys.executable, "-m", "search.run", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "EXITSEARCH_SPACES": "missing.module"})
    assert p.returncode == 0 and "--space" in p.stdout, p.stderr
