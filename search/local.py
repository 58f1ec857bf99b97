"""A plain Optuna loop over a space, without Ray: the same define-by-run function, trained and
recorded exactly as under Tune (trial directories, failures, results tables).

For tests, debugging a space, and machines where starting Ray is not worth it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search.collect import collect, write_tables
from search.prepare import record_failure, reference_costs, run_document, trial_context
from search.spec import RunSpec
from spaces import get_space
from trainables.atomic import write_json
from trainables.contract import Declaration
from trainables.storage import is_uri

__all__ = ["run_local"]


def run_local(spec: RunSpec) -> Path:
    import optuna

    from trainables.engine.loop import LocalReporter

    if spec.workers > 1:
        raise ValueError(f"workers_per_trial={spec.workers}: multi-worker trials run on Ray Train; use search.run "
                         "(search.tuner.run_search), or 1 worker in the plain loop")
    if is_uri(spec.storage):
        raise ValueError(f"storage {spec.storage}: the plain loop writes to a directory; a bucket run is search.run's "
                         "(search.tuner.run_search)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(spec.space)
    budget = space.budget(spec.budget)
    options = space.resolve_options(spec.options)
    references = reference_costs(space, spec)
    doc = run_document(space, spec, references, runner="local optuna loop")
    decl = Declaration.from_dict(doc["declaration"])
    run_dir = spec.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "spec.json", doc)
    directions = ["maximize" if d == "max" else "minimize" for d in decl.objectives.values()]
    study = optuna.create_study(directions=directions, sampler=optuna.samplers.TPESampler(seed=spec.seed))
    define = space.search_space(budget, options)
    info: dict[str, dict[str, Any]] = {}
    for _ in range(spec.trials):
        trial = study.ask()
        constants = define(trial) or {}  # the searched values exist only once define has run
        config = {**trial.params, **constants}
        tid = f"local_{trial.number:05d}"
        info[tid] = {"number": trial.number}
        ctx = trial_context(space, spec, tid, LocalReporter(run_dir / "trials" / tid), references)
        try:
            metrics = space.train(config, ctx, budget, options)
        except Exception as exc:
            record_failure(Path(ctx.trial_dir), config, exc)
            study.tell(trial, None, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, [metrics[m] for m in decl.objectives])
        write_tables(run_dir, *collect(run_dir, doc, decl, info))
    (run_dir / "study.json").write_text(json.dumps([{"number": t.number, "state": t.state.name, "values": t.values,
                                                    "params": t.params} for t in study.trials], default=str))
    return run_dir
