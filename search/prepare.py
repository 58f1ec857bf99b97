"""What a run and its trials start from, built once for every runner (Ray Tune or the plain loop).

* `reference_costs`: the cost normalisers (FLOPs of the space's largest network on this dataset);
* `load_reference_data`: the dataset, loaded once for whoever needs it before the run starts
  (search/packing.py measures a trial's memory with it) and handed to `reference_costs`;
* `run_document`: the frozen spec stored as spec.json: arguments, the space's declaration (which
  fixes the results schema and the report), references, budget, provenance;
* `trial_context`: the infrastructure of one trial (its directory, data, device, seed);
* `trial_seed`, `numbered_trial_seed`, `record_failure`: a trial's seed, and its failure written into its status.
"""

from __future__ import annotations

import json
import traceback
import zlib
from pathlib import Path
from typing import Any

from search.spec import RunSpec
from spaces import Space
from trainables.atomic import write_json

__all__ = ["load_reference_data", "numbered_trial_seed", "record_failure", "reference_costs", "run_document", "trial_context",
           "trial_seed"]

_HANDOVER: dict[tuple, Any] = {}  # at most one dataset, loaded before reference_costs and taken by it


def trial_seed(run_seed: int, trial_id: str) -> int:
    """A per-trial seed derived from the run's seed: reproducible, distinct across trials."""
    return (int(run_seed) * 1_000_003 + zlib.crc32(trial_id.encode())) % 2**31


def numbered_trial_seed(run_seed: int, number: int) -> int:
    """The seed of the study's trial `number`: the same in every run of the same command (Tune's
    trial ids are random, so a seed derived from them differs from run to run)."""
    return trial_seed(run_seed, f"trial_{int(number):05d}")


def data_size(space: Space, spec: RunSpec) -> str:
    return spec.data_size or space.budget(spec.budget).data_size


def _data_key(data: str, data_root: str | None, seed: int, download: bool, size: str) -> tuple:
    return (data, data_root, int(seed), bool(download), size)


def load_reference_data(space: Space, spec: RunSpec | Any):
    """The run's dataset (`spec` may be a RunSpec or anything with its data, data_root, seed,
    download, data_size and budget), kept for the next `reference_costs` of the same data so
    that it is read once."""
    from trainables.data import get_dataset

    size = data_size(space, spec)
    key = _data_key(spec.data, spec.data_root, spec.seed, spec.download, size)
    if key not in _HANDOVER:
        _HANDOVER.clear()
        _HANDOVER[key] = get_dataset(spec.data, spec.data_root, seed=spec.seed, download=spec.download, size=size)
    return _HANDOVER[key]


def reference_costs(space: Space, spec: RunSpec) -> dict[str, float]:
    """FLOPs of the space's largest network on this dataset's images (the cost normaliser).
    Loading the dataset here also fails fast, before any trial starts, when it is missing or
    when the family cannot use it. A dataset `load_reference_data` already loaded is taken
    (and no longer kept)."""
    from trainables.engine.cost import exit_flops
    from trainables.engine.family import DataInfo

    budget = space.budget(spec.budget)
    ds = load_reference_data(space, spec)
    _HANDOVER.clear()
    data = DataInfo.of(ds)
    family = space.family(budget, space.resolve_options(spec.options))
    family.check_data(data)  # UnsuitableData before any trial starts
    family.fetch(spec.download)  # and what its options name beyond the dataset (e.g. pretrained weights)
    best = 0.0
    for cfg in space.largest_configs(budget):
        net = family.build_model(cfg, data)
        best = max(best, float(exit_flops(net, data.channels, family.input_size(cfg, data))[-1]))
    return {"flops": best}


def run_document(space: Space, spec: RunSpec, references: dict[str, float], runner: str) -> dict[str, Any]:
    from search.provenance import collect as provenance

    budget = space.budget(spec.budget)
    options = space.resolve_options(spec.options)
    return {
        **spec.to_dict(),
        "options": options,
        "run": spec.name,
        "dataset": spec.data,
        "runner": runner,
        "declaration": space.declaration(budget, options).to_dict(),
        "references": references,
        "budget_detail": {"epochs": budget.epochs, "data_size": data_size(space, spec), "calibration": budget.calibration,
                          "grace_period": budget.grace_period, "reduction_factor": budget.reduction_factor},
        "provenance": provenance(),
    }


def trial_context(space: Space, spec: RunSpec, trial_id: str, reporter: Any, references: dict[str, float]):
    from trainables.engine.loop import TrialContext

    budget = space.budget(spec.budget)
    return TrialContext(
        trial_dir=str(spec.trial_dir(trial_id)),
        reporter=reporter,
        data=spec.data,
        data_root=spec.data_root,
        data_size=data_size(space, spec),
        download=spec.download,
        epochs=budget.epochs,
        seed=trial_seed(spec.seed, trial_id),
        data_seed=spec.seed,
        device=spec.device,
        references=dict(references),
        cpu_threads=max(1, int(spec.cpus_per_trial)),
        trial_id=trial_id,
    )


def record_failure(trial_dir: Path, config: dict[str, Any], exc: BaseException) -> None:
    """Write the failure's reason into the trial's status, keeping what it had written."""
    path = Path(trial_dir) / "status.json"
    try:
        status = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        status = {"config": config}
    status["status"] = "failed"
    status["error"] = f"{type(exc).__name__}: {exc}"
    status["traceback"] = "".join(traceback.format_exception(exc))[-4000:]
    write_json(path, status)
