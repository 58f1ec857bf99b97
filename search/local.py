"""A plain Optuna loop over a space, without Ray: the same define-by-run function, trained and
recorded exactly as under Tune (trial directories, failures, results tables).

For tests, debugging a space, and machines where starting Ray is not worth it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search.atomic import write_json
from search.collect import collect, write_tables
from search.spec import RunSpec
from search.tuner import record_failure, reference_flops, trial_seed
from spaces import get_space

__all__ = ["run_local"]


def run_local(spec: RunSpec) -> Path:
    import optuna

    from trainables.loop import LocalReporter, TrialContext

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(spec.space)
    budget = space.budget(spec.budget)
    run_dir = spec.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    ref = reference_flops(space, spec)
    spec_doc: dict[str, Any] = {**spec.to_dict(), "run": spec.name, "dataset": spec.data,
                                "objectives": space.objectives, "point_objectives": space.point_objectives,
                                "reference_flops": ref, "runner": "local optuna loop"}
    from search.provenance import collect as provenance

    spec_doc["provenance"] = provenance()
    write_json(run_dir / "spec.json", spec_doc)
    directions = ["maximize" if d == "max" else "minimize" for d in space.objectives.values()]
    study = optuna.create_study(directions=directions, sampler=optuna.samplers.TPESampler(seed=spec.seed))
    define = space.search_space(budget)
    info: dict[str, dict[str, Any]] = {}
    for _ in range(spec.trials):
        trial = study.ask()
        config = {**trial.params}
        config.update(define(trial) or {})
        config.update(trial.params)
        tid = f"local_{trial.number:05d}"
        info[tid] = {"number": trial.number}
        tdir = run_dir / "trials" / tid
        ctx = TrialContext(
            trial_dir=str(tdir), reporter=LocalReporter(tdir), data=spec.data, data_root=spec.data_root,
            data_size=spec.data_size or budget.data_size, download=spec.download, epochs=budget.epochs,
            seed=trial_seed(spec.seed, tid), data_seed=spec.seed, device=spec.device, reference_flops=ref,
            cpu_threads=max(1, int(spec.cpus_per_trial)), calibration=budget.calibration, trial_id=tid,
        )
        try:
            metrics = space.trainable(config, ctx)
        except Exception as exc:
            record_failure(tdir, config, exc)
            study.tell(trial, None, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, [metrics[m] for m in space.objectives])
        results, curves = collect(run_dir, spec_doc, info, space.point_objectives)
        write_tables(run_dir, results, curves)
    (run_dir / "study.json").write_text(json.dumps([{"number": t.number, "state": t.state.name, "values": t.values,
                                                    "params": t.params} for t in study.trials], default=str))
    return run_dir
