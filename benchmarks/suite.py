"""`python3 -m benchmarks.suite`: the platform's figures in one command, each a ratio against a
reference measured in the same command, printed as JSON lines and written to one JSON file.

Figures, in the order they run (each in a child process of its own, so that one figure's CUDA
context or Ray session never weighs on the next):

- throughput         training images/s: the platform's step vs a bare loop vs the seeds' PIL
                     DataLoader pipeline, same model, batch and precision (benchmarks/throughput.py);
- exits_vs_plain     final-exit accuracy of an early-exit network vs the same network without
                     exits, 15 epochs (benchmarks/exits_vs_plain.py);
- fixed_cost         fixed cost per trial with and without Tune's actor reuse (target <= 1.5 s on
                     a GPU): `python -m benchmarks.trial_overhead`, run as a user runs it;
- whole_search       wall time of an N-trial branchynet search at the smoke budget with the
                     default packing, against its trials' training epochs (benchmarks/suite_search.py);
- dynamic_inference  measured batch-1 and batched latency of that search's default operating point
                     vs the same network without exits, beside its FLOPs speed-up (benchmarks/suite_inference.py);
- packing            the same search one trial per GPU: trials per hour and hypervolume, packed vs
                     alone (on a CPU: trials side by side on the cores vs one at a time, labelled so).

    python3 -m benchmarks.suite [--quick] [--budget-s S] [--cap-s S] [--out FILE] [--data-root DIR] [--only a,b]
        [--keep DIR]

Data: real CIFAR-10 where the subset `python3 -m benchmarks.cifar_subset ../shared/data/cifar10/cifar10-train.npz`
writes (`.suite-data/cifar10/`: the first 900 images of each class, 27.7 MB as uint8) is present,
else synthetic images; every figure says which. `--quick` runs the same code paths at tiny sizes
on synthetic data, on a CPU (tests/benchmarks/test_suite.py runs it).

Time: on a GPU `--budget-s` defaults to 510 s, so that with unpacking Ray and Optuna and starting
Python the command ends within 9 minutes. A figure whose estimate exceeds what is left is skipped,
and one that runs past its cap (or what is left; `--cap-s` sets one cap for all) is stopped;
both are in the output with the reason. Elsewhere there is no budget unless one is given.

On the GPU machine (no network, a Python without Ray and Optuna), carry `.site/` (built by
`bash ../shared/device/pack-site.sh`) and `.suite-data/` with the code and run, from the
repository root:

    mkdir -p /tmp/site && tar xJf .site/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 && python3 -m benchmarks.suite --out suite.json

Exit status: 0 when every figure ran or was skipped for time, 1 when one failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUITE = "exitsearch benchmark suite"
FIGURES = ("throughput", "exits_vs_plain", "fixed_cost", "whole_search", "dynamic_inference", "packing")
NEEDS_RAY = ("fixed_cost", "whole_search", "packing")
NEEDS_RUN = {"dynamic_inference": "whole_search", "packing": "whole_search"}
GPU_BUDGET_S = 510.0
GRACE_S = 30.0  # what stopping a figure may take (a search stops its trials and collects)
# seconds per figure: (estimate, cap). The estimate decides whether a figure starts under a budget;
# the cap stops one that runs on. GPU figures are sized to fit 9 minutes together (see the README).
TIMES = {
    "gpu": {"throughput": (45, 120), "exits_vs_plain": (60, 150), "fixed_cost": (90, 180), "whole_search": (80, 180),
            "dynamic_inference": (20, 60), "packing": (130, 240)},
    "cpu": {"throughput": (60, 300), "exits_vs_plain": (600, 1500), "fixed_cost": (150, 600), "whole_search": (300, 1200),
            "dynamic_inference": (60, 300), "packing": (400, 1500)},
    "quick": {"throughput": (10, 120), "exits_vs_plain": (15, 120), "fixed_cost": (40, 240), "whole_search": (30, 240),
              "dynamic_inference": (8, 120), "packing": (30, 240)},
}
MEASURES = {
    "throughput": "training images/s: the platform's step (value) vs a bare loop and the seeds' PIL DataLoader pipeline "
                  "(reference), same model, batch and precision",
    "exits_vs_plain": "final-exit fine accuracy of an early-exit network (gran_hbn, exits after every stage; value) vs the "
                      "same network without exits (reference), same data, seed, schedule and epochs",
    "fixed_cost": "seconds a trial adds to a search beyond its own work, trials one at a time: Tune's actor reuse on "
                  "(value) vs off (reference); target <= 1.5 s on a GPU",
    "whole_search": "wall time of an N-trial search as a user runs it (default packing, report built; value) vs its "
                    "trials' training epochs (reference)",
    "dynamic_inference": "measured time per image of the search's default operating point (value) vs the same network "
                         "without exits (reference), batch 1 and batched, beside the FLOPs speed-up of what executed",
    "packing": "trials per hour and hypervolume: trials packed k to a GPU, the default --gpus-per-trial (value), vs one "
               "per GPU (reference), same trials and seeds",
}


def mode_of(quick: bool, cuda: bool) -> str:
    return "quick" if quick else "gpu" if cuda else "cpu"


def resolve_data(quick: bool, data_root: str | None) -> dict[str, Any]:
    """The dataset the figures on real data use: the CIFAR-10 subset when present, else synthetic."""
    from benchmarks.cifar_subset import DEFAULT_OUT, SUBSET_FILE, describe

    if quick:
        return {"data": "synthetic", "data_root": None, "label": "synthetic (--quick)"}
    root = Path(data_root) if data_root else ROOT / DEFAULT_OUT
    if (root / SUBSET_FILE).is_file():
        info = describe(root) or {}
        what = info.get("what") or f"CIFAR-10 from {root / SUBSET_FILE}"
        size = f" ({info['images']} images, {info['bytes'] / 1e6:.1f} MB)" if "images" in info else ""
        return {"data": "cifar10", "data_root": str(root.resolve()), "label": f"real: {what}{size}",
                "subset": info or None}
    return {"data": "synthetic", "data_root": None,
            "label": f"synthetic: no CIFAR-10 subset at {root} (write it with python3 -m benchmarks.cifar_subset "
                     "../shared/data/cifar10/cifar10-train.npz)"}


def settings(mode: str, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every figure's setting in a mode."""
    from benchmarks.exits_vs_plain import defaults as evp_defaults
    from benchmarks.throughput import defaults as tp_defaults

    cores = os.cpu_count() or 1
    real = data["data"] != "synthetic"
    if mode == "quick":
        return {
            "throughput": {"steps": 2, "warmup": 1, "width": 4, "batch": 32, "workers": 0, "images": 256},
            "exits_vs_plain": {"data": "synthetic", "data_root": None, "size": "tiny", "epochs": 1, "width": 4, "blocks": 1,
                               "batch": 64, "threads": 1},
            "fixed_cost": {"trials": 2},
            "search": {"space": "tiny_branchy", "data": "synthetic", "data_root": None, "data_size": None, "trials": 2},
            "dynamic_inference": {"images": 8, "batch": 64, "rounds": 2, "warmup": 1, "threads": 1},
        }
    gpu = mode == "gpu"
    evp = evp_defaults(gpu)
    return {
        "throughput": tp_defaults(gpu),
        "exits_vs_plain": {"data": data["data"], "data_root": data["data_root"], "size": "full" if real else evp["size"],
                           "epochs": 15, "width": evp["width"], "blocks": evp["blocks"], "batch": 256 if gpu else evp["batch"],
                           "threads": cores},
        "fixed_cost": {"trials": 5 if gpu else 4},
        "search": {"space": "branchynet", "data": data["data"], "data_root": data["data_root"],
                   "data_size": "full" if real else "smoke", "trials": 8 if gpu else 4},
        "dynamic_inference": {"images": 300 if gpu else 200, "batch": 256, "rounds": 7 if gpu else 5,
                              "warmup": 5 if gpu else 3, "threads": 1},
    }


# ------------------------------------------------------------------ the figures (run in a child process)

def _search_arm(s: dict[str, Any], work: Path, name: str, packed: bool, cuda: bool, timeout: float | None = None):
    from benchmarks.suite_search import run_search, run_summary, search_command

    cores = os.cpu_count() or 1
    if cuda:  # packed: the default --gpus-per-trial (measured); alone: one trial per GPU
        cpus, gpus = min(2.0, float(cores)), (None if packed else 1.0)
    else:  # side by side on the cores (the default, 1 each) vs one at a time on all of them
        cpus, gpus = (1.0 if packed else float(cores)), None
    cmd = search_command(s["space"], s["data"], s["data_root"], s["data_size"], s["trials"], work / "runs", name, cpus, gpus)
    run = run_search(cmd, timeout=timeout)
    return run, run_summary(work / "runs" / name)


def figure(name: str, mode: str, data: dict[str, Any], work: Path) -> dict[str, Any]:
    """Measure one figure; returns its value, reference, ratio and setting."""
    import torch

    cuda = torch.cuda.is_available()
    s = settings(mode, data)
    if name == "throughput":
        from benchmarks.throughput import measure_throughput

        res = measure_throughput(**s["throughput"])
        ips = res["images_per_second"]
        return {"data": "synthetic: random uint8 images (speed does not depend on their content)",
                "value": {"platform_images_per_s": round(ips["platform"], 1)},
                "reference": {"bare_images_per_s": round(ips["bare"], 1), "dataloader_images_per_s": round(ips["dataloader"], 1)},
                "ratio": {"platform_over_bare": round(ips["platform"] / ips["bare"], 3),
                          "platform_over_dataloader": round(ips["platform"] / ips["dataloader"], 3)},
                "setting": res["setting"]}
    if name == "exits_vs_plain":
        from benchmarks.exits_vs_plain import compare

        e = s["exits_vs_plain"]
        res = compare(e["data"], e["data_root"], e["size"], e["epochs"], e["width"], e["blocks"], e["batch"], threads=e["threads"])
        acc = {r["net"]: r for r in res["rows"]}
        return {"data": data["label"] if e["data"] != "synthetic" else f"synthetic (size {e['size']})",
                "value": {"final_exit_calib_acc": acc["gran_hbn"]["final_exit_calib_fine_acc"],
                          "final_exit_test_acc": acc["gran_hbn"]["final_exit_test_fine_acc"]},
                "reference": {"final_exit_calib_acc": acc["plain"]["final_exit_calib_fine_acc"],
                              "final_exit_test_acc": acc["plain"]["final_exit_test_fine_acc"]},
                "ratio": {"gap_points_plain_minus_exits": res["summary"]["mean_gap_points_plain_minus_gran_hbn"],
                          "within_1_point": res["summary"]["within_1_point"]},
                "setting": {k: v for k, v in e.items() if k != "data_root"} | {"seconds": {r: acc[r]["seconds"] for r in acc}}}
    if name == "fixed_cost":  # the trial_overhead benchmark's own command, as a user runs it
        n = s["fixed_cost"]["trials"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        p = subprocess.run([sys.executable, "-m", "benchmarks.trial_overhead", "--trials", str(n)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode != 0 or len(lines) < 3:
            raise RuntimeError(f"python -m benchmarks.trial_overhead exited {p.returncode}: {p.stderr.strip()[-1500:]}")
        on, off, both = lines[0], lines[1], lines[-1]
        f_on, f_off = on["fixed_cost_per_trial_s"], off["fixed_cost_per_trial_s"]
        return {"data": "synthetic, 1000 images, 1 epoch a trial (tiny_gran), so that a trial is mostly its fixed cost",
                "value": on, "reference": off,
                "ratio": {"no_reuse_over_reuse": both["fixed_cost_ratio_off_over_on"],
                          "wall_ratio_off_over_on": both["wall_ratio_off_over_on"],
                          "reuse_within_1_5_s": (f_on <= 1.5) if f_on is not None else None,
                          "no_reuse_within_1_5_s": (f_off <= 1.5) if f_off is not None else None},
                "setting": {"trials": n, "target_applies": cuda, "one_at_a_time": True,
                            "command": f"python3 -m benchmarks.trial_overhead --trials {n}"}}
    if name in ("whole_search", "packing"):
        from benchmarks.suite_search import packing_figure, run_summary, whole_search_figure

        srch = s["search"]
        setting = {k: v for k, v in srch.items() if k != "data_root"} | {"budget": "smoke", "seed": 0}
        if name == "whole_search":
            run, summary = _search_arm(srch, work, "whole", True, cuda)
            (work / "whole_search_run.json").write_text(json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                                                    for k, v in run.items()}))
            return {"data": data["label"], **whole_search_figure(run, summary, setting)}
        saved = json.loads((work / "whole_search_run.json").read_text())
        packed_run = {"wall_s": saved["wall_s"], "started": datetime.fromisoformat(saved["started"]),
                      "ended": datetime.fromisoformat(saved["ended"])}
        packed = (packed_run, run_summary(work / "runs" / "whole"))
        alone = _search_arm(srch, work, "alone", False, cuda)
        return {"data": data["label"], **packing_figure(packed, alone, setting, cuda)}
    if name == "dynamic_inference":
        from benchmarks.suite_inference import dynamic_inference

        return {"data": data["label"], **dynamic_inference(work / "runs" / "whole", **s["dynamic_inference"])}
    raise ValueError(f"unknown figure {name!r}; figures: {', '.join(FIGURES)}")


# ------------------------------------------------------------------ the driver

def _importable(name: str) -> str | None:
    """Where `name` would be imported from, without importing it; None when it cannot be."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return (spec.origin or "namespace package") if spec else None


def _environment() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.machine()})",
            "hostname": platform.node(), "ray": _importable("ray"), "optuna": _importable("optuna")}


def _ray_problem(env: dict[str, Any]) -> str | None:
    missing = [n for n in ("ray", "optuna") if env[n] is None]
    if not missing:
        return None
    return (f"{' and '.join(missing)} cannot be imported by this Python ({sys.executable}): the searches need Ray and Optuna. "
            "On a machine without them (the GPU machine), build .site/site.tar.xz here with "
            "`bash ../shared/device/pack-site.sh`, carry it, and before the suite run "
            "`mkdir -p /tmp/site && tar xJf .site/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD "
            "PATH=/tmp/site/bin:$PATH` (README, Benchmarks)")


def _run_child(name: str, args: argparse.Namespace, work: Path, timeout: float | None) -> tuple[str, dict | None, str]:
    """(status, result, reason) of one figure measured in a child process."""
    cmd = [sys.executable, "-m", "benchmarks.suite", "--figure", name, "--work", str(work)]
    if args.quick:
        cmd.append("--quick")
    if args.data_root:  # the child runs in the repository root: the folder as the user meant it
        cmd += ["--data-root", str(Path(args.data_root).resolve())]
    spaces = ",".join(filter(None, [os.environ.get("EXITSEARCH_SPACES"), "tests.fault_spaces"]))
    env = {**os.environ, "EXITSEARCH_SPACES": spaces,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = work / f"{name}.log"
    with open(log, "w") as err:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGINT)  # a search stops as on Ctrl-C: its trials and Ray go down with it
            try:
                p.communicate(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
            return "stopped", None, (f"ran past {timeout:.0f} s (its cap, or what was left of --budget-s) and was "
                                     "stopped")
    lines = [ln for ln in (out or "").splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = log.read_text()[-1500:].strip()
        return "failed", None, f"exited {p.returncode}: {tail}"
    return "ok", json.loads(lines[-1]), ""


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(path)


def _emit(line: dict[str, Any]) -> None:
    print(json.dumps(line, default=str), flush=True)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.suite", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the same code paths at tiny sizes, synthetic data (CI)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help=f"seconds the figures may take in all (default {GPU_BUDGET_S:g} on a GPU, none elsewhere; 0: none)")
    ap.add_argument("--cap-s", type=float, default=None,
                    help="stop any figure that runs longer than this (default: each figure's own cap under a budget, else none)")
    ap.add_argument("--out", type=Path, default=None, help="the JSON file (default runs/benchmark-suite-UTCTIME.json)")
    ap.add_argument("--data-root", default=None, help="folder with the CIFAR-10 subset (default .suite-data/cifar10)")
    ap.add_argument("--only", default=None, help=f"comma-separated figures to run (default all: {','.join(FIGURES)})")
    ap.add_argument("--keep", type=Path, default=None, help="keep the searches' runs and logs in this folder (default: a temporary one)")
    ap.add_argument("--figure", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.figure:  # a child: one figure, its JSON on the last line of stdout
        import torch

        mode = mode_of(args.quick, torch.cuda.is_available())
        _emit(figure(args.figure, mode, resolve_data(args.quick, args.data_root), args.work))
        return 0
    only = FIGURES if args.only is None else tuple(f.strip() for f in args.only.split(",") if f.strip())
    unknown = [f for f in only if f not in FIGURES]
    if unknown or not only:
        print(f"error: --only {args.only!r}: unknown figure(s) {unknown or '(none given)'}; figures: {', '.join(FIGURES)}",
              file=sys.stderr)
        return 2
    if args.budget_s is not None and args.budget_s < 0:
        print(f"error: --budget-s {args.budget_s:g}: must be >= 0 (0: no budget)", file=sys.stderr)
        return 2
    if args.cap_s is not None and args.cap_s <= 0:
        print(f"error: --cap-s {args.cap_s:g}: must be > 0 seconds", file=sys.stderr)
        return 2
    if args.data_root and not Path(args.data_root).is_dir():
        print(f"error: --data-root {args.data_root}: no such folder; write the subset with python3 -m benchmarks.cifar_subset "
              "../shared/data/cifar10/cifar10-train.npz --out DIR, or leave --data-root out", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    env = _environment()
    cuda = not env["device"].startswith("cpu")
    mode = mode_of(args.quick, cuda)
    budget = args.budget_s if args.budget_s is not None else (GPU_BUDGET_S if mode == "gpu" else 0.0)
    data = resolve_data(args.quick, args.data_root)
    started = datetime.now(timezone.utc)
    out = args.out or ROOT / "runs" / f"benchmark-suite-{started.strftime('%Y%m%d-%H%M%S')}.json"
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="benchmark-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"suite": SUITE, "command": "python3 -m benchmarks.suite " + " ".join(argv), "mode": mode,
                           "started_at": started.isoformat(), "budget_s": budget or None, "data": data["label"],
                           "environment": env, "figures": []}
    _emit({"suite": SUITE, "event": "start", "mode": mode, "device": env["device"], "budget_s": budget or None,
           "data": data["label"], "json": str(out)})
    problem = _ray_problem(env)
    if problem and any(f in NEEDS_RAY for f in only):
        print(f"warning: {problem}", file=sys.stderr)
    statuses: dict[str, str] = {}
    try:
        for name in FIGURES:
            if name not in only:
                continue
            estimate, cap = TIMES[mode][name]
            elapsed = time.monotonic() - t0
            left = budget - elapsed if budget else None
            status, result, reason, seconds = "ok", None, "", None
            if name in NEEDS_RUN and statuses.get(NEEDS_RUN[name]) != "ok":
                status, reason = "skipped", f"needs the {NEEDS_RUN[name]} figure's run, which is " \
                                            f"{statuses.get(NEEDS_RUN[name], 'not in --only')}"
            elif name in NEEDS_RAY and problem:
                status, reason = "failed", problem
            elif left is not None and left < estimate:
                status, reason = "skipped", (f"would overrun: takes about {estimate} s here, {max(left, 0):.0f} s left of "
                                             f"--budget-s {budget:g}")
            else:
                cap = args.cap_s if args.cap_s else cap
                timeout = max(1.0, min(cap, left - GRACE_S)) if left is not None else args.cap_s
                print(f"[suite] {name}: running" + (f" (stopped after {timeout:.0f} s)" if timeout else ""),
                      file=sys.stderr, flush=True)
                t = time.monotonic()
                status, result, reason = _run_child(name, args, work, timeout)
                seconds = round(time.monotonic() - t, 1)
            statuses[name] = status
            line = {"suite": SUITE, "figure": name, "status": status, "measure": MEASURES[name]}
            if status == "ok":
                line |= {"seconds": seconds, **result}
            else:
                line |= {"reason": reason, **({"seconds": seconds} if seconds is not None else {})}
            _emit(line)
            doc["figures"].append(line)
            doc["wall_s"] = round(time.monotonic() - t0, 1)
            _write(out, doc)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    doc["wall_s"] = round(time.monotonic() - t0, 1)
    doc["complete"] = all(s == "ok" for s in statuses.values())
    _write(out, doc)
    _emit({"suite": SUITE, "event": "end", "wall_s": doc["wall_s"], "figures": statuses, "json": str(out)})
    return 1 if any(s == "failed" for s in statuses.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
