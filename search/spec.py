"""The frozen spec of a run: everything `search.run` was asked to do, stored beside its results."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from search.schedulers import list_schedulers
from trainables.storage import is_uri, join_uri, mirror_dir, scratch_dir

__all__ = ["RunSpec", "check_numbers", "default_run_name"]

DRIVER_CPU = 0.01  # a multi-worker trial's own share of its CPUs: it only waits on its workers (search/distributed.py)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

#: every numeric flag of a run: (flag, whole number?, smallest, largest, what the range is for). A share of a
#: CPU or GPU below 1/100 is refused: Ray keeps resources in units of 1/10000, and 100 trials on one core (or
#: GPU) is already more processes than it can hold; a fraction that rounds to nothing would place trials
#: without end.
NUMBERS: dict[str, tuple[str, bool, float, float, str]] = {
    "trials": ("--trials", True, 1, 1_000_000, "a whole number from 1 to 1000000"),
    "seed": ("--seed", True, 0, 2**32 - 1, "a whole number from 0 to 2^32-1 = 4294967295 (the seeds numpy and Optuna accept)"),
    "cpus_per_trial": ("--cpus-per-trial", False, 0.01, 1_000_000, "a number of cores from 0.01 (100 trials per core) up"),
    "gpus_per_trial": ("--gpus-per-trial", False, 0.0, 1_000_000, "0 (train on the CPU), or a share of a GPU from 0.01 "
                       "(100 trials per GPU) up"),
    "workers_per_trial": ("--workers-per-trial", True, 1, 4096, "a whole number from 1 to 4096"),
    "node_timeout": ("--node-timeout", False, 0.0, 30 * 86400, "a number of seconds from 0 to 2592000 (30 days)"),
    "retries": ("--retries", True, 0, 10_000, "a whole number from 0 to 10000"),
}


def _shown(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e18 else f"{value:g}"


def check_numbers(values: dict[str, Any]) -> None:
    """Every numeric value of `values` (field name -> number; None is left to its default) finite,
    whole where it counts something, and in its range; ValueError naming the flag otherwise."""
    for key, value in values.items():
        if key not in NUMBERS or value is None:
            continue
        flag, whole, low, high, wants = NUMBERS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{flag} must be {wants}, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number: {wants}; got {value}")
        if (whole and value != int(value)) or not low <= value <= high or (key == "gpus_per_trial" and 0 < value < 0.01):
            raise ValueError(f"{flag} must be {wants}; got {_shown(value)}")


def default_run_name(space: str) -> str:
    return f"{space}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class RunSpec:
    space: str
    data: str  # dataset name
    name: str  # run name: the run directory's name under `storage`
    storage: str  # absolute directory (or shared filesystem path) holding run directories, or a bucket URI
    budget: str = "smoke"
    data_size: str | None = None  # None: the budget's; else "tiny" | "smoke" | "full"
    trials: int = 4
    seed: int = 0
    data_root: str | None = None
    download: bool = False
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    workers_per_trial: int = 1  # > 1: a data-parallel trial (Ray Train TorchTrainer inside the Tune trial)
    address: str | None = None  # None: start Ray locally in-process
    node_timeout: float = 300.0  # on a cluster: seconds to wait for a node that can hold a trial (autoscaling)
    resume: bool = False
    scheduler: str = "fifo"  # a name of search/schedulers.py's registry ("fifo", "asha", ...)
    retries: int = 1  # times Tune restarts a crashed trial from its last checkpoint
    device: str = "auto"
    report: bool = True
    reuse_actors: bool = True  # Tune runs trials in reused worker processes
    options: dict[str, str] = field(default_factory=dict)  # the space's own run options, e.g. {"objective": "latency"}
    # how the default --gpus-per-trial was chosen (search/packing.py); None when it was given or there is no GPU
    packing: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"run name {self.name!r}: use letters, digits, '_', '.', '-' (at most 100)")
        check_numbers({k: getattr(self, k) for k in NUMBERS})
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise ValueError("--gpus-per-trial above 1 must be a whole number")
        if self.gpus_per_trial and self.workers_per_trial > 1 and self.gpus_per_trial != self.workers_per_trial:
            raise ValueError(f"--workers-per-trial {self.workers_per_trial} with --gpus-per-trial {self.gpus_per_trial:g}: "
                             "each worker of a multi-worker trial takes one whole GPU, so give both the same N "
                             "(or --gpus-per-trial 0 for CPU workers)")
        if self.gpus_per_trial > 1 and self.workers_per_trial == 1:
            raise ValueError(f"--gpus-per-trial {self.gpus_per_trial:g} needs --workers-per-trial {self.gpus_per_trial:g} "
                             "(one worker per GPU; leaving --workers-per-trial out sets it)")
        if self.workers_per_trial > 1 and (self.cpus_per_trial - DRIVER_CPU) / self.workers_per_trial < 0.01:
            raise ValueError(f"--cpus-per-trial {self.cpus_per_trial:g} is too little for {self.workers_per_trial} workers: "
                             f"each gets (cores - {DRIVER_CPU:g} for the trial's driver) / workers, and needs at least 0.01; "
                             f"give --cpus-per-trial {DRIVER_CPU + 0.01 * self.workers_per_trial:g} or more")
        if self.scheduler not in list_schedulers():
            raise ValueError(f"--scheduler must be one of {', '.join(list_schedulers())}, got {self.scheduler!r}")

    @property
    def workers(self) -> int:
        return int(self.workers_per_trial)

    @property
    def run_dir(self) -> Path:
        """The run directory this process reads and writes: for a bucket run, the driver's local
        mirror of it (trainables/storage.py)."""
        if is_uri(self.storage):
            return mirror_dir(self.storage, self.name)
        return Path(self.storage) / self.name

    def location(self, *parts: str) -> str:
        """Where Ray keeps its own state of this run (Tune's, Ray Train's): the run directory, or
        its place in the bucket."""
        if is_uri(self.storage):
            return join_uri(self.storage, self.name, *parts)
        return str(Path(self.storage, self.name, *parts))

    def trial_dir(self, trial_id: str) -> Path:
        """Where a trial writes its files: RUN/trials/ID, or for a bucket run a scratch directory
        on the trial's node that it pushes to the bucket."""
        if is_uri(self.storage):
            return scratch_dir(self.storage, self.name, trial_id)
        return self.run_dir / "trials" / trial_id

    def resume_command(self) -> str:
        """The command that continues this run: its space, storage (resolved from what the user
        gave, so that it works from any directory) and name; a resume takes every other value from
        the run's spec.json (search/resume.py)."""
        import shlex

        return "python -m search.run " + shlex.join(["--space", self.space, "--storage", self.storage, "--name", self.name,
                                                     "--resume"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})
