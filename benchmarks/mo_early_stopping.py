"""Multi-objective early stopping, measured: FIFO (no stopping) vs ASHA on a weighted sum vs MOASHA, in one command.

    python3 -m benchmarks.mo_early_stopping [--quick] [--seeds 3] [--sim-trials 32] [--sim-budgets full] [--real-trials 8] [--no-real]
        [--rule-trials 32,64,128] [--rule-seeds 10]
        [--parts simulator,better_mistakes,sampler,rule_alone] [--data-root ../shared/data/cifar10]

1. `simulator`: the learning-curve simulator (benchmarks/learning_curves.py, budget `full`: 16 epochs
   of 0.1 s, rungs at 1, 2, 4, 8), through the real search path (`python3 -m search.run`, Ray Tune,
   two trials side by side), with `--scheduler fifo`, `asha_sum` (ASHA's promotion rule on the
   equal-weight sum of the objectives, each scaled to [0, 1] over its rung) and `moasha`, the same
   trials count and seed for each.
2. `better_mistakes`: a smoke run of a real space with three objectives (top-1 error, mistake
   severity, FLOPs; 4 epochs, rungs at 1 and 2) on synthetic data, the same three schedulers; with
   `--data-root DIR`, on real CIFAR-10 from DIR (the loader's class-balanced smoke subset: 5,000
   train / 1,000 calibration / 1,000 test images).
3. `sampler`: does telling TPE what the rungs taught help? The simulator again, one trial at a time
   in this process (no Tune), MOASHA (and, apart, the weighted-sum rule) deciding at every rung,
   with Optuna's TPESampler (stopped trials PRUNED, all alike) and with search/sampler.py's
   RungTPESampler (ranked by rung, then Pareto rank there): the final front's hypervolume after
   the same number of trials, and how many asks came while fewer trials had completed than TPE's
   good group holds (the only asks where the order of pruned trials can change what TPE learns).

Each run's progress is computed as the report computes it (reports/progress.py): the hypervolume
of the front of its complete trials' calibration points, against the epochs every trial trained
and the wall-clock time since the run started. Within a problem all runs share one reference
point: a tenth of each objective's range beyond its worst value among every run's complete trials.
It prints one JSON line per run (with, from the scheduler's rungs, how many trials went on by rank
and how many only because no earlier trial at their rung dominated them), then per seed the ratios of each scheduler to FIFO (final
hypervolume, epochs, wall time; the epochs each needed to reach 98% of FIFO's final hypervolume)
and MOASHA's hypervolume over asha_sum's at equal epochs (the fewer of the two spent), then the
means over seeds with the issue's targets: MOASHA within 2% of FIFO's final hypervolume using at
most 40% of its epochs, and above asha_sum at equal epochs.

4. `rule_alone`: the rules apart from Tune, timing and parallel trials: the simulator one trial at a
   time in this process, FIFO vs the weighted sum vs MOASHA (search/moasha.py deciding at every
   rung), with a random sampler (the same trials for every rule at a seed) and with TPE (told each
   complete trial's values, a stopped one as pruned), for each `--sim-budgets` budget and each of
   `--rule-trials` (default 32, 64, 128), `--rule-seeds` seeds (default 10): one line per setting
   with the means over seeds (hypervolume and epochs over FIFO's, MOASHA over the weighted sum at
   equal epochs, the bound below), the seeds meeting the target and the seeds where MOASHA is
   ahead. Seconds, not minutes: no trial sleeps.

For the simulator (one point per trial, two objectives) each seed also gets a bound from the FIFO
run's own trials, `oracle_epochs_over_fifo`: the epochs a rule that knew every trial's final
values would spend to keep 98% of FIFO's final hypervolume (the fewest trials that keep it, found
exactly, trained to the end; every other stopped at the first rung), over FIFO's epochs. Where it
is above the 40% target, no stopping rule keeps that front's hypervolume at that cost from those
trials. `--sim-budgets full,full-rf3,full-rf4` repeats the simulator at reduction factors 2, 3 and
4 (the same 16 epochs; rungs 1, 2, 4, 8 / 1, 3, 9 / 1, 4).

`--parts` picks which of the four run (default all; `--no-real` drops `better_mistakes`).
`--quick` runs every part small (one seed, the simulator's 8-epoch budget, better_mistakes on tiny
data), to check the command, not to measure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("fifo", "asha_sum", "moasha")
PARTS = ("simulator", "better_mistakes", "sampler", "rule_alone")
HV_TARGET, EPOCH_TARGET = 0.98, 0.40


def _print(obj: dict[str, Any]) -> None:
    def plain(v: Any) -> Any:
        if isinstance(v, (float, np.floating)):
            return round(float(v), 4)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return int(v) if isinstance(v, np.integer) else v

    print(json.dumps({k: plain(v) for k, v in obj.items()}), flush=True)


def _search(space_args: list[str], scheduler: str, seed: int, trials: int, storage: Path) -> Path:
    name = f"{scheduler}-{seed}"
    env = {**os.environ, "EXITSEARCH_SPACES": "benchmarks.learning_curves", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "search.run", *space_args, "--trials", str(trials), "--seed", str(seed),
           "--scheduler", scheduler, "--storage", str(storage), "--name", name, "--no-report"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"search failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return storage / name


def _complete_points(run_dir: Path) -> np.ndarray:
    from reports.progress import hypervolume_axes
    from reports.tables import load_run

    t = load_run(run_dir)
    names, _ = hypervolume_axes(t.declaration)
    r = t.results
    rows = r[r.status.eq("complete") & r.split.eq("calibration") & ~r.reference.eq(True)]
    return rows[list(names)].to_numpy(dtype=np.float64)


def _rung_decisions(run_dir: Path) -> dict[str, int]:
    """From the scheduler's rungs (arrival order): decisions taken, and how many trials went on only because
    no trial before them at their rung dominated them (not among the first ceil(n / rf) there)."""
    from search.moasha import STATE_FILE
    from search.rungs import as_minimisation, nondominated_ranks, rung_order

    path = run_dir / STATE_FILE
    if not path.exists():
        return {}
    state = json.loads(path.read_text())
    modes, rf = [m for _, m in state["objectives"]], float(state["reduction_factor"])
    decisions = by_rank = only_nondominated = 0
    for rung in state["rungs"].values():
        for i in range(len(rung)):
            pts = as_minimisation([v for _, v in rung[: i + 1]], modes)
            ranked = i in rung_order(pts, state["rule"])[: max(1, math.ceil((i + 1) / rf))].tolist()
            decisions += 1
            by_rank += ranked
            only_nondominated += int(not ranked and state["rule"] == "pareto" and nondominated_ranks(pts)[i] == 0)
    return {"rung_decisions": decisions, "went_on_by_rank": by_rank, "went_on_only_as_nondominated": only_nondominated}


def _measure(run_dir: Path, reference: np.ndarray) -> dict[str, Any]:
    from reports.progress import run_progress
    from reports.tables import load_run

    p = run_progress(load_run(run_dir), reference=reference)
    return {"hypervolume": float(p.hypervolume[-1]) if len(p.hypervolume) else 0.0, "epochs": p.total_epochs,
            "planned_epochs": p.planned_epochs, "wall_s": p.total_seconds, "complete": len(p.complete_trials),
            "stopped": len(p.stopped_trials), **_rung_decisions(run_dir), "_epochs": p.complete_epochs,
            "_hv": p.hypervolume}


def fewest_points_for(points: np.ndarray, reference: np.ndarray, fraction: float) -> int:
    """The fewest of `points` (two objectives, both minimised) whose front keeps `fraction` of the
    hypervolume of all of them against `reference`: exact, by dynamic programming over the front
    sorted on the first objective (a subset's hypervolume is a sum of rectangles, each from a chosen
    point to the next chosen one). 0 when the points dominate nothing."""
    from trainables.pareto import hypervolume, non_dominated_mask

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1) & (pts < reference).all(axis=1)]
    if not len(pts):
        return 0
    front = np.unique(pts[non_dominated_mask(pts, [False, False])], axis=0)
    front = front[np.argsort(front[:, 0], kind="stable")]
    total = hypervolume(front, reference, [False, False])
    f1, height = front[:, 0], reference[1] - front[:, 1]
    # best[i]: the largest hypervolume of c chosen points, the one with the smallest f1 being front[i]
    best = (reference[0] - f1) * height
    for c in range(1, len(front) + 1):
        if best.max() >= fraction * total - 1e-12 * total:
            return c
        nxt = np.full(len(front), -np.inf)
        for i in range(len(front) - 1):
            nxt[i] = np.max((f1[i + 1:] - f1[i]) * height[i] + best[i + 1:])
        best = nxt
    return len(front)


def oracle_epochs(run_dir: Path, reference: np.ndarray, fraction: float) -> float | None:
    """A bound from a FIFO run's own trials: the epochs a stopping rule that knew the final values
    would spend to keep `fraction` of the run's final hypervolume (the fewest trials that do it
    trained to the end, every other one to the first rung), over the run's epochs. None unless the
    run's trials each give one point on two objectives."""
    from reports.progress import hypervolume_axes
    from reports.tables import load_run

    spec = json.loads((run_dir / "spec.json").read_text())
    t = load_run(run_dir)
    names, _ = hypervolume_axes(t.declaration)
    r = t.results
    rows = r[r.status.eq("complete") & r.split.eq("calibration") & ~r.reference.eq(True)]  # as _complete_points
    if len(names) != 2 or rows.trial_id.duplicated().any():
        return None
    pts = rows[list(names)].to_numpy(dtype=np.float64)
    detail = spec["budget_detail"]
    max_t, grace, n = int(detail["epochs"]), int(detail.get("grace_period") or 1), len(pts)
    c = fewest_points_for(pts, reference, fraction)
    return (c * max_t + (n - c) * grace) / (n * max_t)


def _hv_at(m: dict[str, Any], epochs: float) -> float:
    """The run's front's hypervolume once `epochs` epochs had been spent."""
    i = int(np.searchsorted(m["_epochs"], epochs, side="right"))
    return float(m["_hv"][i - 1]) if i else 0.0


def _epochs_to(m: dict[str, Any], hv: float) -> float | None:
    """The epochs spent when the run's front first reached `hv` (None: never)."""
    hit = np.flatnonzero(m["_hv"] >= hv)
    return float(m["_epochs"][hit[0]]) if len(hit) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def compare(problem: str, space_args: list[str], seeds: list[int], trials: int) -> dict[str, Any]:
    """Every arm on every seed for one problem; prints the runs and the ratios; returns the means."""
    from reports.progress import hypervolume_axes, reference_beyond_worst
    from reports.tables import load_run

    with tempfile.TemporaryDirectory(prefix="mo-es-") as tmp:
        runs: dict[tuple[int, str], Path] = {}
        for seed in seeds:
            for arm in ARMS:
                t0 = time.perf_counter()
                runs[seed, arm] = _search(space_args, arm, seed, trials, Path(tmp))
                print(f"# {problem} seed {seed} {arm}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        decl = load_run(next(iter(runs.values()))).declaration
        names, _ = hypervolume_axes(decl)
        reference = reference_beyond_worst(np.concatenate([_complete_points(r) for r in runs.values()]), decl.maximize(names))
        measured = {k: _measure(r, reference) for k, r in runs.items()}
        oracles = {seed: oracle_epochs(runs[seed, "fifo"], reference, HV_TARGET) for seed in seeds}
    _print({"problem": problem, "hypervolume_of": list(names), "reference": reference.tolist(), "trials": trials,
            "seeds": seeds})
    per_seed = []
    for seed in seeds:
        fifo = measured[seed, "fifo"]
        for arm in ARMS:
            _print({"problem": problem, "seed": seed, "scheduler": arm,
                    **{k: v for k, v in measured[seed, arm].items() if not k.startswith("_")}})
        row: dict[str, Any] = {"problem": problem, "seed": seed}
        for arm in ARMS[1:]:
            m = measured[seed, arm]
            row[f"{arm}_hv_over_fifo"] = _ratio(m["hypervolume"], fifo["hypervolume"])
            row[f"{arm}_epochs_over_fifo"] = _ratio(m["epochs"], fifo["epochs"])
            row[f"{arm}_wall_over_fifo"] = _ratio(m["wall_s"], fifo["wall_s"])
        for arm in ARMS:
            row[f"{arm}_epochs_to_98pct_of_fifo_hv_over_fifo_epochs"] = _ratio(
                _epochs_to(measured[seed, arm], HV_TARGET * fifo["hypervolume"]), fifo["epochs"])
        row["oracle_epochs_over_fifo"] = oracles[seed]
        mo, ws = measured[seed, "moasha"], measured[seed, "asha_sum"]
        equal = min(mo["epochs"], ws["epochs"])
        row["equal_epochs"] = equal
        row["moasha_over_asha_sum_hv_at_equal_epochs"] = _ratio(_hv_at(mo, equal), _hv_at(ws, equal))
        _print(row)
        per_seed.append(row)

    def mean(key: str) -> float | None:
        vals = [r[key] for r in per_seed if r[key] is not None]
        return statistics.fmean(vals) if vals else None

    keys = [k for k in per_seed[0] if k not in ("problem", "seed", "equal_epochs")]
    summary = {"problem": problem, "seeds": len(seeds), **{f"mean_{k}": mean(k) for k in keys}}
    summary["seeds_meeting_target"] = sum(1 for r in per_seed if (r["moasha_hv_over_fifo"] or 0) >= HV_TARGET
                                          and (r["moasha_epochs_over_fifo"] or math.inf) <= EPOCH_TARGET)
    summary["seeds_moasha_beats_asha_sum_at_equal_epochs"] = sum(
        1 for r in per_seed if (r["moasha_over_asha_sum_hv_at_equal_epochs"] or 0) > 1.0)
    _print(summary)
    return summary


def sampler_ablation(seeds: list[int], trials: int, budget_name: str) -> list[dict[str, Any]]:
    """The simulator one trial at a time, MOASHA (and the weighted-sum rule) deciding at every rung, with
    Optuna's TPE and with RungTPESampler: the final front's hypervolume after the same trials."""
    import optuna

    from benchmarks.learning_curves import BUDGETS, define, values_at
    from reports.progress import reference_beyond_worst
    from search.moasha import MOASHA
    from search.prepare import trial_seed
    from search.sampler import RUNG_EPOCH, RUNG_VALUES, RungTPESampler
    from trainables.pareto import hypervolume

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = BUDGETS[budget_name]
    samplers = (("tpe", optuna.samplers.TPESampler), ("rung_tpe", RungTPESampler))
    finals: dict[tuple[str, int, str], list[np.ndarray]] = {}
    asks: dict[tuple[str, int, str], int] = {}
    for rule in ("pareto", "weighted_sum"):
        for seed in seeds:
            for name, cls in samplers:
                study = optuna.create_study(directions=["minimize", "minimize"],
                                            sampler=cls(seed=seed, multivariate=True, constant_liar=True))
                sched = MOASHA({"f1": "min", "f2": "min"}, budget.epochs, rule=rule)
                out, matters = [], 0
                for k in range(trials):
                    # the rung order can change what TPE learns only while fewer trials completed than its good
                    # group holds (ceil(0.1 n) of the n complete or pruned ones): pruned trials fill the rest of it
                    if k >= 10 and len(out) < math.ceil(0.1 * k):
                        matters += 1
                    t = study.ask()
                    define(t, budget)
                    tid, s = f"{seed}-{k}", trial_seed(seed, f"{seed}-{k}")
                    for epoch in range(1, budget.epochs + 1):
                        values = values_at(t.params, s, epoch)
                        if epoch < budget.epochs and sched.decide(tid, epoch, values.tolist()) == "STOP":
                            t.set_user_attr(RUNG_EPOCH, epoch)
                            t.set_user_attr(RUNG_VALUES, values.tolist())
                            study.tell(t, None, state=optuna.trial.TrialState.PRUNED)
                            break
                    else:
                        study.tell(t, values.tolist())
                        out.append(values)
                finals[rule, seed, name], asks[rule, seed, name] = out, matters
    reference = reference_beyond_worst(np.concatenate([np.array(v) for v in finals.values() if v]), [False, False])
    summaries = []
    for rule in ("pareto", "weighted_sum"):
        ratios = []
        for seed in seeds:
            hv = {name: hypervolume(np.array(finals[rule, seed, name]).reshape(-1, 2), reference, [False, False])
                  for name, _ in samplers}
            row: dict[str, Any] = {"problem": "sampler", "rule": rule, "seed": seed, "trials": trials}
            for name, _ in samplers:
                row |= {f"hv_{name}": hv[name], f"complete_{name}": len(finals[rule, seed, name]),
                        f"asks_where_order_can_matter_{name}": asks[rule, seed, name]}
            row["rung_tpe_hv_over_tpe"] = _ratio(hv["rung_tpe"], hv["tpe"])
            _print(row)
            if row["rung_tpe_hv_over_tpe"] is not None:
                ratios.append(row["rung_tpe_hv_over_tpe"])
        summary = {"problem": "sampler", "rule": rule, "seeds": len(seeds), "trials": trials,
                   "mean_rung_tpe_hv_over_tpe": statistics.fmean(ratios) if ratios else None,
                   "seeds_rung_tpe_better": sum(1 for r in ratios if r > 1.0),
                   "seeds_rung_tpe_worse": sum(1 for r in ratios if r < 1.0)}
        _print(summary)
        summaries.append(summary)
    return summaries


def _one_at_a_time(seed: int, trials: int, budget, rule: str | None,
                   sampler: str) -> tuple[list[np.ndarray], list[int], int]:
    """A search of `trials` simulator trials one at a time in this process: `rule` None trains every trial
    to the end (FIFO), else MOASHA's scheduler (search/moasha.py) decides at every rung under that rule.
    `sampler` proposes the trials: `random` (the same trials for every rule at a seed) or `tpe` (Optuna's
    TPE, told each complete trial's final values and a stopped one as pruned). Returns the complete
    trials' final values in the order they completed, the epochs spent when each completed, and the epochs
    spent in all."""
    import optuna

    from benchmarks.learning_curves import define, values_at
    from search.moasha import MOASHA
    from search.prepare import trial_seed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    smp = optuna.samplers.RandomSampler(seed=seed) if sampler == "random" else \
        optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=smp)
    sched = MOASHA({"f1": "min", "f2": "min"}, budget.epochs, grace_period=budget.grace_period,
                   reduction_factor=budget.reduction_factor, rule=rule or "pareto")
    finals, at, spent = [], [], 0
    for k in range(trials):
        t = study.ask()
        define(t, budget)
        tid, s = f"{seed}-{k}", trial_seed(seed, f"{seed}-{k}")
        for epoch in range(1, budget.epochs + 1):
            spent += 1
            values = values_at(t.params, s, epoch)
            if rule and epoch < budget.epochs and sched.decide(tid, epoch, values.tolist()) == "STOP":
                study.tell(t, None, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(t, values.tolist())
            finals.append(values)
            at.append(spent)
    return finals, at, spent


def rule_alone(seeds: list[int], trial_counts: list[int], budget_names: list[str],
               samplers: tuple[str, ...] = ("random", "tpe")) -> list[dict[str, Any]]:
    """The stopping rules apart from Tune and from timing: the simulator one trial at a time (`_one_at_a_time`),
    FIFO, the weighted sum and MOASHA, for each sampler, budget (reduction factor) and trial count; per
    setting the means over seeds of each rule's final hypervolume and epochs over FIFO's, how many seeds
    meet the issue's target, MOASHA over the weighted sum at equal epochs, and the bound from FIFO's trials."""
    from benchmarks.learning_curves import BUDGETS
    from reports.progress import reference_beyond_worst
    from trainables.pareto import hypervolume

    out = []
    for sampler in samplers:
        for name in budget_names:
            budget = BUDGETS[name]
            for trials in trial_counts:
                per_seed = []
                for seed in seeds:
                    runs = {arm: _one_at_a_time(seed, trials, budget, rule, sampler)
                            for arm, rule in (("fifo", None), ("asha_sum", "weighted_sum"), ("moasha", "pareto"))}
                    ref = reference_beyond_worst(np.concatenate([np.array(f).reshape(-1, 2) for f, _, _ in runs.values()]),
                                                 [False, False])
                    curve = {arm: {"_epochs": np.array(at, dtype=np.float64),
                                   "_hv": np.array([hypervolume(np.array(f[: i + 1]), ref, [False, False])
                                                    for i in range(len(f))])} for arm, (f, at, _) in runs.items()}
                    hv = {arm: float(c["_hv"][-1]) if len(c["_hv"]) else 0.0 for arm, c in curve.items()}
                    spent = {arm: r[2] for arm, r in runs.items()}
                    fifo_epochs = spent["fifo"]
                    row = {}
                    for arm in ("asha_sum", "moasha"):
                        row[f"{arm}_hv"], row[f"{arm}_epochs"] = hv[arm] / hv["fifo"], spent[arm] / fifo_epochs
                    equal = min(spent["asha_sum"], spent["moasha"])
                    row["moasha_over_asha_sum_at_equal_epochs"] = _ratio(_hv_at(curve["moasha"], equal),
                                                                         _hv_at(curve["asha_sum"], equal))
                    c = fewest_points_for(np.array(runs["fifo"][0]), ref, HV_TARGET)
                    row["oracle_epochs"] = (c * budget.epochs + (trials - c) * budget.grace_period) / fifo_epochs
                    per_seed.append(row)

                def mean(key: str) -> float:
                    return statistics.fmean(r[key] for r in per_seed if r[key] is not None)

                line = {"problem": "rule_alone", "sampler": sampler, "budget": name,
                        "reduction_factor": budget.reduction_factor, "trials": trials, "seeds": len(seeds),
                        **{f"mean_{k}": mean(k) for k in per_seed[0]},
                        "min_moasha_hv": min(r["moasha_hv"] for r in per_seed),
                        "max_moasha_epochs": max(r["moasha_epochs"] for r in per_seed),
                        "seeds_meeting_target": sum(1 for r in per_seed if r["moasha_hv"] >= HV_TARGET
                                                    and r["moasha_epochs"] <= EPOCH_TARGET),
                        "seeds_moasha_beats_asha_sum_at_equal_epochs": sum(
                            1 for r in per_seed if (r["moasha_over_asha_sum_at_equal_epochs"] or 0) > 1.0)}
                _print(line)
                out.append(line)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.mo_early_stopping", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every part small: checks the command, measures nothing")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per problem (default 3; --quick 1)")
    ap.add_argument("--sim-trials", type=int, default=None, help="trials of each simulator run (default 32; --quick 12)")
    ap.add_argument("--sim-budgets", default=None,
                    help="the simulator's budgets, comma-separated (default full: reduction factor 2; full-rf3 and "
                         "full-rf4: 3 and 4, the same 16 epochs)")
    ap.add_argument("--real-trials", type=int, default=None, help="trials of each better_mistakes run (default 8; --quick 3)")
    ap.add_argument("--ablation-seeds", type=int, default=None, help="seeds of the sampler ablation (default 10; --quick 2)")
    ap.add_argument("--rule-trials", default=None,
                    help="trial counts of the rule_alone part, comma-separated (default 32,64,128; --quick 12)")
    ap.add_argument("--rule-seeds", type=int, default=None, help="seeds of the rule_alone part (default 10; --quick 2)")
    ap.add_argument("--no-real", action="store_true", help="skip the better_mistakes part")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts to run (default {','.join(PARTS)})")
    ap.add_argument("--data-root", default=None, help="run the better_mistakes part on real CIFAR-10 from this directory "
                                                       "(its smoke subset) instead of synthetic data")
    args = ap.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        ap.error(f"--parts {args.parts!r}: {', '.join(unknown) or 'nothing'} is not a part; choose from {', '.join(PARTS)}")
    if args.no_real:
        parts = [x for x in parts if x != "better_mistakes"]
    if args.data_root is not None and not Path(args.data_root).is_dir():
        ap.error(f"--data-root {args.data_root!r} is not a directory; give the folder holding the CIFAR-10 files")
    q = args.quick
    seeds = list(range(args.seeds if args.seeds is not None else (1 if q else 3)))
    sim_trials = args.sim_trials or (12 if q else 32)
    real_trials = args.real_trials or (3 if q else 8)
    budget = "smoke" if q else "full"
    from benchmarks.learning_curves import BUDGETS

    sim_budgets = [b.strip() for b in (args.sim_budgets or budget).split(",") if b.strip()]
    if not sim_budgets or set(sim_budgets) - set(BUDGETS):
        ap.error(f"--sim-budgets {args.sim_budgets!r}: choose from {', '.join(BUDGETS)}")
    if "simulator" in parts:
        for b in sim_budgets:
            compare("simulator" if b in ("full", "smoke") else f"simulator_{b}",
                    ["--space", "simulated_curves", "--data", "synthetic", "--budget", b], seeds, sim_trials)
    if "better_mistakes" in parts:
        data = ["--data", "synthetic"] if args.data_root is None else \
            ["--data", "cifar10", "--data-root", str(Path(args.data_root).resolve())]
        compare("better_mistakes" if args.data_root is None else "better_mistakes_cifar10",
                ["--space", "better_mistakes", *data, "--budget", "smoke", "--data-size", "tiny" if q else "smoke"],
                seeds, real_trials)
    if "sampler" in parts:
        sampler_ablation(list(range(args.ablation_seeds or (2 if q else 10))), 20 if q else 48, budget)
    if "rule_alone" in parts:
        try:
            counts = [int(x) for x in args.rule_trials.split(",")] if args.rule_trials else ([12] if q else [32, 64, 128])
        except ValueError:
            counts = []
        if not counts or min(counts) < 1:
            ap.error(f"--rule-trials {args.rule_trials!r}: give trial counts above 0, comma-separated (e.g. 32,64)")
        rule_alone(list(range(args.rule_seeds or (2 if q else 10))), counts, sim_budgets)


if __name__ == "__main__":
    main()
