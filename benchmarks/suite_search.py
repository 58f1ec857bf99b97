"""The suite's search figures: a whole search, and packing trials onto a GPU against one per GPU.

Both run `python -m search.run` as a user does (a subprocess) and read what the run wrote:
`results.parquet` (configs, seeds, points) and each trial's `status.json` and `curves.json`
(when it started and ended, how long its epochs took).

- whole search: the wall time of an N-trial search at a stated budget with the platform's
  default packing, against its trials' training epochs alone (their summed `epoch_seconds`),
  with the time split into start-up (command start to the first trial's start record), the
  trials, and wrap-up (the last trial's end to the command's end);
- packing: the same command with one trial per GPU (`--gpus-per-trial 1`): trials per hour of
  each, and the hypervolume each reaches, over the same trials (the study's trial numbers give
  the same configs and seeds: search/tuner.py). On a machine without a GPU the stand-in is trials
  side by side on the cores (`--cpus-per-trial 1`, the default) against one at a time on all of
  them, and the figure says so.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["packing_figure", "run_search", "run_summary", "search_command", "whole_search_figure"]


def search_command(space: str, data: str, data_root: str | None, data_size: str | None, trials: int, storage: Path,
                   name: str, cpus_per_trial: float, gpus_per_trial: float | None, report: bool = True) -> list[str]:
    cmd = [sys.executable, "-m", "search.run", "--space", space, "--data", data, "--budget", "smoke",
           "--trials", str(trials), "--seed", "0", "--storage", str(storage), "--name", name,
           "--cpus-per-trial", f"{cpus_per_trial:g}"]
    if data_root:
        cmd += ["--data-root", data_root]
    if data_size:
        cmd += ["--data-size", data_size]
    if gpus_per_trial is not None:
        cmd += ["--gpus-per-trial", f"{gpus_per_trial:g}"]
    if not report:
        cmd.append("--no-report")
    return cmd


def run_search(cmd: list[str], env_extra: dict[str, str] | None = None, timeout: float | None = None) -> dict[str, Any]:
    """Run a search command; returns its wall time and when it started and ended (UTC). A search
    that runs past `timeout` is stopped as Ctrl-C stops it (SIGINT), then killed."""
    env = {**os.environ, **(env_extra or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = datetime.now().astimezone()
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGINT)
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
        raise TimeoutError(f"the search ran past {timeout:.0f} s and was stopped") from None
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"search exited {p.returncode}: {' '.join(cmd[1:])}\n{(err or out).strip()[-2000:]}")
    return {"wall_s": wall, "started": started, "ended": datetime.now().astimezone()}


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _hypervolume(rows: list[dict[str, Any]], objectives: tuple[str, ...], reference: tuple[float, ...],
                 maximize: list[bool]) -> float | None:
    from trainables.pareto import hypervolume

    pts = [[r.get(m) for m in objectives] for r in rows]
    pts = [p for p in pts if all(v is not None and np.isfinite(v) for v in p)]
    if not pts:
        return None
    return float(hypervolume(np.asarray(pts, dtype=np.float64), reference, maximize))


def run_summary(run_dir: Path) -> dict[str, Any]:
    """What the packing and whole-search figures read of a finished run."""
    from reports.schema import read_results
    from trainables.contract import Declaration

    spec = json.loads((run_dir / "spec.json").read_text())
    decl = Declaration.from_dict(spec["declaration"])
    rows = read_results(run_dir).to_pylist()
    trials: dict[int, dict[str, Any]] = {}
    for r in rows:
        trials.setdefault(int(r["trial_number"]), {"status": r["status"], "seed": r["seed"],
                                                   "config": json.loads(r["config_json"] or "{}"),
                                                   "plain_latency_ms": r.get("plain_latency_ms")})
    points = [r for r in rows if r["status"] == "complete" and not r.get("reference") and r.get("split") == "calibration"]
    test_ids = {r["point_id"] for r in points}
    test_points = [r for r in rows if r.get("split") == "test" and r.get("point_id") in test_ids]
    hv_obj, hv_ref = decl.hv_objectives, decl.hv_reference
    hv_max = decl.maximize(hv_obj)
    # the same points judged by FLOPs, which no other trial on the device can disturb (latency can)
    flops_obj = ("accuracy", "expected_flops_norm") if points and "expected_flops_norm" in points[0] else None
    starts, ends, epochs = [], [], 0.0
    for status_path in (run_dir / "trials").glob("*/status.json"):
        status = _load(status_path) or {}
        if status.get("starts"):
            starts.append(datetime.fromisoformat(status["starts"][0]["at"]))
        if status.get("updated_at"):
            ends.append(datetime.fromisoformat(status["updated_at"]))
        epochs += sum(float(c.get("epoch_seconds", 0.0)) for c in _load(status_path.parent / "curves.json") or [])
    return {
        "trials": trials, "complete": sum(t["status"] == "complete" for t in trials.values()),
        "hypervolume": _hypervolume(points, hv_obj, hv_ref, hv_max),
        "hypervolume_test": _hypervolume(test_points, hv_obj, hv_ref, hv_max),
        "hypervolume_objectives": list(hv_obj),
        "hypervolume_flops": _hypervolume(points, flops_obj, (0.0, 1.0), [True, False]) if flops_obj else None,
        "first_start": min(starts) if starts else None, "last_end": max(ends) if ends else None,
        "epoch_seconds": epochs, "packing": spec.get("packing"), "gpus_per_trial": spec.get("gpus_per_trial"),
        "cpus_per_trial": spec.get("cpus_per_trial"), "data": spec.get("data"), "data_size": spec["budget_detail"]["data_size"],
    }


def _per_hour(n: int, seconds: float | None) -> float | None:
    return round(3600.0 * n / seconds, 1) if seconds and seconds > 0 else None


def _trial_phase_s(summary: dict[str, Any]) -> float | None:
    if summary["first_start"] is None or summary["last_end"] is None:
        return None
    return (summary["last_end"] - summary["first_start"]).total_seconds()


def whole_search_figure(run: dict[str, Any], summary: dict[str, Any], setting: dict[str, Any]) -> dict[str, Any]:
    """The whole-search figure of a finished search (`run`: run_search's answer)."""
    n = summary["complete"]
    phase = _trial_phase_s(summary)
    startup = (summary["first_start"] - run["started"]).total_seconds() if summary["first_start"] else None
    wrapup = (run["ended"] - summary["last_end"]).total_seconds() if summary["last_end"] else None
    return {
        "value": {"wall_s": round(run["wall_s"], 1), "trials_complete": n, "trials_per_hour": _per_hour(n, run["wall_s"]),
                  "startup_s": round(startup, 1) if startup is not None else None,
                  "trials_phase_s": round(phase, 1) if phase is not None else None,
                  "wrapup_s": round(wrapup, 1) if wrapup is not None else None,
                  "hypervolume": summary["hypervolume"]},
        "reference": {"training_epochs_s": round(summary["epoch_seconds"], 1)},
        "ratio": {"wall_over_training_epochs": round(run["wall_s"] / summary["epoch_seconds"], 3)
                  if summary["epoch_seconds"] else None},
        "setting": {**setting, "trials_per_gpu": (summary["packing"] or {}).get("trials_per_gpu"),
                    "gpus_per_trial": summary["gpus_per_trial"], "cpus_per_trial": summary["cpus_per_trial"],
                    "packing_reason": (summary["packing"] or {}).get("reason")},
    }


def packing_figure(packed: tuple[dict, dict], alone: tuple[dict, dict], setting: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """Trials per hour and hypervolume, packed (the default) against one trial per GPU (or, on
    CPUs, side by side against one at a time); each argument is (run_search's answer, run_summary)."""
    (p_run, p), (a_run, a) = packed, alone
    shared = sorted(set(p["trials"]) & set(a["trials"]))
    same_configs = bool(shared) and all(p["trials"][k]["config"] == a["trials"][k]["config"] for k in shared)
    same_seeds = bool(shared) and all(p["trials"][k]["seed"] == a["trials"][k]["seed"] for k in shared)
    lat = [p["trials"][k]["plain_latency_ms"] / a["trials"][k]["plain_latency_ms"] for k in shared
           if p["trials"][k].get("plain_latency_ms") and a["trials"][k].get("plain_latency_ms")]
    p_phase, a_phase = _trial_phase_s(p), _trial_phase_s(a)

    def ratio(x, y):
        return round(x / y, 3) if x is not None and y else None

    value = {"trials_per_hour": _per_hour(p["complete"], p_run["wall_s"]),
             "trials_per_hour_trials_phase": _per_hour(p["complete"], p_phase), "wall_s": round(p_run["wall_s"], 1),
             "hypervolume": p["hypervolume"], "hypervolume_test": p["hypervolume_test"],
             "hypervolume_flops": p["hypervolume_flops"], "trials_complete": p["complete"]}
    reference = {"trials_per_hour": _per_hour(a["complete"], a_run["wall_s"]),
                 "trials_per_hour_trials_phase": _per_hour(a["complete"], a_phase), "wall_s": round(a_run["wall_s"], 1),
                 "hypervolume": a["hypervolume"], "hypervolume_test": a["hypervolume_test"],
                 "hypervolume_flops": a["hypervolume_flops"], "trials_complete": a["complete"]}
    return {
        "value": value, "reference": reference,
        "ratio": {"trials_per_hour_packed_over_alone": ratio(value["trials_per_hour"], reference["trials_per_hour"]),
                  "trials_per_hour_trials_phase_packed_over_alone": ratio(value["trials_per_hour_trials_phase"],
                                                                          reference["trials_per_hour_trials_phase"]),
                  "hypervolume_packed_over_alone": ratio(value["hypervolume"], reference["hypervolume"]),
                  "hypervolume_flops_packed_over_alone": ratio(value["hypervolume_flops"], reference["hypervolume_flops"]),
                  "measured_plain_latency_packed_over_alone": round(statistics.median(lat), 3) if lat else None},
        "setting": {**setting, "same_configs": same_configs, "same_seeds": same_seeds, "trials_compared": len(shared),
                    "hypervolume_objectives": p["hypervolume_objectives"],
                    "packed": {"gpus_per_trial": p["gpus_per_trial"], "cpus_per_trial": p["cpus_per_trial"],
                               "trials_per_gpu": (p["packing"] or {}).get("trials_per_gpu")},
                    "alone": {"gpus_per_trial": a["gpus_per_trial"], "cpus_per_trial": a["cpus_per_trial"]},
                    "stand_in": None if cuda else "no GPU: trials side by side on the cores (1 core each) vs one at a time "
                                                  "(all cores each) stand in for packed vs one per GPU"},
    }
